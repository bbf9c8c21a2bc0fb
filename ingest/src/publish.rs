//! The publisher: a bounded window of async JetStream publishes whose acks are awaited
//! concurrently, in order.
//!
//! Every message carries its deterministic `Nats-Msg-Id`; a publish that fails or times
//! out is sent again with the same id (the server drops it if the first one did land),
//! never skipped. Acks come back through a `FuturesOrdered`, so when the last message of
//! a frame is acked, every earlier frame is too: that frame's seq becomes the cursor.
//!
//! While JetStream is unavailable the window stays full, `recv` is not called, the relay
//! reader blocks on its channel, and the socket stops being read: memory stays bounded by
//! `publish.window` / `publish.window_bytes` whatever the backlog.

use crate::cursor::Position;
use crate::metrics::{Metrics, OpLabel};
use crate::relay::Batch;
use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{error, warn};

/// Header carrying the relay seq of the frame a message came from.
pub const SEQ_HEADER: &str = "Bsky-Seq";

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

/// What one in-flight entry resolves to.
struct Done {
    seq: i64,
    last_of_frame: bool,
    /// The stream sequence of a message stored by its first publish. A retried message
    /// may be stored after messages of later frames, so it says nothing about them and
    /// is left out: the cursor's `stream_seq` must stay below every later frame's message.
    stream_seq: Option<u64>,
    bytes: usize,
}

impl Publisher {
    /// Publishes every batch from `rx` until it closes, then waits for the window to
    /// drain (at most `drain_timeout`). Acked positions go to `cursor`.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Batch>,
        cursor: watch::Sender<Position>,
        drain_timeout: Duration,
    ) {
        let mut inflight: FuturesOrdered<BoxFuture<'static, Done>> = FuturesOrdered::new();
        let mut inflight_bytes = 0usize;
        let mut position = self.start;
        let mut frame_max = position.stream_seq;
        let last_warn = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        loop {
            let room = inflight.len() < self.window && inflight_bytes < self.window_bytes;
            tokio::select! {
                biased;
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    inflight_bytes -= done.bytes;
                    self.on_done(done, &mut position, &mut frame_max, &cursor);
                }
                batch = rx.recv(), if room => match batch {
                    Some(batch) => {
                        for entry in self.send(batch, &last_warn, epoch).await {
                            inflight_bytes += entry.1;
                            inflight.push_back(entry.0);
                        }
                    }
                    None => break,
                },
            }
            self.metrics.inflight.set(inflight.len() as i64);
        }
        // The reader is gone (shutdown): wait for what is in flight, for a while.
        let drain = async {
            while let Some(done) = inflight.next().await {
                self.on_done(done, &mut position, &mut frame_max, &cursor);
                self.metrics.inflight.set(inflight.len() as i64);
            }
        };
        if tokio::time::timeout(drain_timeout, drain).await.is_err() {
            warn!(
                cursor = position.relay_seq,
                "shutdown: gave up waiting for JetStream acks; the events after the cursor will be read again on restart"
            );
        }
    }

    /// Moves the position when a frame's last message is acked (acks arrive in order).
    /// `frame_max` gathers stream sequences until then: a half-acked frame must not move
    /// `stream_seq`, or a restart would miss that frame's stored messages.
    fn on_done(
        &self,
        done: Done,
        position: &mut Position,
        frame_max: &mut u64,
        cursor: &watch::Sender<Position>,
    ) {
        if let Some(s) = done.stream_seq {
            *frame_max = (*frame_max).max(s);
        }
        if done.last_of_frame {
            position.stream_seq = *frame_max;
            position.relay_seq = Some(done.seq);
            self.metrics.cursor_seq.set(done.seq);
            let _ = cursor.send(*position);
        }
    }

    /// Sends every message of a frame; returns one in-flight entry per message (one
    /// marker entry for a frame with none), each with its payload size.
    async fn send(
        &mut self,
        batch: Batch,
        last_warn: &Arc<AtomicU64>,
        epoch: Instant,
    ) -> Vec<(BoxFuture<'static, Done>, usize)> {
        let seq = batch.seq;
        let n = batch.messages.len();
        let mut out = Vec::with_capacity(n.max(1));
        if n == 0 {
            out.push((ready(seq, true), 0));
        }
        for (i, m) in batch.messages.into_iter().enumerate() {
            let last_of_frame = i + 1 == n;
            if !self.already_stored.is_empty() && self.already_stored.remove(&m.msg_id) {
                self.metrics.already_stored.inc();
                out.push((ready(seq, last_of_frame), 0));
                continue;
            }
            let label = OpLabel {
                action: m.action.as_str(),
                collection: m.collection().map_or("none", Metrics::collection_label),
            };
            let msg = Arc::new(Outgoing {
                subject: m.subject,
                msg_id: m.msg_id,
                payload: Bytes::from(m.payload),
                seq: seq.to_string(),
            });
            let bytes = msg.payload.len();
            let first = publish(&self.js, &msg).await;
            if let Err(e) = &first {
                if e.kind() == PublishErrorKind::MaxPayloadExceeded {
                    // Can never succeed: the server's max_payload is below this message.
                    error!(seq, msg_id = %msg.msg_id, bytes, "message larger than the server's max_payload; skipped (raise max_payload)");
                    self.metrics.skip("too_large_for_nats");
                    out.push((ready(seq, last_of_frame), 0));
                    continue;
                }
            }
            let fut = acked(
                self.js.clone(),
                msg,
                first,
                self.metrics.clone(),
                label,
                last_warn.clone(),
                epoch,
            )
            .map(move |(stream_seq, first_try)| Done {
                seq,
                last_of_frame,
                stream_seq: first_try.then_some(stream_seq),
                bytes,
            })
            .boxed();
            out.push((fut, bytes));
        }
        out
    }
}

/// A message kept until its ack arrives, so it can be sent again unchanged.
struct Outgoing {
    subject: String,
    msg_id: String,
    payload: Bytes,
    seq: String,
}

fn ready(seq: i64, last_of_frame: bool) -> BoxFuture<'static, Done> {
    futures_util::future::ready(Done {
        seq,
        last_of_frame,
        stream_seq: None,
        bytes: 0,
    })
    .boxed()
}

/// The JetStream message for one event: payload, `Nats-Msg-Id` and [`SEQ_HEADER`]. Public so
/// the benchmark's ceiling publishes exactly what the ingestor does.
pub fn message(payload: Bytes, msg_id: &str, seq: &str) -> PublishMessage {
    PublishMessage::build()
        .payload(payload)
        .message_id(msg_id)
        .header(SEQ_HEADER, seq)
}

async fn publish(
    js: &Context,
    m: &Outgoing,
) -> Result<
    async_nats::jetstream::context::PublishAckFuture,
    async_nats::jetstream::context::PublishError,
> {
    js.send_publish(
        m.subject.clone(),
        message(m.payload.clone(), &m.msg_id, &m.seq),
    )
    .await
}

/// Waits for the ack of `m`, publishing it again (same id) after each failure. Returns
/// the stream sequence and whether the first publish was the one acknowledged.
async fn acked(
    js: Context,
    m: Arc<Outgoing>,
    first: Result<
        async_nats::jetstream::context::PublishAckFuture,
        async_nats::jetstream::context::PublishError,
    >,
    metrics: Metrics,
    label: OpLabel,
    last_warn: Arc<AtomicU64>,
    epoch: Instant,
) -> (u64, bool) {
    let mut attempt = first;
    let mut first_try = true;
    let mut delay = Duration::from_millis(100);
    loop {
        let err = match attempt {
            Ok(ack) => match ack.await {
                Ok(ack) => {
                    metrics.published.inc();
                    metrics.ops.get_or_create(&label).inc();
                    return (ack.sequence, first_try);
                }
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        metrics.publish_retries.inc();
        first_try = false;
        // One warning every 5 s at most, however many messages are retrying.
        let now = epoch.elapsed().as_secs();
        let prev = last_warn.load(Ordering::Relaxed);
        if now >= prev + 5 || prev == 0 {
            last_warn.store(now.max(1), Ordering::Relaxed);
            warn!(error = %err, msg_id = %m.msg_id, "JetStream publish failed; retrying with the same Nats-Msg-Id");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
        attempt = publish(&js, &m).await;
    }
}
