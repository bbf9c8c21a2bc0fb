//! The archive's format: where objects live, one message as a line of a segment, and the
//! manifest's entries. README.md documents the same for operators; this module is the one
//! place the code writes and reads it.
//!
//! ```text
//! <prefix>/segments/<first:020>-<last:020>.jsonl.zst   zstd frame of JSON lines, one per message
//! <prefix>/manifest/<first:020>.json                   one entry per segment or gap, written after it
//! ```
//!
//! Sequence numbers are zero-padded to 20 digits so that a plain listing is in stream order.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Folder of the segments.
pub const SEGMENTS: &str = "segments";
/// Folder of the manifest entries.
pub const MANIFEST: &str = "manifest";

/// Key of the segment holding stream sequences `first..=last`.
pub fn segment_key(first: u64, last: u64) -> String {
    format!("{SEGMENTS}/{first:020}-{last:020}.jsonl.zst")
}

/// Key of the manifest entry whose range starts at `first`.
pub fn manifest_key(first: u64) -> String {
    format!("{MANIFEST}/{first:020}.json")
}

/// One manifest entry: a sealed segment, or a range of the stream that is not archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    /// A sealed segment.
    Segment(SegmentEntry),
    /// Messages the stream no longer held when the archiver reached them.
    Gap(GapEntry),
}

impl Entry {
    /// First stream sequence covered.
    pub fn first_seq(&self) -> u64 {
        match self {
            Entry::Segment(s) => s.first_seq,
            Entry::Gap(g) => g.first_seq,
        }
    }

    /// Last stream sequence covered.
    pub fn last_seq(&self) -> u64 {
        match self {
            Entry::Segment(s) => s.last_seq,
            Entry::Gap(g) => g.last_seq,
        }
    }
}

/// A sealed segment: a contiguous range of stream sequences, every one of them inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEntry {
    /// Object key, relative to the archive's root.
    pub key: String,
    /// First stream sequence inside.
    pub first_seq: u64,
    /// Last stream sequence inside.
    pub last_seq: u64,
    /// Messages inside (`last_seq - first_seq + 1`).
    pub messages: u64,
    /// JetStream storage time of the first message, ns since the epoch.
    pub first_stored_ns: i64,
    /// JetStream storage time of the last message, ns since the epoch.
    pub last_stored_ns: i64,
    /// Smallest event time (`time_us` of the payloads), µs since the epoch; `None` if no
    /// payload had one.
    pub min_time_us: Option<i64>,
    /// Largest event time.
    pub max_time_us: Option<i64>,
    /// Size of the object (compressed), bytes.
    pub bytes: u64,
    /// SHA-256 of the object, lowercase hex.
    pub sha256: String,
    /// Creation id of the stream it was read from ([`contract::lineage::created_id`]);
    /// absent in entries written before it was recorded. `archive restore` names these
    /// streams in the restored stream's metadata, so consumers built on them go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_created: Option<String>,
}

/// Stream sequences the archive does not hold, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GapEntry {
    /// First missing stream sequence.
    pub first_seq: u64,
    /// Last missing stream sequence.
    pub last_seq: u64,
    /// When the archiver found it, ns since the epoch.
    pub detected_ns: i64,
    /// `"retention"`: the stream had removed them (age, size, or by hand) before they were
    /// archived.
    pub reason: String,
}

/// One message, as a segment holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Stream sequence.
    pub seq: u64,
    /// JetStream storage time, ns since the epoch.
    pub stored_ns: i64,
    /// Subject (`subjects.md`).
    pub subject: String,
    /// The `Bsky-Seq` header (relay seq of the frame), if the message had a readable one.
    pub bsky_seq: Option<u64>,
    /// The payload, byte for byte.
    pub payload: bytes::Bytes,
}

#[derive(Serialize, Deserialize)]
struct Line<'a> {
    seq: u64,
    stored_ns: i64,
    #[serde(borrow)]
    subject: &'a str,
    bsky_seq: Option<u64>,
    /// The payload as it is, when it is a JSON document without surrounding whitespace or
    /// newlines (every contract payload is).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    payload: Option<&'a RawValue>,
    /// Otherwise the payload in standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

/// Why a segment's line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Not the JSON of a record.
    #[error("not a record line: {0}")]
    Json(#[from] serde_json::Error),
    /// `payload_b64` is not base64.
    #[error("payload_b64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Neither `payload` nor `payload_b64`.
    #[error("a record without payload")]
    NoPayload,
}

/// Appends `r` as one line (with its `\n`) to `out`.
pub fn write_line(out: &mut Vec<u8>, r: &Record) {
    use base64::Engine;
    let raw = std::str::from_utf8(&r.payload)
        .ok()
        .filter(|s| !s.contains('\n'))
        .and_then(|s| serde_json::from_str::<&RawValue>(s).ok())
        .filter(|v| v.get().len() == r.payload.len());
    let line = Line {
        seq: r.seq,
        stored_ns: r.stored_ns,
        subject: &r.subject,
        bsky_seq: r.bsky_seq,
        payload_b64: raw
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(&r.payload)),
        payload: raw,
    };
    // Serializing this struct into a Vec cannot fail (string keys, no maps).
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// Reads one line (without its `\n`).
pub fn read_line(line: &[u8]) -> Result<Record, LineError> {
    use base64::Engine;
    let l: Line<'_> = serde_json::from_slice(line)?;
    let payload = match (l.payload, l.payload_b64) {
        (Some(raw), _) => bytes::Bytes::copy_from_slice(raw.get().as_bytes()),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)?
            .into(),
        (None, None) => return Err(LineError::NoPayload),
    };
    Ok(Record {
        seq: l.seq,
        stored_ns: l.stored_ns,
        subject: l.subject.to_string(),
        bsky_seq: l.bsky_seq,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(payload: &[u8]) -> Record {
        Record {
            seq: 7,
            stored_ns: 1_783_123_200_000_000_123,
            subject: "bsky.app.bsky.feed.post".into(),
            bsky_seq: Some(42),
            payload: bytes::Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn payloads_come_back_byte_for_byte() {
        for p in [
            &br#"{"did":"did:plc:x","time_us":1,"kind":"commit","commit":{"a":"\u00e9\n"}}"#[..],
            b" {\"padded\":true} ",
            b"{\"a\":\n1}",
            b"not json \xff",
            b"",
        ] {
            let mut out = Vec::new();
            write_line(&mut out, &rec(p));
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
            assert_eq!(out.last(), Some(&b'\n'));
            let back = read_line(&out[..out.len() - 1]).map_err(|e| e.to_string());
            assert_eq!(back, Ok(rec(p)));
        }
    }

    #[test]
    fn a_json_payload_is_embedded_as_it_is() {
        let mut out = Vec::new();
        write_line(&mut out, &rec(br#"{"time_us":5}"#));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(r#""payload":{"time_us":5}"#), "{text}");
        assert!(!text.contains("payload_b64"), "{text}");
    }

    #[test]
    fn keys_sort_in_stream_order() {
        assert!(segment_key(9, 10) < segment_key(10, 11));
        assert!(manifest_key(999) < manifest_key(1000));
        assert_eq!(
            manifest_key(1),
            "manifest/00000000000000000001.json".to_string()
        );
    }

    #[test]
    fn entries_are_tagged() {
        let g = Entry::Gap(GapEntry {
            first_seq: 1,
            last_seq: 9,
            detected_ns: 0,
            reason: "retention".into(),
        });
        let json = serde_json::to_string(&g).unwrap_or_default();
        assert!(json.starts_with(r#"{"kind":"gap""#), "{json}");
        let back: Result<Entry, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(g));
    }
}
