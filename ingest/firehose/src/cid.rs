//! Binary CIDs: measuring, checking, computing and printing them without allocating a
//! `Cid` value. The one CID check ([`verify`]) and the one base32 table of the workspace.
//!
//! atproto uses CIDv1 (`dag-cbor` 0x71 or `raw` 0x55, sha2-256), printed as base32
//! multibase (`b…`); CIDv0 (`Qm…`, base58btc) is accepted for completeness.

use crate::varint;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Write;

/// Multicodec of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// A multihash inside a CID.
pub struct Multihash<'a> {
    pub code: u64,
    pub digest: &'a [u8],
}

/// Length in bytes of the CID at the start of `buf`, if one is there.
pub fn cid_len(buf: &[u8]) -> Option<usize> {
    if buf.len() >= 34 && buf[0] == 0x12 && buf[1] == 0x20 {
        return Some(34);
    }
    let mut pos = 0;
    let version = varint::read(buf, &mut pos)?;
    if version != 1 {
        return None;
    }
    let _codec = varint::read(buf, &mut pos)?;
    let _code = varint::read(buf, &mut pos)?;
    let len = usize::try_from(varint::read(buf, &mut pos)?).ok()?;
    let end = pos.checked_add(len)?;
    (end <= buf.len()).then_some(end)
}

/// The multihash of a whole CID (`cid` must be exactly one CID).
pub fn multihash(cid: &[u8]) -> Option<Multihash<'_>> {
    if cid.len() == 34 && cid[0] == 0x12 && cid[1] == 0x20 {
        return Some(Multihash {
            code: 0x12,
            digest: &cid[2..],
        });
    }
    let mut pos = 0;
    if varint::read(cid, &mut pos)? != 1 {
        return None;
    }
    varint::read(cid, &mut pos)?;
    let code = varint::read(cid, &mut pos)?;
    let len = usize::try_from(varint::read(cid, &mut pos)?).ok()?;
    let digest = cid.get(pos..)?;
    (digest.len() == len).then_some(Multihash { code, digest })
}

/// Writes the CID's canonical string form (base32 `b…` for v1, base58btc for v0).
pub fn write_str(out: &mut Vec<u8>, cid: &[u8]) {
    if cid.len() == 34 && cid[0] == 0x12 && cid[1] == 0x20 {
        write_base58(out, cid);
    } else {
        out.push(b'b');
        write_base32(out, cid);
    }
}

/// The CID's canonical string form.
pub fn to_string(cid: &[u8]) -> String {
    let mut out = Vec::with_capacity(cid.len() * 8 / 5 + 2);
    write_str(&mut out, cid);
    String::from_utf8(out).unwrap_or_default()
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lowercase, no padding (multibase `b` without the prefix).
pub fn write_base32(out: &mut Vec<u8>, data: &[u8]) {
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in data {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize]);
        }
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize]);
    }
}

const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn write_base58(out: &mut Vec<u8>, data: &[u8]) {
    let zeros = data.iter().take_while(|b| **b == 0).count();
    let mut digits: Vec<u8> = Vec::with_capacity(data.len() * 138 / 100 + 1);
    for &b in &data[zeros..] {
        let mut carry = u32::from(b);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let _ = out.write_all(&vec![b'1'; zeros]);
    out.extend(digits.iter().rev().map(|d| BASE58[*d as usize]));
}

/// The binary CIDv1 (dag-cbor, sha2-256) of a DAG-CBOR block: `01 71 12 20` + digest.
pub fn dag_cbor_cid(block: &[u8]) -> [u8; 36] {
    let mut out = [0u8; 36];
    out[..4].copy_from_slice(&[0x01, DAG_CBOR as u8, SHA2_256 as u8, 0x20]);
    out[4..].copy_from_slice(&Sha256::digest(block));
    out
}

/// Why a block does not match its CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// The block's bytes do not hash to its CID.
    Mismatch,
    /// A hash function other than sha2-256 (or not a CID at all).
    Unsupported,
}

/// Whether `data` hashes to the digest named by `cid` (CIDv1 or v0, sha2-256 only).
pub fn verify(cid: &[u8], data: &[u8]) -> Result<(), VerifyError> {
    let mh = multihash(cid).ok_or(VerifyError::Unsupported)?;
    if mh.code != SHA2_256 || mh.digest.len() != 32 {
        return Err(VerifyError::Unsupported);
    }
    if Sha256::digest(data).as_slice() == mh.digest {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// A CID link (DAG-CBOR tag 42) as its raw bytes, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidRef<'a>(pub &'a [u8]);

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
                if cid_len(v) == Some(v.len()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_round_trip_of_a_known_cid() {
        // CID of shrike-fixtures/record_like.cbor (PROVENANCE.md), recomputed here.
        let data = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures/shrike-fixtures/record_like.cbor"),
        )
        .expect("fixture");
        let cid = dag_cbor_cid(&data).to_vec();
        assert_eq!(verify(&cid, &data), Ok(()));
        assert_eq!(verify(&cid, b"other"), Err(VerifyError::Mismatch));
        assert_eq!(cid_len(&cid), Some(36));
        assert_eq!(
            to_string(&cid),
            "bafyreifv4q2xyw3gwov66uyzfo4ryccvar6v5sjm524ivdzwrdi27gqu24"
        );
        assert_eq!(multihash(&cid).map(|m| m.code), Some(0x12));
    }

    #[test]
    fn base58_v0() {
        let mut cid = vec![0x12, 0x20];
        cid.extend_from_slice(&[0u8; 32]);
        assert_eq!(
            to_string(&cid),
            "QmNLei78zWmzUdbeRB3CiUfAizWUrbeeZh5K1rhAQKCh51"
        );
    }

    #[test]
    fn rejects_truncated() {
        assert_eq!(cid_len(&[0x01, 0x71, 0x12, 0x20, 1, 2]), None);
        assert_eq!(cid_len(&[]), None);
    }
}
