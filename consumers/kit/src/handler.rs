//! What a service writes: a [`Handler`] applies delivered events to its SQLite tables.
//!
//! kit calls it on its own thread (SQLite is blocking), one batch at a time, in stream
//! order, inside one transaction:
//!
//! ```text
//! BEGIN; handle(m1) … handle(mN); flush(); <kit writes the position>; COMMIT  → committed(); ack
//!                   └─ Transient error, or a failed flush/commit: ROLLBACK → rolled_back(); NAK
//! ```
//!
//! A handler that aggregates in memory during a batch (and writes in [`Handler::flush`])
//! must forget that aggregate in [`Handler::rolled_back`]; one that caches committed state
//! (say, the members of a set) updates the cache in [`Handler::committed`].

use crate::event::Event;
use rusqlite::Transaction;

/// Any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One delivered message, decoded.
#[derive(Debug)]
pub struct Msg<'a> {
    /// Its stream sequence.
    pub seq: u64,
    /// Its subject, e.g. `bsky.app.bsky.feed.post`.
    pub subject: &'a str,
    /// The payload as a contract event.
    pub event: Event<'a>,
    /// The raw payload (JSON).
    pub payload: &'a [u8],
    /// When JetStream stored it, ns since the epoch: storage time, **not** event time
    /// (hours apart after a catch-up); figures belong on `event.time_us`.
    pub stored_ns: i128,
}

/// Why a message was not applied.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// It can never be applied (the record does not have the expected shape…): kit
    /// terminates it and counts it under this reason (one of [`Handler::POISON_REASONS`]);
    /// the rest of the batch goes on.
    #[error("poison message: {0}")]
    Poison(&'static str),
    /// Applying failed for a reason that may pass (I/O, disk full…): kit rolls the whole
    /// batch back and NAKs it with a growing delay; it comes again, in order.
    #[error("transient failure: {0}")]
    Transient(BoxError),
}

impl From<rusqlite::Error> for HandleError {
    /// A failed SQL statement is transient: the batch is retried, never skipped. A
    /// statement that can never succeed is a bug, and shows as the same error, retried.
    fn from(e: rusqlite::Error) -> Self {
        HandleError::Transient(Box::new(e))
    }
}

/// What a rebuild (`--from-seq`, `--from-time`) asks a handler to forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// Everything: the service starts over from a stream sequence.
    All,
    /// What was derived from events at or after this event time (µs); older state stays.
    Since(i64),
}

/// A consumer's logic. See the module documentation for the order of calls.
pub trait Handler: Send + 'static {
    /// Every reason [`HandleError::Poison`] may carry: metric labels, registered at zero.
    const POISON_REASONS: &'static [&'static str] = &[];

    /// Creates the handler's tables if missing, and loads any cache; called once at start.
    fn init(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()>;

    /// The event time a rebuild from `t` (µs) really starts at: a handler whose state is
    /// bucketed (hours, days) widens it to its bucket's start. Never later than `t`.
    fn rebuild_from(&self, t: i64) -> i64 {
        t
    }

    /// How far (µs) an event may be dated ahead of its storage time and still be applied,
    /// when the handler enforces such a bound (it skips, say, events from hosts whose
    /// clock runs ahead). With `Some(bound)`, a `--from-time t` rebuild reads from the
    /// first message *stored* at or after `t - bound` ([`crate::seek::seq_at_stored_time`]),
    /// which is exact whatever the events' clocks; with `None` (the default) it seeks by
    /// event time with `consumer.seek_margin`, which misses events dated inside the rebuilt
    /// range but stored before the margin.
    fn clock_skew_bound(&self) -> Option<i64> {
        None
    }

    /// Deletes the state a rebuild replaces (for [`Rebuild::Since`], the time is already
    /// the one [`Handler::rebuild_from`] chose), and drops it from any cache.
    fn rebuild(&mut self, tx: &Transaction<'_>, from: Rebuild) -> rusqlite::Result<()>;

    /// Applies one message.
    fn handle(&mut self, tx: &Transaction<'_>, msg: &Msg<'_>) -> Result<(), HandleError>;

    /// Writes what the batch aggregated in memory; called once per batch before commit.
    fn flush(&mut self, _tx: &Transaction<'_>) -> rusqlite::Result<()> {
        Ok(())
    }

    /// The batch is committed: in-memory caches may now take in its changes.
    fn committed(&mut self) {}

    /// The batch was rolled back: forget what it aggregated in memory.
    fn rolled_back(&mut self) {}
}
