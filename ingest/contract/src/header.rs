//! The headers of every message (`subjects.md`, "Headers").

/// The relay `seq` of the frame the message came from, in decimal. Relay-specific: it
/// lines a message up with the relay, it is not an identity.
pub const SEQ: &str = "Bsky-Seq";

/// The stream sequence of the message before it; the server refuses the message unless
/// the stream ends there. The ingestor's; consumers can ignore it.
pub const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";

/// Every header the ingestor sets, as `subjects.md` lists them.
pub const ALL: [&str; 2] = [SEQ, EXPECTED_LAST_SEQUENCE];
