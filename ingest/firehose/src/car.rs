//! CARv1 (content-addressed archive): the one CAR reader and writer of the workspace.
//!
//! Layout: `varint(header_len) header(DAG-CBOR {roots, version: 1}) { varint(len) cid data }*`.
//!
//! Two ways in, one walk ([`sections`]):
//! - [`Blocks::parse`], on the decoder's hot path: a commit's `blocks` slice, indexed for
//!   lookup by CID. The header is skipped by its length (ops name their records by CID, so
//!   the roots are not needed); blocks are sub-slices of the frame, nothing is copied.
//! - [`read`], for whole files (a repository export): the header is decoded and checked
//!   (`version` 1, `roots` are CIDs), blocks come back in file order.
//!
//! Why not iroh-car on the hot path: its reader is async over tokio's `AsyncRead` and copies
//! every block into a fresh `Vec`. The decoder benchmark (`ingest/bench/benches/decode.rs`,
//! `car/iroh-car` against `car/slice`) measured it 9.4x slower than this walk on the real
//! commits, which would add roughly half to decode time.

use crate::cid::{cid_len, CidRef};
use crate::{cbor, varint};
use serde::Deserialize;

/// What went wrong while walking a CAR; a frame carrying it is skipped.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CarError {
    /// A length points past the end of the data.
    #[error("CAR truncated at byte {0}")]
    Truncated(usize),
    /// A varint is malformed.
    #[error("CAR varint malformed at byte {0}")]
    Varint(usize),
    /// A block does not start with a CID.
    #[error("CAR block at byte {0} has a malformed CID")]
    Cid(usize),
    /// The header is not `{roots: [CID…], version}`.
    #[error("CAR header is not {{roots, version}}")]
    Header(#[source] cbor::DecodeError),
    /// The header names a version other than 1.
    #[error("CAR version {0}, only 1 is read")]
    Version(u64),
}

/// One block: its CID bytes and its data, both borrowed from the CAR.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    /// The CID, binary.
    pub cid: &'a [u8],
    /// The block's bytes.
    pub data: &'a [u8],
}

/// Walks the sections after the header: (header bytes, blocks in file order).
pub fn sections(car: &[u8]) -> Result<(&[u8], Vec<Block<'_>>), CarError> {
    let mut pos = 0;
    let header_len = varint::read(car, &mut pos).ok_or(CarError::Varint(0))?;
    let header_end =
        cbor::checked_end(car, pos, header_len).map_err(|_| CarError::Truncated(pos))?;
    let header = &car[pos..header_end];
    pos = header_end;
    let mut blocks = Vec::new();
    while pos < car.len() {
        let start = pos;
        let len = varint::read(car, &mut pos).ok_or(CarError::Varint(start))?;
        let end = cbor::checked_end(car, pos, len).map_err(|_| CarError::Truncated(pos))?;
        let section = &car[pos..end];
        let cid_len = cid_len(section).ok_or(CarError::Cid(start))?;
        let (cid, data) = section.split_at(cid_len);
        blocks.push(Block { cid, data });
        pos = end;
    }
    Ok((header, blocks))
}

/// A whole CAR: its roots and its blocks in file order.
#[derive(Debug)]
pub struct Car<'a> {
    /// The root CIDs, binary.
    pub roots: Vec<&'a [u8]>,
    /// Every block.
    pub blocks: Vec<Block<'a>>,
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    roots: Vec<CidRef<'a>>,
    version: u64,
}

/// Reads a whole CAR, checking its header.
pub fn read(car: &[u8]) -> Result<Car<'_>, CarError> {
    let (header, blocks) = sections(car)?;
    let h: Header =
        serde_ipld_dagcbor::from_slice(header).map_err(|e| CarError::Header(e.into()))?;
    if h.version != 1 {
        return Err(CarError::Version(h.version));
    }
    Ok(Car {
        roots: h.roots.into_iter().map(|c| c.0).collect(),
        blocks,
    })
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
    /// Walks the whole slice once (see the module docs: the header is skipped).
    pub fn parse(car: &'a [u8]) -> Result<Self, CarError> {
        let (_header, blocks) = sections(car)?;
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

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// No blocks at all.
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

/// Appends a CAR header `{roots, version: 1}` (with its varint length).
pub fn write_header(out: &mut Vec<u8>, roots: &[&[u8]]) {
    let mut h = Vec::with_capacity(24 + roots.len() * 42);
    cbor::write_head(&mut h, 5, 2); // map of 2, keys in canonical order
    cbor::write_head(&mut h, 3, 5);
    h.extend_from_slice(b"roots");
    cbor::write_head(&mut h, 4, roots.len() as u64);
    for cid in roots {
        cbor::write_head(&mut h, 6, 42);
        cbor::write_head(&mut h, 2, cid.len() as u64 + 1);
        h.push(0); // the multibase "identity" prefix DAG-CBOR puts before a CID
        h.extend_from_slice(cid);
    }
    cbor::write_head(&mut h, 3, 7);
    h.extend_from_slice(b"version");
    cbor::write_head(&mut h, 0, 1);
    varint::write(out, h.len() as u64);
    out.extend_from_slice(&h);
}

/// Appends one block section `[varint len][cid][data]`.
pub fn write_block(out: &mut Vec<u8>, cid: &[u8], data: &[u8]) {
    varint::write(out, (cid.len() + data.len()) as u64);
    out.extend_from_slice(cid);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::dag_cbor_cid;

    #[test]
    fn written_cars_read_back() {
        let a = b"\xa1\x61a\x01".to_vec();
        let b = b"\xa1\x61b\x02".to_vec();
        let (ca, cb) = (dag_cbor_cid(&a), dag_cbor_cid(&b));
        let mut car = Vec::new();
        write_header(&mut car, &[&ca[..]]);
        write_block(&mut car, &ca, &a);
        write_block(&mut car, &cb, &b);
        let read = read(&car).expect("reads");
        assert_eq!(read.roots, vec![&ca[..]]);
        assert_eq!(read.blocks.len(), 2);
        assert_eq!((read.blocks[1].cid, read.blocks[1].data), (&cb[..], &b[..]));
        let index = Blocks::parse(&car).expect("parses");
        assert_eq!(index.get(&ca), Some(&a[..]));
        assert_eq!(index.get(&[1, 2, 3]), None);
        assert!(matches!(
            Blocks::parse(&car[..car.len() - 1]),
            Err(CarError::Truncated(_))
        ));
    }

    #[test]
    fn the_header_is_checked_by_read_only() {
        let mut car = Vec::new();
        varint::write(&mut car, 1);
        car.push(0xa0); // {}: no roots, no version
        assert!(Blocks::parse(&car).is_ok());
        let Err(e) = read(&car) else {
            panic!("a header without roots and version is refused")
        };
        assert!(matches!(e, CarError::Header(_)));
        assert!(
            std::error::Error::source(&e).is_some(),
            "keeps the decoder's error"
        );
    }
}
