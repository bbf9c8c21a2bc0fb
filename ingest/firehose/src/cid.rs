//! Binary CIDs: measuring, splitting and printing them without allocating a `Cid` value.
//!
//! atproto uses CIDv1 (`dag-cbor` 0x71 or `raw` 0x55, sha2-256), printed as base32
//! multibase (`b…`); CIDv0 (`Qm…`, base58btc) is accepted for completeness.

use std::io::Write;

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
    let version = varint(buf, &mut pos)?;
    if version != 1 {
        return None;
    }
    let _codec = varint(buf, &mut pos)?;
    let _code = varint(buf, &mut pos)?;
    let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
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
    if varint(cid, &mut pos)? != 1 {
        return None;
    }
    varint(cid, &mut pos)?;
    let code = varint(cid, &mut pos)?;
    let len = usize::try_from(varint(cid, &mut pos)?).ok()?;
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

/// RFC 4648 base32, lowercase, no padding.
fn write_base32(out: &mut Vec<u8>, data: &[u8]) {
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

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
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
        use sha2::Digest;
        let mut cid = vec![0x01, 0x71, 0x12, 0x20];
        cid.extend_from_slice(&sha2::Sha256::digest(&data));
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
