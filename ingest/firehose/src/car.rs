//! Zero-copy reader for the CAR slice carried in a commit's `blocks` field.
//!
//! Why not iroh-car here: its reader is async over tokio's `AsyncRead` and copies every
//! block into a fresh `Vec`. The decoder benchmark (`benches/decode.rs`, `car/iroh-car`
//! against `car/slice`) measured it 9.4x slower than this walk on the real commits,
//! about 0.6x of the whole per-frame decode: it would add roughly half to decode time. A commit's CAR is already in memory, so we only need to walk it: blocks are
//! returned as sub-slices of the frame, nothing is allocated but the index. iroh-car stays
//! the tool for whole CAR files (the staging synthesizer).
//!
//! Layout: `varint(header_len) header(DAG-CBOR {roots, version}) { varint(len) cid data }*`.

use crate::cid::cid_len;
use sha2::{Digest, Sha256};

/// What went wrong while walking a CAR slice; the frame is skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CarError {
    #[error("CAR truncated at byte {0}")]
    Truncated(usize),
    #[error("CAR varint malformed at byte {0}")]
    Varint(usize),
    #[error("CAR block at byte {0} has a malformed CID")]
    Cid(usize),
}

/// One block: its CID bytes and its data, both borrowed from the frame.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    pub cid: &'a [u8],
    pub data: &'a [u8],
}

/// Blocks of one CAR slice, indexed for lookup by CID.
#[derive(Debug, Default)]
pub struct Blocks<'a> {
    blocks: Vec<Block<'a>>,
    sorted: bool,
}

/// Above this many blocks, lookups sort once and binary-search instead of scanning.
const LINEAR_MAX: usize = 24;

impl<'a> Blocks<'a> {
    /// Walks the whole slice once; the header is checked for shape only (the roots are
    /// not needed: ops name their records by CID).
    pub fn parse(car: &'a [u8]) -> Result<Self, CarError> {
        let mut pos = 0;
        let header_len = read_varint(car, &mut pos)?;
        pos = advance(car, pos, header_len)?;
        let mut blocks = Vec::new();
        while pos < car.len() {
            let start = pos;
            let len = read_varint(car, &mut pos)?;
            let end = advance(car, pos, len)?;
            let section = &car[pos..end];
            let cid_len = cid_len(section).ok_or(CarError::Cid(start))?;
            let (cid, data) = section.split_at(cid_len);
            blocks.push(Block { cid, data });
            pos = end;
        }
        let mut this = Blocks {
            blocks,
            sorted: false,
        };
        if this.blocks.len() > LINEAR_MAX {
            this.blocks.sort_unstable_by(|a, b| a.cid.cmp(b.cid));
            this.sorted = true;
        }
        Ok(this)
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The data of the block whose CID bytes equal `cid`.
    pub fn get(&self, cid: &[u8]) -> Option<&'a [u8]> {
        if self.sorted {
            self.blocks
                .binary_search_by(|b| b.cid.cmp(cid))
                .ok()
                .map(|i| self.blocks[i].data)
        } else {
            self.blocks.iter().find(|b| b.cid == cid).map(|b| b.data)
        }
    }
}

/// Whether `data` hashes to the digest named by `cid` (CIDv1 or v0, sha2-256 only).
pub fn verify(cid: &[u8], data: &[u8]) -> Result<(), VerifyError> {
    let mh = crate::cid::multihash(cid).ok_or(VerifyError::Unsupported)?;
    if mh.code != 0x12 || mh.digest.len() != 32 {
        return Err(VerifyError::Unsupported);
    }
    if Sha256::digest(data).as_slice() == mh.digest {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The block's bytes do not hash to its CID.
    Mismatch,
    /// A hash function other than sha2-256.
    Unsupported,
}

/// Reads an unsigned LEB128 varint (at most 9 bytes, as multiformats allows).
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<usize, CarError> {
    let start = *pos;
    let mut value: u64 = 0;
    for i in 0..9 {
        let byte = *buf.get(*pos).ok_or(CarError::Truncated(*pos))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return usize::try_from(value).map_err(|_| CarError::Varint(start));
        }
    }
    Err(CarError::Varint(start))
}

fn advance(buf: &[u8], pos: usize, len: usize) -> Result<usize, CarError> {
    let end = pos.checked_add(len).ok_or(CarError::Truncated(pos))?;
    if end > buf.len() {
        return Err(CarError::Truncated(pos));
    }
    Ok(end)
}
