//! # firehose: the pure frame decoder
//!
//! Where it sits: `relay (WebSocket) → **firehose::decode** → publish → JetStream`.
//!
//! One `com.atproto.sync.subscribeRepos` frame (bytes) goes in; ready-to-publish messages
//! come out: NATS subject and the Jetstream-v1-shaped JSON payload. No
//! runtime, no sockets, no clock: the same bytes always give the same messages, which is
//! what lets it be fuzzed, benchmarked alone, and replayed at any speed with the same result.
//!
//! Each frame is decoded once (serde_ipld_dagcbor, borrowing from the frame), the CAR
//! slice of a commit is walked once (zero-copy, [`car`]), every record block is checked
//! against its CID and transcoded to JSON once ([`json`]), straight into the payload.
//!
//! [`decode`] says what the caller does with each frame ([`Decoded`]): publish an
//! [`Event`]'s messages, act on a [`Control`] frame, or skip a frame and count it under its
//! [`SkipReason`]. A [`Skip`] inside [`Event::skipped`] means one op was skipped and the
//! rest of the frame is good. Nothing here ever means *stop*.
//!
//! The wire primitives every crate of the workspace uses live here, once: [`varint`],
//! [`cbor`] (item heads), [`cid`] (CID check, base32) and [`car`] (CAR read and write).
//! Tests against real frames and production Jetstream's output live with the fixtures, in
//! `ingest/staging/tests/decoder_*.rs`; the criterion bench in `ingest/bench/benches`.
//!
//! The contract (subjects, ids, payload shapes) is written down in `subjects.md` at the
//! root of the repository and named in code by the `contract` crate (subjects, protocol
//! limits, validated identifiers), which this crate builds on; `tests/contract.rs` keeps
//! the two in step.

pub mod car;
pub mod cbor;
pub mod cid;
mod id;
pub mod json;
mod model;
mod skip;
mod time;
pub mod varint;

use contract::{subject, Did, Nsid, Rkey};
use serde::Deserialize;

pub use id::event_id;
pub use model::{Action, Control, Decoded, Event, Kind, Message, Skip};
pub use skip::{FrameError, SkipReason};
pub use time::parse_rfc3339_micros;

use contract::limits::MAX_OPS;

#[derive(Deserialize)]
struct Header<'a> {
    op: i64,
    #[serde(borrow, default)]
    t: Option<&'a str>,
}

use cid::CidRef;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommitBody<'a> {
    seq: i64,
    #[serde(default)]
    too_big: bool,
    #[serde(borrow)]
    repo: &'a str,
    #[serde(borrow)]
    rev: &'a str,
    #[serde(borrow, with = "serde_bytes")]
    blocks: &'a [u8],
    #[serde(borrow)]
    ops: Vec<RepoOp<'a>>,
    #[serde(borrow)]
    time: &'a str,
}

#[derive(Deserialize)]
struct RepoOp<'a> {
    #[serde(borrow)]
    action: &'a str,
    #[serde(borrow)]
    path: &'a str,
    #[serde(borrow, default)]
    cid: Option<CidRef<'a>>,
}

/// The fields shared by `#identity`, `#account` and `#sync` bodies.
#[derive(Deserialize)]
struct EventHead<'a> {
    seq: i64,
    #[serde(borrow)]
    did: &'a str,
    #[serde(borrow)]
    time: &'a str,
}

#[derive(Deserialize)]
struct InfoBody {
    name: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: Option<String>,
}

/// Decodes one frame into messages ready to publish.
pub fn decode(frame: &[u8]) -> Decoded {
    match decode_frame(frame) {
        Ok(d) => d,
        Err(error) => Decoded::Skipped {
            seq: frame_seq(frame),
            error,
        },
    }
}

/// Only the body's `seq` of a frame, when it can be read (for frames skipped without
/// decoding them, e.g. above a size limit).
pub fn frame_seq(frame: &[u8]) -> Option<i64> {
    #[derive(Deserialize)]
    struct Seq {
        seq: i64,
    }
    let body = frame.get(cbor::item_end(frame, 0).ok()?..)?;
    from_body::<Seq>(body).ok().map(|s| s.seq)
}

fn decode_frame(frame: &[u8]) -> Result<Decoded, FrameError> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(frame);
    let header = Header::deserialize(&mut de)?;
    let header_len = cbor::item_end(frame, 0).map_err(FrameError::Header)?;
    let body = &frame[header_len..];
    match (header.op, header.t) {
        (1, Some("#commit")) => decode_commit(body),
        (1, Some(t @ ("#identity" | "#account" | "#sync"))) => decode_event(t, body),
        (1, Some("#info")) => {
            let b: InfoBody = from_body(body)?;
            Ok(Decoded::Control(Control::Info {
                name: b.name,
                message: b.message,
            }))
        }
        (-1, _) => {
            let b: ErrorBody = from_body(body)?;
            Ok(Decoded::Control(Control::Error {
                error: b.error,
                message: b.message,
            }))
        }
        (1, t) => Err(FrameError::UnknownType(t.unwrap_or("").to_string())),
        (op, _) => Err(FrameError::UnknownOp(op)),
    }
}

fn from_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(body);
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

fn event_time(time: &str) -> Result<i64, FrameError> {
    parse_rfc3339_micros(time).ok_or_else(|| FrameError::Time(time.to_string()))
}

fn check_did(did: &str) -> Result<(), FrameError> {
    match Did::parse(did) {
        Ok(_) => Ok(()),
        Err(_) => Err(FrameError::Did(did.to_string())),
    }
}

/// Writes `{"did":…,"time_us":…,"kind":"<kind>","<kind>":` — the caller closes it.
fn open_envelope(out: &mut Vec<u8>, did: &str, time_us: i64, kind: &str) {
    out.extend_from_slice(b"{\"did\":");
    json::write_str(out, did);
    out.extend_from_slice(b",\"time_us\":");
    out.extend_from_slice(itoa::Buffer::new().format(time_us).as_bytes());
    for part in [",\"kind\":\"", kind, "\",\"", kind, "\":"] {
        out.extend_from_slice(part.as_bytes());
    }
}

fn decode_event(t: &str, body: &[u8]) -> Result<Decoded, FrameError> {
    let head: EventHead = from_body(body)?;
    check_did(head.did)?;
    let time_us = event_time(head.time)?;
    let (kind, action) = match t {
        "#identity" => (Kind::Identity, Action::Identity),
        "#account" => (Kind::Account, Action::Account),
        _ => (Kind::Sync, Action::Sync),
    };
    let mut payload = Vec::with_capacity(body.len() * 2 + 128);
    open_envelope(&mut payload, head.did, time_us, kind.as_str());
    json::transcode(body, &mut payload).map_err(FrameError::Cbor)?;
    payload.push(b'}');
    Ok(Decoded::Event(Event {
        kind,
        seq: head.seq,
        time_us,
        messages: vec![Message {
            subject: match kind {
                Kind::Identity => subject::IDENTITY,
                Kind::Account => subject::ACCOUNT,
                _ => subject::SYNC,
            }
            .to_string(),
            payload,
            action,
        }],
        skipped: Vec::new(),
        too_big: false,
    }))
}

fn decode_commit(body: &[u8]) -> Result<Decoded, FrameError> {
    let c: CommitBody = from_body(body)?;
    if c.ops.len() > MAX_OPS {
        return Err(FrameError::TooManyOps(c.ops.len()));
    }
    check_did(c.repo)?;
    let time_us = event_time(c.time)?;
    let blocks = if c.blocks.is_empty() {
        car::Blocks::default()
    } else {
        car::Blocks::parse(c.blocks)?
    };
    let mut messages = Vec::with_capacity(c.ops.len());
    let mut skipped = Vec::new();
    for op in &c.ops {
        match commit_op(&c, op, &blocks, time_us) {
            Ok(m) => messages.push(m),
            Err(reason) => skipped.push(Skip {
                reason,
                path: op.path.to_string(),
            }),
        }
    }
    Ok(Decoded::Event(Event {
        kind: Kind::Commit,
        seq: c.seq,
        time_us,
        messages,
        skipped,
        too_big: c.too_big,
    }))
}

/// One record op → one message, or the reason it is skipped.
fn commit_op(
    c: &CommitBody,
    op: &RepoOp,
    blocks: &car::Blocks,
    time_us: i64,
) -> Result<Message, SkipReason> {
    let (collection, rkey) = op.path.split_once('/').ok_or(SkipReason::BadPath)?;
    let collection = Nsid::parse(collection).map_err(|_| SkipReason::InvalidCollection)?;
    Rkey::parse(rkey).map_err(|_| SkipReason::InvalidRkey)?;
    let action = match op.action {
        "create" => Action::Create,
        "update" => Action::Update,
        "delete" => Action::Delete,
        _ => return Err(SkipReason::UnknownAction),
    };
    let record = match action {
        Action::Delete => None,
        _ => {
            let cid = op.cid.ok_or(SkipReason::MissingCid)?;
            match blocks.get(cid.0) {
                Some(data) => {
                    cid::verify(cid.0, data).map_err(|e| match e {
                        cid::VerifyError::Mismatch => SkipReason::CidMismatch,
                        cid::VerifyError::Unsupported => SkipReason::UnsupportedCid,
                    })?;
                    Some((cid, Some(data)))
                }
                None if c.too_big => Some((cid, None)),
                None => return Err(SkipReason::MissingBlock),
            }
        }
    };

    let subject = subject::collection(collection);
    let collection = collection.as_str();
    let size = record.and_then(|r| r.1).map_or(0, |d| d.len() * 2);
    let mut p = Vec::with_capacity(192 + size + c.repo.len() + op.path.len());
    open_envelope(&mut p, c.repo, time_us, "commit");
    p.extend_from_slice(b"{\"rev\":");
    json::write_str(&mut p, c.rev);
    p.extend_from_slice(b",\"operation\":\"");
    p.extend_from_slice(action.as_str().as_bytes());
    p.extend_from_slice(b"\",\"collection\":");
    json::write_str(&mut p, collection);
    p.extend_from_slice(b",\"rkey\":");
    json::write_str(&mut p, rkey);
    if let Some((cid, data)) = record {
        match data {
            Some(data) => {
                p.extend_from_slice(b",\"record\":");
                json::transcode(data, &mut p).map_err(|_| SkipReason::BadRecord)?;
            }
            None => p.extend_from_slice(b",\"tooBig\":true"),
        }
        p.extend_from_slice(b",\"cid\":\"");
        cid::write_str(&mut p, cid.0);
        p.push(b'"');
    }
    p.extend_from_slice(b"}}");

    Ok(Message {
        subject,
        payload: p,
        action,
    })
}
