//! The protocol's maxima (lexicon `com.atproto.sync.subscribeRepos`) and what follows from
//! them for the stream.

/// The largest frame a relay may send.
pub const MAX_FRAME_BYTES: usize = 5_000_000;

/// The largest `blocks` CAR slice of one commit.
pub const MAX_BLOCKS_BYTES: usize = 2_000_000;

/// The most ops one commit may carry.
pub const MAX_OPS: usize = 200;

/// The largest message the ingestor must be able to publish: a record block of the
/// protocol's maximum size as JSON (byte strings grow by a third as base64, text stays
/// about the same). A pathological record above it (e.g. megabytes of control characters,
/// each escaped as six bytes) is skipped as `too_large_for_nats` when it exceeds the
/// server's `max_payload`.
pub const MAX_MESSAGE_BYTES: usize = 2 * MAX_BLOCKS_BYTES;
