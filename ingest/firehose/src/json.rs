//! DAG-CBOR → atproto JSON, in one pass with no intermediate value.
//!
//! serde_ipld_dagcbor parses (and enforces DAG-CBOR strictness: canonical map order,
//! minimal integers, no indefinite lengths, tag 42 only); a serde `Visitor` writes the
//! JSON text straight into the output buffer as each value is visited. CID links become
//! `{"$link":"b…"}` and byte strings `{"$bytes":"<base64, no padding>"}`, as the atproto
//! data model specifies.

use base64::Engine;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Transcodes one DAG-CBOR value (the whole of `cbor`) into JSON appended to `out`.
pub fn transcode(cbor: &[u8], out: &mut Vec<u8>) -> Result<(), crate::cbor::DecodeError> {
    let start = out.len();
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(cbor);
    let result = Json(out)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(crate::cbor::DecodeError::from);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// A seed that writes the value it is handed as JSON.
struct Json<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Json<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// For each byte: 0 when it goes into a JSON string as it is, else the letter of its short
/// escape (`\"`, `\\`, `\n`, …) or `u` for `\u00XX`. One lookup per byte instead of a chain
/// of comparisons.
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t
};

/// Writes a JSON string literal with the escapes JSON requires.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', esc]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

impl<'de> Visitor<'de> for Json<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DAG-CBOR value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        write_int(self.0, v);
        Ok(())
    }
    fn visit_i128<E>(self, v: i128) -> Result<(), E> {
        write_int(self.0, v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write_int(self.0, v);
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(E::custom("non-finite float"));
        }
        let n = serde_json::Number::from_f64(v).ok_or_else(|| E::custom("float"))?;
        self.0.extend_from_slice(n.to_string().as_bytes());
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_str(self.0, v);
        Ok(())
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<(), E> {
        self.0.extend_from_slice(b"{\"$bytes\":\"");
        let engine = &base64::engine::general_purpose::STANDARD_NO_PAD;
        let at = self.0.len();
        self.0.resize(at + v.len().div_ceil(3) * 4, 0);
        let n = engine.encode_slice(v, &mut self.0[at..]).unwrap_or(0);
        self.0.truncate(at + n);
        self.0.extend_from_slice(b"\"}");
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    /// serde_ipld_dagcbor hands CBOR tag 42 (a CID) over as a newtype struct.
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_bytes(CidLink(self.0))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let at = self.0.len();
            if !first {
                self.0.push(b',');
            }
            match seq.next_element_seed(Json(self.0))? {
                Some(()) => first = false,
                None => {
                    self.0.truncate(at);
                    break;
                }
            }
        }
        self.0.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.push(b'{');
        let mut first = true;
        loop {
            let at = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if map.next_key_seed(Key(self.0))?.is_none() {
                self.0.truncate(at);
                break;
            }
            first = false;
            self.0.push(b':');
            map.next_value_seed(Json(self.0))?;
        }
        self.0.push(b'}');
        Ok(())
    }
}

/// A map key: DAG-CBOR allows only strings, written as a JSON string.
struct Key<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string map key")
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_str(self.0, v);
        Ok(())
    }
}

/// Receives the bytes of a CID (without the 0x00 multibase prefix) and writes `{"$link":…}`.
struct CidLink<'o>(&'o mut Vec<u8>);

impl Visitor<'_> for CidLink<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("CID bytes")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
        if crate::cid::cid_len(v) != Some(v.len()) {
            return Err(E::custom("malformed CID link"));
        }
        self.0.extend_from_slice(b"{\"$link\":\"");
        crate::cid::write_str(self.0, v);
        self.0.extend_from_slice(b"\"}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// The atproto interop data-model vectors: CBOR in, the given JSON out.
    #[test]
    fn interop_data_model_vectors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/atproto-interop-tests/data-model/data-model-fixtures.json");
        let text = std::fs::read_to_string(path).expect("fixture");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).expect("json");
        assert!(!vectors.is_empty());
        for v in vectors {
            let cbor = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(v["cbor_base64"].as_str().expect("cbor_base64"))
                .expect("base64");
            let mut out = Vec::new();
            transcode(&cbor, &mut out).expect("transcode");
            let got: serde_json::Value = serde_json::from_slice(&out).expect("our JSON parses");
            assert_eq!(got, v["json"], "vector {}", v["cid"]);
        }
    }

    #[test]
    fn escapes_control_characters() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(
            serde_json::from_slice::<String>(&out).expect("valid"),
            "a\"b\\c\n\u{1}é"
        );
    }

    #[test]
    fn rejects_trailing_bytes_and_non_canonical_input() {
        let mut out = Vec::new();
        // {"a":1} followed by a stray byte.
        assert!(transcode(&[0xa1, 0x61, 0x61, 0x01, 0x00], &mut out).is_err());
        // Non-minimal integer: 1 encoded on two bytes.
        assert!(transcode(&[0x18, 0x01], &mut out).is_err());
        assert!(out.is_empty());
    }
}
