//! # firehose: the pure frame decoder
//!
//! Where it sits: `relay (WebSocket) → **firehose::decode** → publish → JetStream`.
//!
//! One `com.atproto.sync.subscribeRepos` frame (bytes) goes in; ready-to-publish messages
//! come out: NATS subject, `Nats-Msg-Id`, and the Jetstream-v1-shaped JSON payload. No
//! runtime, no sockets, no clock: the same bytes always give the same messages, which is
//! what lets it be fuzzed, benchmarked alone, and replayed at any speed with the same result.
//!
//! Each frame is decoded once (serde_ipld_dagcbor, borrowing from the frame), the CAR
//! slice of a commit is walked once (zero-copy, [`car`]), every record block is checked
//! against its CID and transcoded to JSON once ([`json`]), straight into the payload.
//!
//! Errors say what the caller does: a [`FrameError`] means *skip this frame and count it
//! under [`FrameError::reason`]*; a [`Skip`] inside [`Decoded::skipped`] means one op was
//! skipped and the rest of the frame is good. Neither ever means *stop*.
//!
//! The contract (subjects, ids, payload shapes) is written down in `subjects.md` at the
//! root of the repository; `tests/contract.rs` keeps the two in step.

pub mod car;
pub mod cid;
pub mod json;
pub mod syntax;
mod time;

use serde::Deserialize;

pub use time::parse_rfc3339_micros;

/// Prefix of every subject this pipeline publishes on.
pub const SUBJECT_PREFIX: &str = "bsky";
/// Protocol maximum size of one frame (lexicon `subscribeRepos`).
pub const MAX_FRAME_BYTES: usize = 5_000_000;
/// Protocol maximum size of a commit's `blocks` CAR slice.
pub const MAX_BLOCKS_BYTES: usize = 2_000_000;
/// Protocol maximum number of ops in one commit.
pub const MAX_OPS: usize = 200;

/// Every reason a frame or an op can be skipped for: a closed set, for metric labels.
pub const SKIP_REASONS: &[&str] = &[
    "truncated",
    "malformed_cbor",
    "unknown_type",
    "unknown_op",
    "bad_car",
    "bad_time",
    "bad_did",
    "bad_path",
    "invalid_collection",
    "invalid_rkey",
    "unknown_action",
    "missing_cid",
    "missing_block",
    "cid_mismatch",
    "unsupported_cid",
    "bad_record",
];

/// The kind of a frame, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Commit,
    Sync,
    Identity,
    Account,
    Info,
    Error,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Commit,
        Kind::Sync,
        Kind::Identity,
        Kind::Account,
        Kind::Info,
        Kind::Error,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Sync => "sync",
            Kind::Identity => "identity",
            Kind::Account => "account",
            Kind::Info => "info",
            Kind::Error => "error",
        }
    }
}

/// What a message records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
    Identity,
    Account,
    Sync,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Identity => "identity",
            Action::Account => "account",
            Action::Sync => "sync",
        }
    }
}

/// One message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `bsky.<collection>` for record ops, `bsky.identity` / `bsky.account` / `bsky.sync`.
    pub subject: String,
    /// Deterministic de-duplication id (`Nats-Msg-Id`), independent of the relay.
    pub msg_id: String,
    /// Jetstream-v1-shaped JSON.
    pub payload: Vec<u8>,
    pub action: Action,
}

impl Message {
    /// The record collection, for record ops.
    pub fn collection(&self) -> Option<&str> {
        match self.action {
            Action::Create | Action::Update | Action::Delete => self
                .subject
                .strip_prefix(SUBJECT_PREFIX)
                .and_then(|s| s.strip_prefix('.')),
            _ => None,
        }
    }
}

/// A control message from the relay: not published, acted on by the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `#info`, e.g. `OutdatedCursor`.
    Info {
        name: String,
        message: Option<String>,
    },
    /// An error frame (`op: -1`), e.g. `FutureCursor`, `ConsumerTooSlow`.
    Error {
        error: String,
        message: Option<String>,
    },
}

/// One op skipped inside an otherwise good frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// One of [`SKIP_REASONS`].
    pub reason: &'static str,
    pub path: String,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub kind: Kind,
    /// The relay's sequence number (absent on `#info` and error frames).
    pub seq: Option<i64>,
    /// The event's own time, in microseconds since the Unix epoch.
    pub time_us: Option<i64>,
    pub messages: Vec<Message>,
    pub skipped: Vec<Skip>,
    pub control: Option<Control>,
    /// A pre-Sync-1.1 `tooBig` commit: ops published without records.
    pub too_big: bool,
}

/// Why a whole frame was skipped. The caller counts it under [`FrameError::reason`],
/// logs it with the frame's position, and goes on with the next frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame truncated: {0}")]
    Truncated(String),
    #[error("malformed DAG-CBOR: {0}")]
    Cbor(String),
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("unknown header op {0}")]
    UnknownOp(i64),
    #[error("malformed CAR slice: {0}")]
    Car(#[from] car::CarError),
    #[error("malformed event time {0:?}")]
    Time(String),
    #[error("malformed DID {0:?}")]
    Did(String),
}

impl FrameError {
    /// The metric label for this error, one of [`SKIP_REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Truncated(_) => "truncated",
            FrameError::Cbor(_) => "malformed_cbor",
            FrameError::UnknownType(_) => "unknown_type",
            FrameError::UnknownOp(_) => "unknown_op",
            FrameError::Car(_) => "bad_car",
            FrameError::Time(_) => "bad_time",
            FrameError::Did(_) => "bad_did",
        }
    }
}

impl<E: std::fmt::Debug> From<serde_ipld_dagcbor::DecodeError<E>> for FrameError {
    fn from(e: serde_ipld_dagcbor::DecodeError<E>) -> Self {
        match e {
            serde_ipld_dagcbor::DecodeError::Eof { .. } => {
                FrameError::Truncated("end of input".into())
            }
            other => FrameError::Cbor(format!("{other:?}")),
        }
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    op: i64,
    #[serde(borrow, default)]
    t: Option<&'a str>,
}

/// A CID as its raw bytes, borrowed from the frame.
#[derive(Debug, Clone, Copy)]
struct CidRef<'a>(&'a [u8]);

impl<'de: 'a, 'a> Deserialize<'de> for CidRef<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = CidRef<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a CID")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                d.deserialize_bytes(self)
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                if cid::cid_len(v) == Some(v.len()) {
                    Ok(CidRef(v))
                } else {
                    Err(E::custom("malformed CID"))
                }
            }
        }
        d.deserialize_newtype_struct(
            "$__private__serde__identifier__for__cid",
            V(std::marker::PhantomData),
        )
    }
}

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
    #[serde(borrow, default)]
    rev: Option<&'a str>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(borrow, default)]
    status: Option<&'a str>,
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
pub fn decode(frame: &[u8]) -> Result<Decoded, FrameError> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(frame);
    let header = Header::deserialize(&mut de)?;
    let header_len = value_len(frame).ok_or_else(|| FrameError::Truncated("header".into()))?;
    let body = &frame[header_len..];
    match (header.op, header.t) {
        (1, Some("#commit")) => decode_commit(body),
        (1, Some(t @ ("#identity" | "#account" | "#sync"))) => decode_event(t, body),
        (1, Some("#info")) => {
            let b: InfoBody = from_body(body)?;
            Ok(control(
                Kind::Info,
                Control::Info {
                    name: b.name,
                    message: b.message,
                },
            ))
        }
        (-1, _) => {
            let b: ErrorBody = from_body(body)?;
            Ok(control(
                Kind::Error,
                Control::Error {
                    error: b.error,
                    message: b.message,
                },
            ))
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

fn control(kind: Kind, c: Control) -> Decoded {
    Decoded {
        kind,
        seq: None,
        time_us: None,
        messages: Vec::new(),
        skipped: Vec::new(),
        control: Some(c),
        too_big: false,
    }
}

fn event_time(time: &str) -> Result<i64, FrameError> {
    parse_rfc3339_micros(time).ok_or_else(|| FrameError::Time(time.to_string()))
}

fn check_did(did: &str) -> Result<(), FrameError> {
    if syntax::is_did(did) {
        Ok(())
    } else {
        Err(FrameError::Did(did.to_string()))
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
    let (kind, action, msg_id) = match t {
        "#identity" => (
            Kind::Identity,
            Action::Identity,
            format!("identity:{}@{}", head.did, head.time),
        ),
        "#account" => (
            Kind::Account,
            Action::Account,
            format!(
                "account:{}@{}:{}:{}",
                head.did,
                head.time,
                head.active.unwrap_or(true),
                head.status.unwrap_or("")
            ),
        ),
        _ => (
            Kind::Sync,
            Action::Sync,
            format!("sync:{}@{}", head.did, head.rev.unwrap_or(head.time)),
        ),
    };
    let mut payload = Vec::with_capacity(body.len() * 2 + 128);
    open_envelope(&mut payload, head.did, time_us, kind.as_str());
    json::transcode(body, &mut payload).map_err(FrameError::Cbor)?;
    payload.push(b'}');
    Ok(Decoded {
        kind,
        seq: Some(head.seq),
        time_us: Some(time_us),
        messages: vec![Message {
            subject: format!("{SUBJECT_PREFIX}.{}", kind.as_str()),
            msg_id,
            payload,
            action,
        }],
        skipped: Vec::new(),
        control: None,
        too_big: false,
    })
}

fn decode_commit(body: &[u8]) -> Result<Decoded, FrameError> {
    let c: CommitBody = from_body(body)?;
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
    Ok(Decoded {
        kind: Kind::Commit,
        seq: Some(c.seq),
        time_us: Some(time_us),
        messages,
        skipped,
        control: None,
        too_big: c.too_big,
    })
}

/// One record op → one message, or the reason it is skipped.
fn commit_op(
    c: &CommitBody,
    op: &RepoOp,
    blocks: &car::Blocks,
    time_us: i64,
) -> Result<Message, &'static str> {
    let (collection, rkey) = op.path.split_once('/').ok_or("bad_path")?;
    let collection = syntax::Nsid::parse(collection).ok_or("invalid_collection")?;
    if !syntax::is_record_key(rkey) {
        return Err("invalid_rkey");
    }
    let action = match op.action {
        "create" => Action::Create,
        "update" => Action::Update,
        "delete" => Action::Delete,
        _ => return Err("unknown_action"),
    };
    let record = match action {
        Action::Delete => None,
        _ => {
            let cid = op.cid.ok_or("missing_cid")?;
            match blocks.get(cid.0) {
                Some(data) => {
                    car::verify(cid.0, data).map_err(|e| match e {
                        car::VerifyError::Mismatch => "cid_mismatch",
                        car::VerifyError::Unsupported => "unsupported_cid",
                    })?;
                    Some((cid, Some(data)))
                }
                None if c.too_big => Some((cid, None)),
                None => return Err("missing_block"),
            }
        }
    };

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
                json::transcode(data, &mut p).map_err(|_| "bad_record")?;
            }
            None => p.extend_from_slice(b",\"tooBig\":true"),
        }
        p.extend_from_slice(b",\"cid\":\"");
        cid::write_str(&mut p, cid.0);
        p.push(b'"');
    }
    p.extend_from_slice(b"}}");

    Ok(Message {
        subject: format!("{SUBJECT_PREFIX}.{collection}"),
        msg_id: format!("{}/{}/{}@{}", c.repo, collection, rkey, c.rev),
        payload: p,
        action,
    })
}

/// Length of the DAG-CBOR value at the start of `buf` (heads only: nothing is decoded).
fn value_len(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    let mut pending: u64 = 1;
    while pending > 0 {
        pending -= 1;
        let head = *buf.get(pos)?;
        pos += 1;
        let (major, info) = (head >> 5, head & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let n = 1usize << (info - 24);
                let bytes = buf.get(pos..pos.checked_add(n)?)?;
                pos += n;
                bytes.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))
            }
            _ => return None,
        };
        match major {
            0 | 1 | 7 => {}
            2 | 3 => pos = pos.checked_add(usize::try_from(arg).ok()?)?,
            4 => pending = pending.checked_add(arg)?,
            5 => pending = pending.checked_add(arg.checked_mul(2)?)?,
            6 => pending += 1,
            _ => return None,
        }
        if pos > buf.len() {
            return None;
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_len_of_a_header() {
        // {"t":"#commit","op":1} then junk
        let mut buf = vec![0xa2, 0x61, b't', 0x67];
        buf.extend_from_slice(b"#commit");
        buf.extend_from_slice(&[0x62, b'o', b'p', 0x01, 0xff]);
        assert_eq!(value_len(&buf), Some(buf.len() - 1));
        assert_eq!(value_len(&buf[..5]), None);
    }

    #[test]
    fn nsid_is_the_subject_tail() {
        assert!(syntax::Nsid::parse("app.bsky.feed.post").is_some());
        assert!(syntax::Nsid::parse("identity").is_none());
    }
}
