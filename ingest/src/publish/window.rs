//! The window: messages awaiting their acks (sent, or on the batched path waiting for the
//! flow to let them go), in stream-sequence order.

use crate::cursor::Position;
use crate::metrics::{Metrics, OpLabel};
use async_nats::Subject;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One message awaiting its ack (or a frame without messages, to move the cursor).
pub struct Pending {
    pub(super) relay_seq: i64,
    pub(super) last_of_frame: bool,
    pub(super) msg: Option<Outgoing>,
}

pub struct Outgoing {
    pub(super) subject: Subject,
    pub(super) payload: Bytes,
    pub(super) relay_seq_text: std::sync::Arc<str>,
    /// The stream sequence it gets.
    pub(super) stream_seq: u64,
    /// When it was last sent (until then, when it entered the window).
    pub(super) sent: Instant,
    pub(super) acked: bool,
    /// `ops{action, collection}`, counted when the ack arrives.
    pub(super) counter: Counter,
}

/// The publisher's state while `run` goes.
pub struct Window {
    pub(super) pending: VecDeque<Pending>,
    /// Payload bytes in `pending`.
    pub(super) bytes: usize,
    /// Messages in `pending` not acked (sent or not yet).
    pub(super) unacked: usize,
    /// The stream sequence the next new message gets.
    pub(super) next_seq: u64,
    /// Reply subjects are `<inbox>.<round>.<stream seq>` per message (acks of an earlier
    /// round are ignored), or a batch's (`batch.rs`) under the same inbox.
    pub(super) inbox: String,
    pub(super) round: u64,
    pub(super) position: Position,
    pub(super) backoff: Duration,
    /// One warning per few seconds while JetStream fails.
    pub(super) warn: service::telemetry::RateLimit,
    pub(super) counters: Vec<Option<Counter>>,
    /// Index in `pending` of the next entry to send in this round: entries before it are
    /// sent (or need no sending).
    pub(super) send_at: usize,
    /// The open fast-ingest batch (batched path only).
    pub(super) open: Option<super::batch::Open>,
    /// Batches opened so far: the next batch's number.
    pub(super) batches: u64,
}

/// Collection label slots: [`crate::metrics::COLLECTIONS`], then `other`, then `none`.
pub const LABELS: usize = crate::metrics::COLLECTIONS.len() + 2;
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Window {
    /// The reply subject of the message that gets stream sequence `seq` in this round.
    pub fn reply(&self, seq: u64) -> String {
        let mut round = itoa::Buffer::new();
        let round = round.format(self.round);
        let mut seq_text = itoa::Buffer::new();
        let seq_text = seq_text.format(seq);
        let mut r = String::with_capacity(self.inbox.len() + round.len() + seq_text.len() + 2);
        r.push_str(&self.inbox);
        r.push('.');
        r.push_str(round);
        r.push('.');
        r.push_str(seq_text);
        r
    }

    /// The message that gets stream sequence `seq`, if it is in the window.
    pub fn find(&mut self, seq: u64) -> Option<&mut Outgoing> {
        // Messages are in stream-sequence order; placeholders hold none. Search from the
        // back of the window's messages by offset, falling back to a scan.
        let first = self
            .pending
            .iter()
            .find_map(|p| p.msg.as_ref().map(|m| m.stream_seq))?;
        let offset = usize::try_from(seq.checked_sub(first)?).ok()?;
        let guess = self
            .pending
            .get(offset)
            .and_then(|p| p.msg.as_ref())
            .map(|m| m.stream_seq);
        if guess == Some(seq) {
            return self.pending.get_mut(offset)?.msg.as_mut();
        }
        self.pending
            .iter_mut()
            .filter_map(|p| p.msg.as_mut())
            .find(|m| m.stream_seq == seq)
    }

    /// The `ops` counter of an action and collection, from the registry the first time.
    pub fn counter(
        &mut self,
        metrics: &Metrics,
        action: firehose::Action,
        collection: Option<&str>,
    ) -> Counter {
        let label = collection.map_or("none", Metrics::collection_label);
        let column = match label {
            "none" => LABELS - 1,
            "other" => LABELS - 2,
            l => crate::metrics::COLLECTIONS
                .iter()
                .position(|c| *c == l)
                .unwrap_or(LABELS - 2),
        };
        let row = firehose::Action::ALL
            .iter()
            .position(|a| *a == action)
            .unwrap_or(0);
        self.counters[row * LABELS + column]
            .get_or_insert_with(|| {
                metrics
                    .ops
                    .get_or_create(&OpLabel {
                        action: action.as_str(),
                        collection: label,
                    })
                    .clone()
            })
            .clone()
    }
}
