//! The frame bodies, as the real relay lays them out (field names and optional fields as in
//! the production corpus), the commit block, and the one way a frame is written: message
//! header, then body.

use cid::Cid;
use serde::Serialize;

use crate::frame;

/// An op's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    /// The action as the frame spells it.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

/// A commit's op: `cid` is null on delete, `prev` present on update and delete.
#[derive(Serialize)]
pub(super) struct OpOut {
    pub(super) action: Action,
    pub(super) cid: Option<Cid>,
    pub(super) path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) prev: Option<Cid>,
}

/// `#commit`.
#[derive(Serialize)]
pub(super) struct CommitBody<'a> {
    pub(super) ops: &'a [OpOut],
    pub(super) rev: &'a str,
    pub(super) seq: u64,
    pub(super) repo: &'a str,
    pub(super) time: &'a str,
    pub(super) blobs: &'a [Cid],
    #[serde(with = "serde_bytes")]
    pub(super) blocks: &'a [u8],
    pub(super) commit: Cid,
    pub(super) rebase: bool,
    pub(super) since: Option<&'a str>,
    #[serde(rename = "tooBig")]
    pub(super) too_big: bool,
    #[serde(rename = "prevData", skip_serializing_if = "Option::is_none")]
    pub(super) prev_data: Option<Cid>,
}

/// `#identity`.
#[derive(Serialize)]
pub(super) struct IdentityBody<'a> {
    pub(super) did: &'a str,
    pub(super) seq: u64,
    pub(super) time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) handle: Option<&'a str>,
}

/// `#account`.
#[derive(Serialize)]
pub(super) struct AccountBody<'a> {
    pub(super) did: &'a str,
    pub(super) seq: u64,
    pub(super) time: &'a str,
    pub(super) active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) status: Option<&'a str>,
}

/// `#sync`.
#[derive(Serialize)]
pub(super) struct SyncBody<'a> {
    pub(super) did: &'a str,
    pub(super) rev: &'a str,
    pub(super) seq: u64,
    pub(super) time: &'a str,
    #[serde(with = "serde_bytes")]
    pub(super) blocks: &'a [u8],
}

/// Writes a whole frame into `out`: the `#kind` message header, then `body`.
pub(super) fn write_frame(out: &mut Vec<u8>, kind: &str, body: &impl Serialize) {
    frame::write_message_header(out, kind);
    // Writing into a Vec cannot fail, and these bodies always encode.
    let _ = serde_ipld_dagcbor::to_writer(out, body);
}

/// The repository commit block (`prev: null`, `version: 3`).
#[derive(Serialize)]
struct CommitBlock<'a> {
    did: &'a str,
    rev: &'a str,
    sig: &'a serde_bytes::Bytes,
    data: Cid,
    prev: Option<Cid>,
    version: u64,
}

/// An encoded commit block with its real sha2-256 CID.
pub(super) struct EncodedCommit {
    pub(super) cid: Cid,
    pub(super) cid_bytes: [u8; 36],
    pub(super) bytes: Vec<u8>,
}

/// Encodes and hashes the commit block of `did` at `rev` whose MST root is `data`.
pub(super) fn commit_block(did: &str, rev: &str, data: Cid, sig: &[u8; 64]) -> EncodedCommit {
    let block = CommitBlock {
        did,
        rev,
        sig: serde_bytes::Bytes::new(sig),
        data,
        prev: None,
        version: 3,
    };
    let bytes = serde_ipld_dagcbor::to_vec(&block).unwrap_or_default();
    let cid_bytes = firehose::cid::dag_cbor_cid(&bytes);
    let cid = Cid::try_from(&cid_bytes[..]).unwrap_or_default();
    EncodedCommit {
        cid,
        cid_bytes,
        bytes,
    }
}
