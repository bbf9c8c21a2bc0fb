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
//! root of the repository; `tests/contract.rs` keeps the two in step.

pub mod car;
pub mod cbor;
pub mod cid;
pub mod json;
pub mod syntax;
mod time;
pub mod varint;

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
/// The largest message the ingestor must be able to publish: a record block of the
/// protocol's maximum size as JSON (byte strings grow by a third as base64, text stays
/// about the same). A pathological record above it (e.g. megabytes of control characters,
/// each escaped as six bytes) is skipped as `too_large_for_nats` when it exceeds the
/// server's `max_payload`.
pub const MAX_MESSAGE_BYTES: usize = 2 * MAX_BLOCKS_BYTES;

/// Every reason a frame or an op can be skipped for: a closed set, for metric labels.
/// The decoder gives the first sixteen; the ingestor adds the last three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Frame: DAG-CBOR ends early.
    Truncated,
    /// Frame: not canonical DAG-CBOR, or a required field missing or of the wrong type.
    MalformedCbor,
    /// Frame: header `t` this version does not know.
    UnknownType,
    /// Frame: header `op` other than 1 or -1.
    UnknownOp,
    /// Frame: the commit's `blocks` is not a CAR.
    BadCar,
    /// Frame: `time` is not an RFC 3339 datetime.
    BadTime,
    /// Frame: `repo`/`did` is not a DID.
    BadDid,
    /// Frame: more ops than the protocol's [`MAX_OPS`].
    TooManyOps,
    /// Op: path is not `collection/rkey`.
    BadPath,
    /// Op: collection is not an NSID.
    InvalidCollection,
    /// Op: record key syntax.
    InvalidRkey,
    /// Op: action other than create/update/delete.
    UnknownAction,
    /// Op: create/update without a CID.
    MissingCid,
    /// Op: the record's block is not in the CAR (and the commit is not tooBig).
    MissingBlock,
    /// Op: the block does not hash to its CID.
    CidMismatch,
    /// Op: a hash other than sha2-256.
    UnsupportedCid,
    /// Op: the record block is not DAG-CBOR.
    BadRecord,
    /// Frame (ingestor): above `relay.max_frame_bytes`.
    FrameTooLarge,
    /// Frame (ingestor): seq not above the last one read.
    StaleSeq,
    /// Op (ingestor): the message is above the server's `max_payload`.
    TooLargeForNats,
}

impl SkipReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [SkipReason; 20] = [
        SkipReason::Truncated,
        SkipReason::MalformedCbor,
        SkipReason::UnknownType,
        SkipReason::UnknownOp,
        SkipReason::BadCar,
        SkipReason::BadTime,
        SkipReason::BadDid,
        SkipReason::TooManyOps,
        SkipReason::BadPath,
        SkipReason::InvalidCollection,
        SkipReason::InvalidRkey,
        SkipReason::UnknownAction,
        SkipReason::MissingCid,
        SkipReason::MissingBlock,
        SkipReason::CidMismatch,
        SkipReason::UnsupportedCid,
        SkipReason::BadRecord,
        SkipReason::FrameTooLarge,
        SkipReason::StaleSeq,
        SkipReason::TooLargeForNats,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Truncated => "truncated",
            SkipReason::MalformedCbor => "malformed_cbor",
            SkipReason::UnknownType => "unknown_type",
            SkipReason::UnknownOp => "unknown_op",
            SkipReason::BadCar => "bad_car",
            SkipReason::BadTime => "bad_time",
            SkipReason::BadDid => "bad_did",
            SkipReason::TooManyOps => "too_many_ops",
            SkipReason::BadPath => "bad_path",
            SkipReason::InvalidCollection => "invalid_collection",
            SkipReason::InvalidRkey => "invalid_rkey",
            SkipReason::UnknownAction => "unknown_action",
            SkipReason::MissingCid => "missing_cid",
            SkipReason::MissingBlock => "missing_block",
            SkipReason::CidMismatch => "cid_mismatch",
            SkipReason::UnsupportedCid => "unsupported_cid",
            SkipReason::BadRecord => "bad_record",
            SkipReason::FrameTooLarge => "frame_too_large",
            SkipReason::StaleSeq => "stale_seq",
            SkipReason::TooLargeForNats => "too_large_for_nats",
        }
    }
}

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
    /// Every kind, for pre-registering metric series.
    pub const ALL: [Kind; 6] = [
        Kind::Commit,
        Kind::Sync,
        Kind::Identity,
        Kind::Account,
        Kind::Info,
        Kind::Error,
    ];

    /// The metric label.
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
    /// Every action, for pre-registering metric series.
    pub const ALL: [Action; 6] = [
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Identity,
        Action::Account,
        Action::Sync,
    ];

    /// The metric label.
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
    /// Jetstream-v1-shaped JSON.
    pub payload: Vec<u8>,
    pub action: Action,
}

impl Message {
    /// The relay-independent event id (subjects.md, "Event ids"), read back from the
    /// payload. Not computed on the hot path: logs and tests ask for it.
    pub fn id(&self) -> String {
        event_id(&self.payload).unwrap_or_default()
    }

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

impl Control {
    /// `Kind::Info` or `Kind::Error`.
    pub fn kind(&self) -> Kind {
        match self {
            Control::Info { .. } => Kind::Info,
            Control::Error { .. } => Kind::Error,
        }
    }
}

/// The relay-independent id of an event payload (subjects.md, "Event ids"), or `None` when
/// the payload is not one of the contract's events.
pub fn event_id(payload: &[u8]) -> Option<String> {
    use std::borrow::Cow;
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        rev: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        collection: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        rkey: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        time: Option<Cow<'a, str>>,
        #[serde(default)]
        active: Option<bool>,
        #[serde(borrow, default)]
        status: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        did: Cow<'a, str>,
        #[serde(borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        commit: Option<Body<'a>>,
        #[serde(borrow, default)]
        identity: Option<Body<'a>>,
        #[serde(borrow, default)]
        account: Option<Body<'a>>,
        #[serde(borrow, default)]
        sync: Option<Body<'a>>,
    }
    let e: Envelope = serde_json::from_slice(payload).ok()?;
    let did = &e.did;
    Some(match (&*e.kind, e.commit, e.identity, e.account, e.sync) {
        ("commit", Some(c), ..) => format!("{did}/{}/{}@{}", c.collection?, c.rkey?, c.rev?),
        ("identity", _, Some(i), ..) => format!("identity:{did}@{}", i.time?),
        ("account", _, _, Some(a), _) => format!(
            "account:{did}@{}:{}:{}",
            a.time?,
            a.active.unwrap_or(true),
            a.status.as_deref().unwrap_or("")
        ),
        ("sync", .., Some(s)) => format!("sync:{did}@{}", s.rev.or(s.time)?),
        _ => return None,
    })
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
    /// Why.
    pub reason: SkipReason,
    /// The op's `collection/rkey`.
    pub path: String,
}

/// What one frame is, and so what the caller does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An event of the network: publish its messages.
    Event(Event),
    /// A control frame (`#info`, error): about the connection, never published.
    Control(Control),
    /// A frame that cannot be used: skip it and count it under `error.reason()`.
    Skipped {
        /// The frame's relay seq, when it could still be read.
        seq: Option<i64>,
        /// What is wrong with it.
        error: FrameError,
    },
}

impl Decoded {
    /// The event, if this frame is one.
    pub fn into_event(self) -> Option<Event> {
        match self {
            Decoded::Event(e) => Some(e),
            _ => None,
        }
    }

    /// The control message, if this frame is one.
    pub fn into_control(self) -> Option<Control> {
        match self {
            Decoded::Control(c) => Some(c),
            _ => None,
        }
    }

    /// Why the frame is skipped, if it is.
    pub fn into_skipped(self) -> Option<FrameError> {
        match self {
            Decoded::Skipped { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A `#commit`, `#identity`, `#account` or `#sync` frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Which of the four.
    pub kind: Kind,
    /// The relay's sequence number.
    pub seq: i64,
    /// The event's own time, in microseconds since the Unix epoch.
    pub time_us: i64,
    /// One message per op (commits) or one message (the others), in op order.
    pub messages: Vec<Message>,
    /// Ops left out, with their reasons.
    pub skipped: Vec<Skip>,
    /// A pre-Sync-1.1 `tooBig` commit: ops published without records.
    pub too_big: bool,
}

/// Why a whole frame was skipped. The caller counts it under [`FrameError::reason`],
/// logs it with the frame's position, and goes on with the next frame.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
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
    #[error("commit with {0} ops, above the protocol's {MAX_OPS}")]
    TooManyOps(usize),
}

impl FrameError {
    /// The reason this frame is counted under.
    pub fn reason(&self) -> SkipReason {
        match self {
            FrameError::Truncated(_) => SkipReason::Truncated,
            FrameError::Cbor(_) => SkipReason::MalformedCbor,
            FrameError::UnknownType(_) => SkipReason::UnknownType,
            FrameError::UnknownOp(_) => SkipReason::UnknownOp,
            FrameError::Car(_) => SkipReason::BadCar,
            FrameError::Time(_) => SkipReason::BadTime,
            FrameError::Did(_) => SkipReason::BadDid,
            FrameError::TooManyOps(_) => SkipReason::TooManyOps,
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
    let header_len = cbor::item_end(frame, 0).map_err(|e| FrameError::Truncated(e.to_string()))?;
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
            subject: format!("{SUBJECT_PREFIX}.{}", kind.as_str()),
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
    let collection = syntax::Nsid::parse(collection).ok_or(SkipReason::InvalidCollection)?;
    if !syntax::is_record_key(rkey) {
        return Err(SkipReason::InvalidRkey);
    }
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
        subject: format!("{SUBJECT_PREFIX}.{collection}"),
        payload: p,
        action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_the_contract() {
        let id = |j: &str| event_id(j.as_bytes());
        assert_eq!(
            id(
                r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"rev":"3k","operation":"create","collection":"app.bsky.feed.like","rkey":"3l","record":{}}}"#
            ),
            Some("did:plc:a/app.bsky.feed.like/3l@3k".into())
        );
        assert_eq!(
            id(
                r#"{"did":"did:plc:a","time_us":1,"kind":"identity","identity":{"did":"did:plc:a","seq":5,"time":"2026-07-04T14:38:07.877Z"}}"#
            ),
            Some("identity:did:plc:a@2026-07-04T14:38:07.877Z".into())
        );
        assert_eq!(
            id(
                r#"{"did":"did:plc:a","time_us":1,"kind":"account","account":{"active":false,"did":"did:plc:a","seq":5,"status":"takendown","time":"T"}}"#
            ),
            Some("account:did:plc:a@T:false:takendown".into())
        );
        assert_eq!(
            id(
                r#"{"did":"did:plc:a","time_us":1,"kind":"sync","sync":{"did":"did:plc:a","rev":"3m","seq":5,"time":"T"}}"#
            ),
            Some("sync:did:plc:a@3m".into())
        );
        assert_eq!(id(r#"{"did":"did:plc:a","kind":"other"}"#), None);
        assert_eq!(id("not json"), None);
    }

    #[test]
    fn skip_reason_labels_are_distinct() {
        let labels: std::collections::HashSet<_> =
            SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), SkipReason::ALL.len());
    }

    #[test]
    fn nsid_is_the_subject_tail() {
        assert!(syntax::Nsid::parse("app.bsky.feed.post").is_some());
        assert!(syntax::Nsid::parse("identity").is_none());
    }
}
