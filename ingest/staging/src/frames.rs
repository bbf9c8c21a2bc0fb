//! Firehose frames built from the `com.atproto.sync.subscribeRepos` lexicon, for tests.
//!
//! Real captures have no `#sync`, `#info`, error frames, `tooBig` commits, 200-op commits
//! or 5 MB frames; these builders make them, in canonical DAG-CBOR (serde_ipld_dagcbor
//! sorts map keys), with real CIDs (sha2-256 of each block). CAR slices and CIDs come from
//! `firehose::car` and `firehose::cid`, the control frames from [`crate::frame`], so tests,
//! relay and decoder agree.

pub use crate::frame::{error_frame, info_frame};
use ipld_core::cid::Cid;
use ipld_core::ipld::Ipld;
use std::collections::BTreeMap;

/// A map from string keys, the only kind DAG-CBOR allows.
pub fn map<const N: usize>(entries: [(&str, Ipld); N]) -> Ipld {
    Ipld::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// A string value.
pub fn s(v: &str) -> Ipld {
    Ipld::String(v.to_string())
}

/// Canonical DAG-CBOR bytes of a value.
pub fn cbor(v: &Ipld) -> Vec<u8> {
    serde_ipld_dagcbor::to_vec(v).unwrap_or_default()
}

/// The CIDv1 (dag-cbor, sha2-256) of a block.
pub fn cid_of(block: &[u8]) -> Cid {
    let bytes = firehose::cid::dag_cbor_cid(block);
    Cid::try_from(&bytes[..]).unwrap_or_default()
}

/// A CARv1 slice: header with `roots` then each block as `varint(len) cid data`.
pub fn car(roots: &[Cid], blocks: &[(Cid, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let roots: Vec<Vec<u8>> = roots.iter().map(Cid::to_bytes).collect();
    let roots: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    firehose::car::write_header(&mut out, &roots);
    for (cid, data) in blocks {
        firehose::car::write_block(&mut out, &cid.to_bytes(), data);
    }
    out
}

/// A frame: header `{op, t}` followed by the body.
pub fn frame(t: &str, body: &Ipld) -> Vec<u8> {
    let mut out = cbor(&map([("op", Ipld::Integer(1)), ("t", s(t))]));
    out.extend_from_slice(&cbor(body));
    out
}

/// `#identity` with a handle.
pub fn identity_frame(seq: i64, did: &str, time: &str, handle: &str) -> Vec<u8> {
    frame(
        "#identity",
        &map([
            ("seq", Ipld::Integer(seq.into())),
            ("did", s(did)),
            ("time", s(time)),
            ("handle", s(handle)),
        ]),
    )
}

/// `#account`; `status` only when given.
pub fn account_frame(
    seq: i64,
    did: &str,
    time: &str,
    active: bool,
    status: Option<&str>,
) -> Vec<u8> {
    let mut m = BTreeMap::new();
    m.insert("seq".to_string(), Ipld::Integer(seq.into()));
    m.insert("did".to_string(), s(did));
    m.insert("time".to_string(), s(time));
    m.insert("active".to_string(), Ipld::Bool(active));
    if let Some(st) = status {
        m.insert("status".to_string(), s(st));
    }
    frame("#account", &Ipld::Map(m))
}

/// `#sync`: the repo's current commit, carried as a one-block CAR.
pub fn sync_frame(seq: i64, did: &str, rev: &str, time: &str) -> Vec<u8> {
    let commit = commit_block(did, rev, &cid_of(b"data"));
    let commit_cid = cid_of(&commit);
    frame(
        "#sync",
        &map([
            ("seq", Ipld::Integer(seq.into())),
            ("did", s(did)),
            ("rev", s(rev)),
            ("time", s(time)),
            (
                "blocks",
                Ipld::Bytes(car(&[commit_cid], &[(commit_cid, commit)])),
            ),
        ]),
    )
}

fn commit_block(did: &str, rev: &str, data: &Cid) -> Vec<u8> {
    cbor(&map([
        ("did", s(did)),
        ("version", Ipld::Integer(3)),
        ("data", Ipld::Link(*data)),
        ("rev", s(rev)),
        ("prev", Ipld::Null),
        ("sig", Ipld::Bytes(vec![7; 64])),
    ]))
}

/// One op of a commit under construction.
#[derive(Clone, Debug)]
pub struct Op {
    /// `create`, `update` or `delete` (or anything else, to test rejection).
    pub action: &'static str,
    /// `collection/rkey`.
    pub path: String,
    /// The record for create/update (DAG-CBOR value); `None` for delete.
    pub record: Option<Ipld>,
}

impl Op {
    /// A create of `record` at `path`.
    pub fn create(path: impl Into<String>, record: Ipld) -> Op {
        Op {
            action: "create",
            path: path.into(),
            record: Some(record),
        }
    }
    /// A delete at `path`.
    pub fn delete(path: impl Into<String>) -> Op {
        Op {
            action: "delete",
            path: path.into(),
            record: None,
        }
    }
}

/// A post record with `text`.
pub fn post(text: &str) -> Ipld {
    map([
        ("$type", s("app.bsky.feed.post")),
        ("text", s(text)),
        ("createdAt", s("2026-07-04T14:38:06.240Z")),
    ])
}

/// A `#commit` frame. With `too_big`, the blocks are left out (pre-Sync-1.1 relays did
/// that when a commit was too large to carry).
pub fn commit_frame(
    seq: i64,
    did: &str,
    rev: &str,
    time: &str,
    ops: &[Op],
    too_big: bool,
) -> Vec<u8> {
    let mut blocks = Vec::new();
    let mut op_values = Vec::new();
    for op in ops {
        let cid = op.record.as_ref().map(|r| {
            let bytes = cbor(r);
            let cid = cid_of(&bytes);
            blocks.push((cid, bytes));
            cid
        });
        op_values.push(map([
            ("action", s(op.action)),
            ("path", s(&op.path)),
            ("cid", cid.map_or(Ipld::Null, Ipld::Link)),
        ]));
    }
    let commit = commit_block(did, rev, &cid_of(rev.as_bytes()));
    let commit_cid = cid_of(&commit);
    blocks.insert(0, (commit_cid, commit));
    let car_bytes = if too_big {
        Vec::new()
    } else {
        car(&[commit_cid], &blocks)
    };
    frame(
        "#commit",
        &map([
            ("seq", Ipld::Integer(seq.into())),
            ("rebase", Ipld::Bool(false)),
            ("tooBig", Ipld::Bool(too_big)),
            ("repo", s(did)),
            ("commit", Ipld::Link(commit_cid)),
            ("rev", s(rev)),
            ("since", Ipld::Null),
            ("blocks", Ipld::Bytes(car_bytes)),
            ("ops", Ipld::List(op_values)),
            ("blobs", Ipld::List(Vec::new())),
            ("time", s(time)),
        ]),
    )
}

/// Frames as an uncompressed capture file (`[u32 LE length][frame]…`).
pub fn capture(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut w = match crate::capture::CaptureWriter::new(Vec::new(), None) {
        Ok(w) => w,
        Err(_) => return Vec::new(), // an uncompressed Vec writer cannot fail
    };
    for f in frames {
        if w.write_frame(f).is_err() {
            return Vec::new(); // only a frame above MAX_RECEIVED_FRAME_BYTES fails: tests see it empty
        }
    }
    w.finish().unwrap_or_default()
}

/// `frame` with the first occurrence of `from` replaced by `to` (same length, so the CBOR
/// stays well-formed). In a commit body `ops` sorts before `blocks` (canonical key order),
/// so the first occurrence of a path or a CID is the op's, not the CAR's.
pub fn replace_first(frame: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.len() != to.len() {
        return None;
    }
    let at = frame.windows(from.len()).position(|w| w == from)?;
    let mut out = frame.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    Some(out)
}
