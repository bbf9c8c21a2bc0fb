//! The frame-level work the relay needs, and nothing more.
//!
//! A `subscribeRepos` frame is two concatenated DAG-CBOR values: a header map `{t, op}` and a
//! body map. The relay reads the header kind and the body's `seq` and `time`
//! ([`parse_meta`]), builds `#info` and error frames ([`info_frame`], [`error_frame`]), and
//! renumbers `seq` for looped replays ([`rewrite_seq`]) by patching that one integer in
//! place, so every other byte of the frame stays as captured. The CBOR walking is
//! `firehose::cbor`'s; full decoding belongs to `firehose::decode`.

use firehose::cbor::{self, CborError};
use serde::{Deserialize, Serialize};

/// Why a frame could not be read or built.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header or body (`part`) is not the DAG-CBOR shape of a firehose frame.
    #[error("frame {part} is not the DAG-CBOR of a firehose frame")]
    Cbor {
        /// `header`, `body`, or `after body` (bytes after the body).
        part: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_ipld_dagcbor::DecodeError<std::convert::Infallible>,
    },
    /// The body's `seq` is negative.
    #[error("frame body has a negative seq {0}")]
    NegativeSeq(i64),
    /// An item is not of the major type the frame's shape has there.
    #[error("expected CBOR major type {expected} at byte {pos}, found {found}")]
    MajorType {
        /// Byte offset of the item.
        pos: usize,
        /// The major type the shape has there.
        expected: u8,
        /// The major type found.
        found: u8,
    },
    /// The frame cannot be walked item by item (truncated, indefinite lengths, too deep).
    #[error(transparent)]
    Walk(#[from] CborError),
    /// The body has no integer `seq` to rewrite.
    #[error("frame body has no integer seq")]
    NoSeq,
    /// The header's `op` is neither 1 nor -1.
    #[error("header op {0} is neither 1 (message) nor -1 (error)")]
    BadOp(i64),
    /// A message frame (`op: 1`) without a `t`.
    #[error("message frame header has no t")]
    NoType,
}

/// What a frame is, from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameKind {
    /// `#commit`
    Commit,
    /// `#identity`
    Identity,
    /// `#account`
    Account,
    /// `#sync`
    Sync,
    /// `#info`
    Info,
    /// Another `t` value (a message type this relay does not know).
    Other(String),
    /// An error frame (`op: -1`).
    Error,
    /// Not a readable frame (e.g. truncated DAG-CBOR). Kept and served byte for byte at its
    /// place in the capture, as a relay could send it: tests use such frames to check that
    /// clients skip them.
    Unreadable,
}

impl FrameKind {
    /// The header `t` of this kind (`"error"` for error frames).
    pub fn as_str(&self) -> &str {
        match self {
            FrameKind::Commit => "#commit",
            FrameKind::Identity => "#identity",
            FrameKind::Account => "#account",
            FrameKind::Sync => "#sync",
            FrameKind::Info => "#info",
            FrameKind::Other(t) => t,
            FrameKind::Error => "error",
            FrameKind::Unreadable => "unreadable",
        }
    }
}

/// What the relay knows about one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameMeta {
    /// Header kind.
    pub kind: FrameKind,
    /// Body `seq`, when present (commit, identity, account, sync).
    pub seq: Option<u64>,
    /// Body `time` in microseconds since the Unix epoch, when present and valid RFC 3339.
    pub time_micros: Option<i64>,
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    op: i64,
    #[serde(default)]
    t: Option<String>,
}

#[derive(Deserialize)]
struct RawMeta {
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    time: Option<String>,
}

/// Reads a frame's header kind and its body's `seq` and `time`, ignoring every other field.
pub fn parse_meta(frame: &[u8]) -> Result<FrameMeta, FrameError> {
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(frame);
    let cbor = |part| move |source| FrameError::Cbor { part, source };
    let header = RawHeader::deserialize(&mut de).map_err(cbor("header"))?;
    let body = RawMeta::deserialize(&mut de).map_err(cbor("body"))?;
    de.end().map_err(cbor("after body"))?;
    let kind = match header.op {
        -1 => FrameKind::Error,
        1 => match header.t.as_deref() {
            Some("#commit") => FrameKind::Commit,
            Some("#identity") => FrameKind::Identity,
            Some("#account") => FrameKind::Account,
            Some("#sync") => FrameKind::Sync,
            Some("#info") => FrameKind::Info,
            Some(other) => FrameKind::Other(other.to_owned()),
            None => return Err(FrameError::NoType),
        },
        op => return Err(FrameError::BadOp(op)),
    };
    let seq = match body.seq {
        Some(s) => Some(u64::try_from(s).map_err(|_| FrameError::NegativeSeq(s))?),
        None => None,
    };
    let time_micros = body
        .time
        .as_deref()
        .and_then(crate::time::parse_rfc3339_micros);
    Ok(FrameMeta {
        kind,
        seq,
        time_micros,
    })
}

#[derive(Serialize)]
struct Header<'a> {
    t: Option<&'a str>,
    op: i64,
}

#[derive(Serialize)]
struct ErrorHeader {
    op: i64,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct InfoBody<'a> {
    name: &'a str,
    message: &'a str,
}

fn encode_pair<H: Serialize, B: Serialize>(header: &H, body: &B) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Serializing these small structs into a Vec cannot fail: every field is a string or an
    // integer, and Vec's writer is infallible.
    let _ = serde_ipld_dagcbor::to_writer(&mut out, header);
    let _ = serde_ipld_dagcbor::to_writer(&mut out, body);
    out
}

/// Builds an error frame: header `{op: -1}`, body `{error, message}` (canonical DAG-CBOR).
pub fn error_frame(error: &str, message: &str) -> Vec<u8> {
    encode_pair(&ErrorHeader { op: -1 }, &ErrorBody { error, message })
}

/// Builds an `#info` frame: header `{t: "#info", op: 1}`, body `{name, message}`.
pub fn info_frame(name: &str, message: &str) -> Vec<u8> {
    encode_pair(
        &Header {
            t: Some("#info"),
            op: 1,
        },
        &InfoBody { name, message },
    )
}

/// Encodes a message frame header `{t, op: 1}` into `out`.
pub fn write_message_header(out: &mut Vec<u8>, t: &str) {
    let _ = serde_ipld_dagcbor::to_writer(out, &Header { t: Some(t), op: 1 });
}

/// Returns a copy of `frame` whose body `seq` is `new_seq`.
///
/// Only the integer is re-encoded (minimally, as DAG-CBOR requires); every other byte is
/// copied, so the result is canonical whenever the input was.
pub fn rewrite_seq(frame: &[u8], new_seq: u64) -> Result<Vec<u8>, FrameError> {
    let body_start = cbor::item_end(frame, 0)?;
    let (map_len, mut pos) = read_head(frame, body_start, 5)?;
    for _ in 0..map_len {
        let (key_len, key_start) = read_head(frame, pos, 3)?;
        let key_end = cbor::checked_end(frame, key_start, key_len)?;
        let value_start = key_end;
        let value_end = cbor::item_end(frame, value_start)?;
        if &frame[key_start..key_end] == b"seq" {
            if frame[value_start] >> 5 != 0 {
                return Err(FrameError::NoSeq);
            }
            let mut out = Vec::with_capacity(frame.len() + 8);
            out.extend_from_slice(&frame[..value_start]);
            cbor::write_head(&mut out, 0, new_seq);
            out.extend_from_slice(&frame[value_end..]);
            return Ok(out);
        }
        pos = value_end;
    }
    Err(FrameError::NoSeq)
}

/// Reads the head at `pos`, which must be of major type `major`; returns (argument, offset
/// after the head).
fn read_head(buf: &[u8], pos: usize, major: u8) -> Result<(u64, usize), FrameError> {
    let h = cbor::head(buf, pos)?;
    if h.major != major {
        return Err(FrameError::MajorType {
            pos,
            expected: major,
            found: h.major,
        });
    }
    Ok((h.arg, h.next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_error_frames_are_canonical() {
        let info = info_frame("OutdatedCursor", "x");
        // {t: "#info", op: 1}: "t" (shorter key) first.
        assert_eq!(
            &info[..12],
            &[0xa2, 0x61, b't', 0x65, b'#', b'i', b'n', b'f', b'o', 0x62, b'o', b'p']
        );
        let meta = parse_meta(&info).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.kind, FrameKind::Info);
        assert_eq!(meta.seq, None);

        let err = error_frame("FutureCursor", "m");
        assert_eq!(&err[..5], &[0xa1, 0x62, b'o', b'p', 0x20]);
        assert_eq!(
            parse_meta(&err).map(|m| m.kind).ok(),
            Some(FrameKind::Error)
        );
    }

    #[test]
    fn rewrite_seq_changes_only_seq() {
        let mut frame = Vec::new();
        write_message_header(&mut frame, "#identity");
        #[derive(Serialize)]
        struct Body<'a> {
            did: &'a str,
            seq: u64,
            time: &'a str,
        }
        let _ = serde_ipld_dagcbor::to_writer(
            &mut frame,
            &Body {
                did: "did:plc:x",
                seq: 5,
                time: "2026-07-04T14:38:07.517Z",
            },
        );
        let out = rewrite_seq(&frame, 1 << 40).unwrap_or_default();
        let meta = parse_meta(&out).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.seq, Some(1 << 40));
        assert_eq!(out.len(), frame.len() + 8);
        let back = rewrite_seq(&out, 5).unwrap_or_default();
        assert_eq!(back, frame);
    }

    #[test]
    fn rewrite_rejects_bodies_without_seq() {
        assert!(rewrite_seq(&[0xa0, 0xa0], 1).is_err());
        assert!(rewrite_seq(&[0xa0, 0x5a, 0xff], 1).is_err());
    }
}
