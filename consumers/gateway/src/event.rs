//! A stream payload as the gateway sends it: `time_us` is the message's storage time and
//! `cursor` its stream sequence (Jetstream v2's field), patched into the bytes.
//!
//! Where it sits: pump (one stream message) → **event** → session. The payload's opening
//! is fixed by `subjects.md`, `{"did":"<did>","time_us":<digits>,"kind":…`, so the patch is
//! one copy with two numbers replaced and inserted, never a JSON parse and re-serialise.
//! The DID comes out of the same scan, for the DID filter. A payload that does not open
//! this way is off the contract: [`patch`] returns `None` and the pump skips it.

use bytes::{BufMut, Bytes, BytesMut};

const OPEN: &[u8] = b"{\"did\":\"";
const TIME: &[u8] = b"\",\"time_us\":";

/// One payload, patched for a client.
#[derive(Debug, Clone, PartialEq)]
pub struct Patched {
    /// The JSON sent to clients.
    pub json: Bytes,
    /// Where the DID sits in `json`.
    did: std::ops::Range<usize>,
}

impl Patched {
    /// The event's DID.
    pub fn did(&self) -> &str {
        // `patch` checked these bytes are a DID's (ASCII, no quote); never fails.
        std::str::from_utf8(&self.json[self.did.clone()]).unwrap_or("")
    }
}

/// `payload` with `time_us` replaced by `stored_us` and `"cursor":seq` after it; `None` when
/// the payload does not open as `subjects.md` says.
pub fn patch(payload: &[u8], stored_us: i64, seq: u64) -> Option<Patched> {
    let rest = payload.strip_prefix(OPEN)?;
    let did_len = rest.iter().position(|&b| b == b'"')?;
    let did = &rest[..did_len];
    if !did.iter().all(|b| b.is_ascii_graphic() && *b != b'\\') {
        return None;
    }
    let after_did = OPEN.len() + did_len;
    let digits_at = after_did + TIME.len();
    if payload.get(after_did..digits_at)? != TIME {
        return None;
    }
    let digits = payload[digits_at..]
        .iter()
        .position(|&b| !(b.is_ascii_digit() || b == b'-'))
        .filter(|&n| n > 0)?;
    let tail = &payload[digits_at + digits..];
    if !tail.starts_with(b",") {
        return None;
    }
    let mut out = BytesMut::with_capacity(payload.len() + 48);
    out.put_slice(&payload[..digits_at]);
    out.put_slice(itoa::Buffer::new().format(stored_us).as_bytes());
    out.put_slice(b",\"cursor\":");
    out.put_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.put_slice(tail);
    Some(Patched {
        json: out.freeze(),
        did: OPEN.len()..after_did,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_replaced_cursor_added_rest_unchanged() {
        let p = br#"{"did":"did:plc:abc","time_us":1725911162329308,"kind":"commit","commit":{"rev":"x"}}"#;
        let out = patch(p, 1800000000000001, 42).expect("on the contract");
        assert_eq!(out.did(), "did:plc:abc");
        let want = r#"{"did":"did:plc:abc","time_us":1800000000000001,"cursor":42,"kind":"commit","commit":{"rev":"x"}}"#;
        assert_eq!(std::str::from_utf8(&out.json).expect("utf8"), want);
        let v: serde_json::Value = serde_json::from_slice(&out.json).expect("json");
        assert_eq!(v["cursor"], 42);
    }

    #[test]
    fn off_the_contract_is_none() {
        for p in [
            &br#"{"time_us":1,"did":"did:plc:a","kind":"commit"}"#[..],
            br#"{"did":"did:plc:a","kind":"commit","time_us":1}"#,
            br#"{"did":"did:plc:a","time_us":,"kind":"commit"}"#,
            br#"{"did":"did:plc:a","time_us":12}"#,
            br#"{"did":"did:pl\"c","time_us":1,"kind":"x"}"#,
            br#"{"did":"did:plc:a"#,
            b"",
        ] {
            assert!(patch(p, 1, 1).is_none(), "{}", String::from_utf8_lossy(p));
        }
    }
}
