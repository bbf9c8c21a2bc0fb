//! A stream's identity across an archive restore (`subjects.md`, "Restored streams").
//!
//! A consumer remembers the stream it read by its creation time ([`created_id`]); a
//! stream deleted and created again is another stream, and the consumer refuses it. A
//! stream rebuilt by `archive restore` holds the same messages at the same sequences, so
//! the restore says so in the stream's metadata: which streams the restored messages were
//! archived from ([`RESTORED_FROM`]) and up to which sequence ([`RESTORED_THROUGH`]). A
//! consumer built on one of those streams, whose position is inside what was restored,
//! goes on where it was.

use std::collections::HashMap;

/// Metadata key: the creation ids ([`created_id`]) of the streams the restored messages
/// were archived from, comma-separated.
pub const RESTORED_FROM: &str = "bsky_restored_from";

/// Metadata key: the last sequence the restore published, in decimal.
pub const RESTORED_THROUGH: &str = "bsky_restored_through";

/// How a stream's creation time is remembered: nanoseconds since the epoch, in decimal.
pub fn created_id(unix_nanos: i128) -> String {
    unix_nanos.to_string()
}

/// What a restored stream's metadata says of its past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Creation ids of the streams its messages were archived from.
    pub from: Vec<String>,
    /// The last sequence the restore published.
    pub through: u64,
}

impl Restored {
    /// The metadata entries that say it.
    pub fn metadata(&self) -> [(String, String); 2] {
        [
            (RESTORED_FROM.to_string(), self.from.join(",")),
            (RESTORED_THROUGH.to_string(), self.through.to_string()),
        ]
    }

    /// Read from a stream's metadata; `None` unless both keys are there and readable.
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Option<Restored> {
        let from: Vec<String> = metadata
            .get(RESTORED_FROM)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let through = metadata.get(RESTORED_THROUGH)?.parse().ok()?;
        (!from.is_empty()).then_some(Restored { from, through })
    }

    /// Whether a consumer that read the stream created `created` up to sequence `seq` may
    /// go on reading this one: the same messages sit at the same sequences.
    pub fn continues(&self, created: &str, seq: u64) -> bool {
        seq <= self.through && self.from.iter().any(|c| c == created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trip_and_continuity() {
        let r = Restored {
            from: vec![created_id(1_700_000_000_000_000_001), created_id(42)],
            through: 500,
        };
        let meta: HashMap<String, String> = r.metadata().into_iter().collect();
        assert_eq!(meta[RESTORED_FROM], "1700000000000000001,42");
        let back = Restored::from_metadata(&meta);
        assert_eq!(back.as_ref(), Some(&r));
        assert!(r.continues("42", 500) && r.continues("1700000000000000001", 1));
        assert!(!r.continues("42", 501), "past what was restored");
        assert!(!r.continues("43", 10), "another stream");
        let mut partial = meta.clone();
        partial.remove(RESTORED_THROUGH);
        assert_eq!(Restored::from_metadata(&partial), None);
        partial.insert(RESTORED_THROUGH.into(), "x".into());
        assert_eq!(Restored::from_metadata(&partial), None);
        assert_eq!(Restored::from_metadata(&HashMap::new()), None);
    }
}
