//! The publisher: a bounded window of async JetStream publishes whose acks are awaited
//! concurrently, in order.
//!
//! Every message carries its deterministic `Nats-Msg-Id`; a publish that fails or times
//! out is sent again with the same id (the server drops it if the first one did land),
//! never skipped. Acks come back through a `FuturesOrdered`, so when the last message of
//! a frame is acked, every earlier frame is too: that frame's seq becomes the cursor.
//!
//! The hot path allocates nothing of its own per message: the ack future is async-nats's,
//! what is needed to publish again waits in a `VecDeque` beside it, and a failure is
//! retried where it surfaces, at the front of the window. Nothing behind the front can
//! move the cursor anyway, and while the front waits no new publish is sent.
//!
//! While JetStream is unavailable the window stays full, `recv` is not called, the relay
//! reader blocks on its channel, and the socket stops being read: memory stays bounded by
//! `publish.window` / `publish.window_bytes` whatever the backlog.

use crate::cursor::Position;
use crate::metrics::{Metrics, OpLabel};
use crate::relay::Batch;
use async_nats::jetstream::context::{Context, PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::Subject;
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashSet, VecDeque};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

/// Header carrying the relay seq of the frame a message came from.
pub const SEQ_HEADER: &str = "Bsky-Seq";

/// The JetStream context the publisher runs on: `ack_timeout` per ack, and at most the
/// window plus one frame's ops awaiting acks (the client then waits instead of growing).
/// The benchmark's ceiling publisher uses this same context, so only the code differs.
pub fn context(client: async_nats::Client, cfg: &crate::config::Publish) -> Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(cfg.ack_timeout)
        .max_ack_inflight(cfg.window + firehose::MAX_OPS)
        .backpressure_on_inflight(true)
        .build(client)
}

pub struct Publisher {
    pub js: Context,
    pub window: usize,
    pub window_bytes: usize,
    pub metrics: Metrics,
    /// Ids the stream already holds past the stored cursor (found on resume): not sent again.
    pub already_stored: HashSet<String>,
    /// Where the stored cursor was; acked positions move it forward.
    pub start: Position,
}

type AckResult = Result<PublishAck, PublishError>;

/// One place in the window: a publish awaiting its ack, or a position with nothing to
/// await (a frame without messages, a message the stream already holds).
enum Slot {
    Nothing,
    Ack(<PublishAckFuture as IntoFuture>::IntoFuture),
}

impl Future for Slot {
    type Output = Option<AckResult>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Slot::Nothing => Poll::Ready(None),
            Slot::Ack(ack) => ack.as_mut().poll(cx).map(Some),
        }
    }
}

/// What the window remembers of a slot, in the same order as the slots.
struct Entry {
    seq: i64,
    last_of_frame: bool,
    bytes: usize,
    /// For an `Ack` slot: the message, to publish it again if the ack fails.
    msg: Option<Outgoing>,
}

/// A message kept until its ack arrives, so it can be sent again unchanged.
struct Outgoing {
    subject: Subject,
    msg_id: String,
    payload: Bytes,
    seq: Arc<str>,
    /// `ops{action, collection}`, counted when the ack arrives.
    counter: Counter,
}

/// The window's state while `run` goes.
struct Window {
    slots: FuturesOrdered<Slot>,
    entries: VecDeque<Entry>,
    bytes: usize,
    position: Position,
    /// Highest first-publish stream sequence of the frame being acked (see `complete`).
    frame_max: u64,
    /// When the last "publish failed" warning was logged (one per 5 s at most).
    last_warn: Option<Instant>,
    /// `ops` counters by action and collection label, looked up once each.
    counters: Vec<Option<Counter>>,
}

/// Collection label slots: [`crate::metrics::COLLECTIONS`], then `other`, then `none`.
const LABELS: usize = crate::metrics::COLLECTIONS.len() + 2;

impl Publisher {
    /// Publishes every batch from `rx` until it closes, then waits for the window to
    /// drain (at most `drain_timeout`). Acked positions go to `cursor`.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Batch>,
        cursor: watch::Sender<Position>,
        drain_timeout: Duration,
    ) {
        let mut w = Window {
            slots: FuturesOrdered::new(),
            entries: VecDeque::with_capacity(self.window + firehose::MAX_OPS),
            bytes: 0,
            position: self.start,
            frame_max: self.start.stream_seq,
            last_warn: None,
            counters: vec![None; firehose::Action::ALL.len() * LABELS],
        };
        loop {
            let room = w.slots.len() < self.window && w.bytes < self.window_bytes;
            tokio::select! {
                biased;
                Some(result) = w.slots.next(), if !w.slots.is_empty() => {
                    self.complete(&mut w, result, &cursor).await;
                }
                batch = rx.recv(), if room => match batch {
                    Some(batch) => self.send(&mut w, batch).await,
                    None => break,
                },
            }
            self.metrics.inflight.set(w.slots.len() as i64);
        }
        // The reader is gone (shutdown): wait for what is in flight, for a while.
        let drain = async {
            while let Some(result) = w.slots.next().await {
                self.complete(&mut w, result, &cursor).await;
                self.metrics.inflight.set(w.slots.len() as i64);
            }
        };
        if tokio::time::timeout(drain_timeout, drain).await.is_err() {
            warn!(
                cursor = w.position.relay_seq,
                "shutdown: gave up waiting for JetStream acks; the events after the cursor will be read again on restart"
            );
        }
    }

    /// The front slot resolved: retry it until acked if it failed, count it, and move the
    /// position when it was its frame's last message (slots resolve in order).
    ///
    /// `frame_max` gathers stream sequences until then: a half-acked frame must not move
    /// `stream_seq`, or a restart would miss that frame's stored messages. Only first
    /// publishes count: a retried message may be stored after messages of later frames,
    /// and the cursor's `stream_seq` must stay below every later frame's message.
    async fn complete(
        &self,
        w: &mut Window,
        result: Option<AckResult>,
        cursor: &watch::Sender<Position>,
    ) {
        let Some(entry) = w.entries.pop_front() else {
            return;
        };
        w.bytes -= entry.bytes;
        if let (Some(result), Some(msg)) = (result, &entry.msg) {
            let first = match result {
                Ok(ack) => Some(ack.sequence),
                Err(e) => {
                    self.retry(msg, e, &mut w.last_warn).await;
                    None
                }
            };
            if let Some(s) = first {
                w.frame_max = w.frame_max.max(s);
            }
            msg.counter.inc();
            self.metrics.published.inc();
        }
        if entry.last_of_frame {
            w.position.stream_seq = w.frame_max;
            w.position.relay_seq = Some(entry.seq);
            self.metrics.cursor_seq.set(entry.seq);
            let _ = cursor.send(w.position);
        }
    }

    /// Publishes `m` again (same id) until JetStream acknowledges it.
    async fn retry(&self, m: &Outgoing, first: PublishError, last_warn: &mut Option<Instant>) {
        let mut error = first.to_string();
        let mut delay = Duration::from_millis(100);
        loop {
            self.metrics.publish_retries.inc();
            // One warning every 5 s at most, however many messages are retrying.
            if last_warn.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                *last_warn = Some(Instant::now());
                warn!(error = %error, msg_id = %m.msg_id, "JetStream publish failed; retrying with the same Nats-Msg-Id");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            match publish(&self.js, m).await {
                Ok(ack) => match ack.await {
                    Ok(_) => return,
                    Err(e) => error = e.to_string(),
                },
                Err(e) => error = e.to_string(),
            }
        }
    }

    /// Sends every message of a frame into the window (one `Nothing` slot for a frame
    /// without messages).
    async fn send(&mut self, w: &mut Window, batch: Batch) {
        let seq = batch.seq;
        let n = batch.messages.len();
        if n == 0 {
            w.push(Slot::Nothing, seq, true, None);
            return;
        }
        let seq_text: Arc<str> = Arc::from(seq.to_string());
        for (i, m) in batch.messages.into_iter().enumerate() {
            let last_of_frame = i + 1 == n;
            if !self.already_stored.is_empty() && self.already_stored.remove(&m.msg_id) {
                self.metrics.already_stored.inc();
                w.push(Slot::Nothing, seq, last_of_frame, None);
                continue;
            }
            let msg = Outgoing {
                counter: w.counter(&self.metrics, m.action, m.collection()),
                subject: Subject::from(m.subject),
                msg_id: m.msg_id,
                payload: Bytes::from(m.payload),
                seq: seq_text.clone(),
            };
            match publish(&self.js, &msg).await {
                Ok(ack) => w.push(Slot::Ack(ack.into_future()), seq, last_of_frame, Some(msg)),
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    // Can never succeed: the server's max_payload is below this message.
                    error!(seq, msg_id = %msg.msg_id, bytes = msg.payload.len(), "message larger than the server's max_payload; skipped (raise max_payload)");
                    self.metrics.skip(firehose::SkipReason::TooLargeForNats);
                    w.push(Slot::Nothing, seq, last_of_frame, None);
                }
                Err(e) => {
                    // Not sent: retry now, in order, before anything later goes out.
                    self.retry(&msg, e, &mut w.last_warn).await;
                    msg.counter.inc();
                    self.metrics.published.inc();
                    w.push(Slot::Nothing, seq, last_of_frame, None);
                }
            }
        }
    }
}

impl Window {
    fn push(&mut self, slot: Slot, seq: i64, last_of_frame: bool, msg: Option<Outgoing>) {
        let bytes = msg.as_ref().map_or(0, |m| m.payload.len());
        self.bytes += bytes;
        self.slots.push_back(slot);
        self.entries.push_back(Entry {
            seq,
            last_of_frame,
            bytes,
            msg,
        });
    }

    /// The `ops` counter of an action and collection, from the registry the first time.
    fn counter(
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

/// The JetStream message for one event: payload, `Nats-Msg-Id` and [`SEQ_HEADER`]. Public so
/// the benchmark's ceiling publishes exactly what the ingestor does.
pub fn message(payload: Bytes, msg_id: &str, seq: &str) -> PublishMessage {
    PublishMessage::build()
        .payload(payload)
        .message_id(msg_id)
        .header(SEQ_HEADER, seq)
}

async fn publish(js: &Context, m: &Outgoing) -> Result<PublishAckFuture, PublishError> {
    js.send_publish(
        m.subject.clone(),
        message(m.payload.clone(), &m.msg_id, &m.seq),
    )
    .await
}
