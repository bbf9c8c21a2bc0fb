//! Why input is skipped: the closed set of reasons ([`SkipReason`], one metric label
//! each) and the frame-level error that carries one ([`FrameError`]).

use crate::{car, cbor};
use contract::limits::MAX_OPS;

/// Every reason a frame or an op can be skipped for: a closed set, for metric labels.
/// The decoder gives the first seventeen; the ingestor adds the last three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// Frame: DAG-CBOR ends early.
    Truncated,
    /// Frame: not canonical DAG-CBOR, or a required field missing or of the wrong type.
    MalformedCbor,
    /// Frame: header `t` this version does not know.
    UnknownType,
    /// Frame: header `op` other than 1 or -1.
    UnknownOp,
    /// Frame: the commit's `blocks` is not a CAR.
    BadCar,
    /// Frame: `time` is not an RFC 3339 datetime.
    BadTime,
    /// Frame: `repo`/`did` is not a DID.
    BadDid,
    /// Frame: more ops than the protocol's [`MAX_OPS`].
    TooManyOps,
    /// Op: path is not `collection/rkey`.
    BadPath,
    /// Op: collection is not an NSID.
    InvalidCollection,
    /// Op: record key syntax.
    InvalidRkey,
    /// Op: action other than create/update/delete.
    UnknownAction,
    /// Op: create/update without a CID.
    MissingCid,
    /// Op: the record's block is not in the CAR (and the commit is not tooBig).
    MissingBlock,
    /// Op: the block does not hash to its CID.
    CidMismatch,
    /// Op: a hash other than sha2-256.
    UnsupportedCid,
    /// Op: the record block is not DAG-CBOR.
    BadRecord,
    /// Frame (ingestor): above `relay.max_frame_bytes`.
    FrameTooLarge,
    /// Frame (ingestor): seq not above the last one read.
    StaleSeq,
    /// Op (ingestor): the message is above the server's `max_payload`.
    TooLargeForNats,
}

impl SkipReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [SkipReason; 20] = [
        SkipReason::Truncated,
        SkipReason::MalformedCbor,
        SkipReason::UnknownType,
        SkipReason::UnknownOp,
        SkipReason::BadCar,
        SkipReason::BadTime,
        SkipReason::BadDid,
        SkipReason::TooManyOps,
        SkipReason::BadPath,
        SkipReason::InvalidCollection,
        SkipReason::InvalidRkey,
        SkipReason::UnknownAction,
        SkipReason::MissingCid,
        SkipReason::MissingBlock,
        SkipReason::CidMismatch,
        SkipReason::UnsupportedCid,
        SkipReason::BadRecord,
        SkipReason::FrameTooLarge,
        SkipReason::StaleSeq,
        SkipReason::TooLargeForNats,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Truncated => "truncated",
            SkipReason::MalformedCbor => "malformed_cbor",
            SkipReason::UnknownType => "unknown_type",
            SkipReason::UnknownOp => "unknown_op",
            SkipReason::BadCar => "bad_car",
            SkipReason::BadTime => "bad_time",
            SkipReason::BadDid => "bad_did",
            SkipReason::TooManyOps => "too_many_ops",
            SkipReason::BadPath => "bad_path",
            SkipReason::InvalidCollection => "invalid_collection",
            SkipReason::InvalidRkey => "invalid_rkey",
            SkipReason::UnknownAction => "unknown_action",
            SkipReason::MissingCid => "missing_cid",
            SkipReason::MissingBlock => "missing_block",
            SkipReason::CidMismatch => "cid_mismatch",
            SkipReason::UnsupportedCid => "unsupported_cid",
            SkipReason::BadRecord => "bad_record",
            SkipReason::FrameTooLarge => "frame_too_large",
            SkipReason::StaleSeq => "stale_seq",
            SkipReason::TooLargeForNats => "too_large_for_nats",
        }
    }
}

/// Why a whole frame was skipped. The caller counts it under [`FrameError::reason`],
/// logs it with the frame's position, and goes on with the next frame.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame header cannot be walked")]
    Header(#[source] cbor::CborError),
    #[error("frame truncated")]
    Truncated(#[source] cbor::DecodeError),
    #[error("malformed DAG-CBOR")]
    Cbor(#[source] cbor::DecodeError),
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    #[error("unknown header op {0}")]
    UnknownOp(i64),
    #[error("malformed CAR slice: {0}")]
    Car(#[from] car::CarError),
    #[error("malformed event time {0:?}")]
    Time(String),
    #[error("malformed DID {0:?}")]
    Did(String),
    #[error("commit with {0} ops, above the protocol's {MAX_OPS}")]
    TooManyOps(usize),
}

impl FrameError {
    /// The reason this frame is counted under.
    pub fn reason(&self) -> SkipReason {
        match self {
            FrameError::Header(_) | FrameError::Truncated(_) => SkipReason::Truncated,
            FrameError::Cbor(_) => SkipReason::MalformedCbor,
            FrameError::UnknownType(_) => SkipReason::UnknownType,
            FrameError::UnknownOp(_) => SkipReason::UnknownOp,
            FrameError::Car(_) => SkipReason::BadCar,
            FrameError::Time(_) => SkipReason::BadTime,
            FrameError::Did(_) => SkipReason::BadDid,
            FrameError::TooManyOps(_) => SkipReason::TooManyOps,
        }
    }
}

impl From<cbor::DecodeError> for FrameError {
    fn from(e: cbor::DecodeError) -> Self {
        if e.is_eof() {
            FrameError::Truncated(e)
        } else {
            FrameError::Cbor(e)
        }
    }
}

impl From<serde_ipld_dagcbor::DecodeError<std::convert::Infallible>> for FrameError {
    fn from(e: serde_ipld_dagcbor::DecodeError<std::convert::Infallible>) -> Self {
        cbor::DecodeError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reason_labels_are_distinct() {
        let labels: std::collections::HashSet<_> =
            SkipReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), SkipReason::ALL.len());
    }
}
