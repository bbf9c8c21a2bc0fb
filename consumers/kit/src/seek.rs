//! Where, in the stream, a given *event time* starts.
//!
//! JetStream can start a consumer at a storage time (`DeliverPolicy::ByStartTime`), but
//! storage time is when the ingestor stored a message: after a catch-up it is hours later
//! than the event's own `time_us`, so a cursor or a rebuild point "from 14:00" must be
//! found by event time. [`seq_at_time`] binary-searches the stream with direct gets (about
//! log2(messages) reads, 25 for 30 million), each one the first message at or after a
//! probe sequence, so deleted or expired sequences are stepped over.
//!
//! The stream is in relay order, which follows event time closely but not strictly: event
//! times come from the repositories' hosts, and neighbours differ by up to a second in the
//! real corpus (more when a host's clock is off). On ordered times the result is exact; in
//! general it is the boundary a binary search finds. A caller that must see every event at
//! or after `t` seeks `t - margin` (a margin larger than the disorder it expects) and drops
//! the older events it then reads.
//!
//! A handler that refuses events dated more than a bound ahead of their storage time
//! ([`crate::Handler::clock_skew_bound`]) needs no margin guess: every event it applied
//! with a time at or after `t` was stored at or after `t - bound`, and storage time grows
//! with the sequence, so [`seq_at_stored_time`] finds the exact start whatever the events'
//! own clocks say.

use async_nats::jetstream::stream::Stream;
use contract::subject::ALL;

/// Why a seek failed: JetStream could not be asked (retry later) or a payload had no
/// `time_us` (the stream holds something else than the contract's events: stop).
#[derive(Debug, thiserror::Error)]
pub enum SeekError {
    /// The stream's state could not be read: retry later.
    #[error("reading the stream's state")]
    Info(#[source] async_nats::jetstream::stream::InfoError),
    /// A direct get failed: retry later.
    #[error("reading the first message at or after {from}")]
    Get {
        /// The probed stream sequence.
        from: u64,
        /// What JetStream said.
        #[source]
        source: async_nats::jetstream::stream::DirectGetError,
    },
    /// The message at this stream sequence has no readable `time_us`.
    #[error("message {seq} has no event time")]
    NoTime {
        /// Its stream sequence.
        seq: u64,
        /// The parser's error.
        #[source]
        source: crate::event::EventError,
    },
}

/// What a search orders the stream's messages by.
#[derive(Clone, Copy)]
enum Key {
    /// The payload's `time_us`.
    Event,
    /// The time JetStream stored the message.
    Stored,
}

/// The first stored message at or after sequence `from`: (its sequence, its time by
/// `key`), or `None` past the end.
async fn probe(stream: &Stream, from: u64, key: Key) -> Result<Option<(u64, i64)>, SeekError> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    match stream.direct_get_next_for_subject(ALL, Some(from)).await {
        Ok(m) => {
            let t = match key {
                Key::Event => {
                    crate::event::time_us(&m.payload).map_err(|source| SeekError::NoTime {
                        seq: m.sequence,
                        source,
                    })?
                }
                Key::Stored => stored_us(m.time),
            };
            Ok(Some((m.sequence, t)))
        }
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(source) => Err(SeekError::Get { from, source }),
    }
}

/// The sequence of the first message whose time by `key` is at or after `at`: `None` when
/// every stored message is older; the first message when `at` is older than the stream.
async fn first_at(stream: &Stream, at: i64, key: Key) -> Result<Option<u64>, SeekError> {
    let state = stream.get_info().await.map_err(SeekError::Info)?.state;
    if state.messages == 0 {
        return Ok(None);
    }
    // Invariant: every stored message below `lo` is older than `at`, and the first stored
    // message at or after `hi` (if any) is not.
    let (mut lo, mut hi) = (state.first_sequence, state.last_sequence + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match probe(stream, mid, key).await? {
            Some((seq, t)) if seq < hi && t < at => lo = seq + 1,
            _ => hi = mid,
        }
    }
    Ok(probe(stream, lo, key).await?.map(|(seq, _)| seq))
}

/// The sequence of the first message whose event time is at or after `time_us`: `None`
/// when every stored message is older (start at the live tail). A time older than the
/// stream's first message gives the first message.
pub async fn seq_at_time(stream: &Stream, time_us: i64) -> Result<Option<u64>, SeekError> {
    first_at(stream, time_us, Key::Event).await
}

/// A storage time as µs since the epoch.
pub(crate) fn stored_us(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// The sequence of the first message JetStream stored at or after `stored_us` (µs since
/// the epoch, the server's clock): `None` when every stored message is older. Storage
/// times grow with the sequence, so the binary search is exact.
pub async fn seq_at_stored_time(stream: &Stream, stored_us: i64) -> Result<Option<u64>, SeekError> {
    first_at(stream, stored_us, Key::Stored).await
}

/// `2026-07-04T14:38:07.123456Z` of µs since the epoch, for messages to people (the raw
/// number when it is out of the calendar's range).
pub fn rfc3339(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{us} µs since the epoch"))
}
