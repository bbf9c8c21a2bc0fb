//! Where the service stands against the stream: lag in messages and in event time, and
//! messages the stream dropped (retention limits) before the service read them.
//!
//! Asked of the server every `consumer.status_interval`, published as [`Progress`] on a
//! `watch` channel (a web page shows it: "data up to 14:05 UTC, 3 min behind") and as
//! metrics.
//!
//! **Losses.** What is counted is named exactly: *stream messages, of any subject, that the
//! stream dropped before this service passed them*. The server does not say which subjects
//! dropped messages had, so for a service with subject filters this is also the most of
//! its own messages it can have missed.
//!
//! Sequence gaps are normal with subject filters, so a gap alone says nothing. The tracker
//! keeps `covered` (every sequence up to it is accounted for) and the *holes* between
//! consecutive deliveries: sequences the server skipped for us, because they did not match
//! or because they were already gone. Each hole remembers the stream's first sequence as
//! last seen *before* the skip; only the part below that was surely gone when the service
//! passed it, and only that part is counted (a message skipped because it did not match
//! and dropped afterwards is not a loss). Past the last delivery, what was below the first
//! sequence when a poll began is counted once the deliveries then in transit have arrived.
//! At start, against the stored position, the count is exact (a stopped service passed
//! nothing); while running it is a lower bound: drops between two polls that the service
//! then skips are missed, nothing is ever counted twice or counted that was passed.
//! Each loss is logged as an error and added to `<prefix>_retention_lost_messages_total`;
//! the start of a run checks the stored position the same way (a service stopped for
//! longer than the stream keeps messages).

use crate::metrics::Metrics;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;

/// Most holes remembered between two polls.
const MAX_HOLES: usize = 1 << 20;

/// The service against the stream, as last asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    /// Stream sequence of the last message applied (0: none).
    pub seq: u64,
    /// Event time (µs) of that message.
    pub time_us: Option<i64>,
    /// The stream's last sequence.
    pub stream_last_seq: u64,
    /// Event time (µs) of the stream's last message.
    pub stream_last_time_us: Option<i64>,
    /// Matching messages not yet applied (the server's count).
    pub pending: u64,
    /// Stream messages, of any subject, that the stream dropped before this service passed
    /// them, since it started: exact for what was dropped while it was stopped, a lower
    /// bound while it runs (module docs). Of its own subjects it missed at most this many.
    pub lost: u64,
    /// Whether the status was ever read from the server.
    pub known: bool,
}

impl Progress {
    /// How far the applied data is behind the stream, in event time (µs): 0 when nothing
    /// is pending.
    pub fn behind_us(&self) -> i64 {
        if self.pending == 0 {
            return 0;
        }
        match (self.stream_last_time_us, self.time_us) {
            (Some(last), Some(ours)) => (last - ours).max(0),
            _ => 0,
        }
    }
}

/// What the status poll remembers between polls.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Every stream sequence up to here is accounted for.
    covered: u64,
    /// Highest sequence delivered to us (when above `covered`).
    received: u64,
    /// Losses are reported up to here.
    reported: u64,
    /// Sequences skipped between consecutive deliveries above `covered` (inclusive), with
    /// the stream's first sequence as last seen before the skip.
    holes: Vec<(u64, u64, u64)>,
    /// The stream's first sequence as last seen.
    first_seen: u64,
    /// A poll to finish once the deliveries then in transit have arrived: the stream's
    /// first sequence then, and the server's last delivery sequence then.
    audit: Option<(u64, u64)>,
    /// The stream's last message: (sequence, event time).
    last: Option<(u64, Option<i64>)>,
}

impl Tracker {
    /// A tracker for a consumer whose committed position is `position`.
    pub fn at(position: u64) -> Tracker {
        Tracker {
            covered: position,
            received: position,
            ..Tracker::default()
        }
    }

    /// A message was delivered.
    pub fn received(&mut self, seq: u64) {
        if seq <= self.received.max(self.covered) {
            return; // a redelivery
        }
        let from = self.received.max(self.covered) + 1;
        if seq > from {
            if self.holes.len() >= MAX_HOLES {
                // Polls keep failing: stay bounded, at the price of missing a loss here.
                self.holes.clear();
            }
            self.holes.push((from, seq - 1, self.first_seen));
        }
        self.received = seq;
    }

    /// Every sequence up to this one was received or passed over.
    pub fn reached(&self) -> u64 {
        self.received.max(self.covered)
    }

    /// The consumer was recreated at `position`: what was in hand is not accounted for.
    pub fn rewound(&mut self, position: u64) {
        self.covered = position.max(self.reported);
        self.received = self.covered;
        self.holes.clear();
        self.audit = None;
    }

    /// Starts or finishes the loss check against the stream's `first` sequence: finished
    /// once our deliveries (`our_delivery`) reached the server's (`server_delivery`) when
    /// it started (`u64::MAX`: nothing is in transit). Returns the number of stream
    /// messages newly found lost.
    pub fn check_loss(
        &mut self,
        first: u64,
        server_delivery: u64,
        our_delivery: u64,
        metrics: &Metrics,
    ) -> u64 {
        self.first_seen = self.first_seen.max(first);
        if our_delivery == u64::MAX {
            // Everything delivered has arrived: check against the stream as it is now.
            self.audit = Some((first, 0));
        }
        let (first_then, wait_for) = *self.audit.get_or_insert((first, server_delivery));
        if our_delivery < wait_for {
            return 0;
        }
        self.audit = None;
        let below = |(a, b): (u64, u64), first: u64| {
            if a < first {
                b.min(first - 1) - a + 1
            } else {
                0
            }
        };
        // Holes were skipped by the server: only what was gone before the skip is lost.
        let mut lost: u64 = self
            .holes
            .iter()
            .map(|&(a, b, gone_below)| below((a, b), gone_below))
            .sum();
        // Past the last delivery, only what was gone before the deliveries then in
        // transit (all arrived) is surely lost; the rest waits for the next poll.
        let tail = self.received.max(self.covered) + 1;
        lost += below((tail, u64::MAX), first_then);
        if lost > 0 {
            tracing::error!(
                after_seq = self.covered,
                stream_first_seq = first,
                lost,
                "the stream dropped messages before this service passed them (retention \
                 limits): stream messages of any subject; its figures miss at most this many"
            );
            metrics.retention_lost.inc_by(lost);
            self.reported = self.reported.max(first_then - 1);
        }
        self.covered = self
            .covered
            .max(self.received)
            .max(first_then.saturating_sub(1));
        self.received = self.covered;
        self.holes.clear();
        lost
    }

    /// The server has seen every message up to `last` for us (nothing pending).
    fn scanned(&mut self, last: u64) {
        if self.audit.is_none() && last >= self.received {
            self.covered = self.covered.max(last);
            self.received = self.covered;
            self.holes.clear();
        }
    }

    /// Asks the consumer, and fills `progress` (position fields are the caller's) from its
    /// answer and the stream's `state`, which the caller read just before: stream first,
    /// consumer second, so "nothing pending" covers the stream's last sequence as read.
    /// Errors are logged and leave the previous values.
    pub async fn poll(
        &mut self,
        state: &async_nats::jetstream::stream::State,
        stream: &Stream,
        consumer: &mut PullConsumer,
        our_delivery: u64,
        progress: &mut Progress,
        metrics: &Metrics,
    ) {
        let info = match consumer.info().await {
            Ok(info) => info.clone(),
            Err(e) => {
                tracing::warn!(error = %e, "consumer info failed; lag not updated");
                return;
            }
        };
        let pending = info.num_pending + info.num_ack_pending as u64;
        if state.messages > 0 {
            let server_delivery = info.delivered.consumer_sequence;
            // Nothing pending or unacknowledged: every delivery has arrived.
            let our_delivery = if pending == 0 { u64::MAX } else { our_delivery };
            progress.lost +=
                self.check_loss(state.first_sequence, server_delivery, our_delivery, metrics);
        }
        if pending == 0 {
            self.scanned(state.last_sequence);
        }
        let last_time = match self.last {
            Some((seq, t)) if seq == state.last_sequence => t,
            _ if state.messages == 0 => None,
            _ => {
                let t = stream
                    .direct_get(state.last_sequence)
                    .await
                    .ok()
                    .and_then(|m| crate::event::time_us(&m.payload).ok());
                self.last = Some((state.last_sequence, t));
                t
            }
        };
        progress.stream_last_seq = state.last_sequence;
        progress.stream_last_time_us = last_time;
        progress.pending = pending;
        progress.known = true;
        metrics
            .lag_messages
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        metrics.lag_seconds.set(progress.behind_us() as f64 / 1e6);
    }
}
