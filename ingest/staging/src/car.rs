//! The bits of CARv1 (content-addressed archive) the staging relay needs: reading a
//! repository export (for [`crate::synth`]) and writing the `blocks` CAR slices of
//! synthesized frames.
//!
//! Layout: `[varint header length][DAG-CBOR {roots, version: 1}]` then blocks
//! `[varint length][CID bytes][block bytes]`. Every length is checked against what remains
//! before it is used.

use cid::Cid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Multicodec of DAG-CBOR.
pub const DAG_CBOR: u64 = 0x71;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Largest CAR header accepted.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Why a CAR could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// A varint runs past the data or past 64 bits.
    #[error("bad varint at byte {0}")]
    Varint(usize),
    /// A length points past the end of the data.
    #[error("at byte {offset}: length {len} exceeds the {remaining} bytes left")]
    Truncated {
        /// Where the length was read.
        offset: usize,
        /// The length.
        len: u64,
        /// Bytes left.
        remaining: usize,
    },
    /// The header is too large or not `{roots, version: 1}`.
    #[error("bad CAR header: {0}")]
    Header(String),
    /// A block's CID does not parse.
    #[error("bad CID at byte {offset}: {reason}")]
    Cid {
        /// Where the block starts.
        offset: usize,
        /// The parser's message.
        reason: String,
    },
}

/// One block of a CAR, borrowed from the CAR bytes.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    /// The block's CID.
    pub cid: Cid,
    /// The CID's binary form, as it appears in the CAR.
    pub cid_bytes: &'a [u8],
    /// The block's bytes.
    pub data: &'a [u8],
}

#[derive(Deserialize, Serialize)]
struct Header {
    roots: Vec<Cid>,
    version: u64,
}

/// Reads a CARv1: its roots and its blocks, in file order.
pub fn read(buf: &[u8]) -> Result<(Vec<Cid>, Vec<Block<'_>>), CarError> {
    let mut pos = 0;
    let header_len = read_len(buf, &mut pos)?;
    if header_len > MAX_HEADER_BYTES {
        return Err(CarError::Header(format!("{header_len} bytes")));
    }
    let header: Header = serde_ipld_dagcbor::from_slice(&buf[pos..pos + header_len])
        .map_err(|e| CarError::Header(e.to_string()))?;
    if header.version != 1 {
        return Err(CarError::Header(format!("version {}", header.version)));
    }
    pos += header_len;
    let mut blocks = Vec::new();
    while pos < buf.len() {
        let len = read_len(buf, &mut pos)?;
        let section = &buf[pos..pos + len];
        let mut rest = section;
        let cid = Cid::read_bytes(&mut rest).map_err(|e| CarError::Cid {
            offset: pos,
            reason: e.to_string(),
        })?;
        let cid_len = section.len() - rest.len();
        blocks.push(Block {
            cid,
            cid_bytes: &section[..cid_len],
            data: rest,
        });
        pos += len;
    }
    Ok((header.roots, blocks))
}

/// Reads a varint length at `*pos` and checks it against the bytes after it.
fn read_len(buf: &[u8], pos: &mut usize) -> Result<usize, CarError> {
    let start = *pos;
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos).ok_or(CarError::Varint(start))?;
        *pos += 1;
        if shift >= 64 || (shift == 63 && b > 1) {
            return Err(CarError::Varint(start));
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let remaining = buf.len() - *pos;
    match usize::try_from(v) {
        Ok(len) if len <= remaining => Ok(len),
        _ => Err(CarError::Truncated {
            offset: start,
            len: v,
            remaining,
        }),
    }
}

/// Appends an unsigned LEB128 varint.
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a CAR header `{roots, version: 1}` (with its varint length).
pub fn write_header(out: &mut Vec<u8>, roots: &[Cid]) {
    let header = Header {
        roots: roots.to_vec(),
        version: 1,
    };
    // A Vec<Cid> and an integer always serialize.
    let bytes = serde_ipld_dagcbor::to_vec(&header).unwrap_or_default();
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(&bytes);
}

/// Appends one block section `[varint len][cid][data]`.
pub fn write_block(out: &mut Vec<u8>, cid_bytes: &[u8], data: &[u8]) {
    write_varint(out, (cid_bytes.len() + data.len()) as u64);
    out.extend_from_slice(cid_bytes);
    out.extend_from_slice(data);
}

/// The binary CIDv1 (dag-cbor, sha2-256) of `data`: `01 71 12 20` + digest.
pub fn dag_cbor_cid_bytes(data: &[u8]) -> [u8; 36] {
    let digest = Sha256::digest(data);
    let mut out = [0u8; 36];
    out[..4].copy_from_slice(&[0x01, DAG_CBOR as u8, SHA2_256 as u8, 0x20]);
    out[4..].copy_from_slice(&digest);
    out
}

/// Parses a binary CID produced by [`dag_cbor_cid_bytes`] (or any valid CID).
pub fn cid_from_bytes(bytes: &[u8]) -> Option<Cid> {
    Cid::try_from(bytes).ok()
}

/// Whether `cid` is the sha2-256 CID of `data` (for either CID version and codec).
pub fn cid_matches(cid: &Cid, data: &[u8]) -> bool {
    cid.hash().code() == SHA2_256 && cid.hash().digest() == Sha256::digest(data).as_slice()
}
