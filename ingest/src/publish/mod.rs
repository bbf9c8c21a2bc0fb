//! The publisher: a bounded window of publishes into the stream, each one checked by the
//! server against the stream's last sequence, acks read from one subscription.
//!
//! Order and exactly-once are structural, not lucky. The ingestor is the only writer
//! (`lease.rs`), so it knows which stream sequence each message will get: the next one.
//! Every publish carries `Nats-Expected-Last-Sequence` = that sequence minus one, and the
//! server stores a message only right after its predecessor: never twice, never out of
//! order, whatever is resent, lost in a reconnect, or delayed past any window. A lost
//! publish makes every later one in the window fail; a stalled server makes acks time out.
//! Either way the publisher runs one recovery round: stop sending, ask the stream where it
//! ends, check that its last message is the one expected there, and send the rest again, in
//! order, after one back-off per round. A stream that went backwards, holds a message the
//! ingestor did not publish, or refuses a publish for good (account or stream storage
//! limits, message size) stops the ingestor with a message: restarting is the operator's
//! call, and the start (`resume.rs`) reconciles again from what the stream holds.
//!
//! The hot path: one pre-built subject per message from the decoder, two small headers,
//! one core-NATS publish with a reply subject under this publisher's inbox. No ack future,
//! oneshot or timer per message: acks arrive in order on one subscription and name the
//! message in their reply subject; one deadline watches the oldest unacknowledged publish.
//!
//! While JetStream is unavailable the window stays full, the relay reader blocks on its
//! channel, and the socket stops being read: memory stays bounded by `publish.window` /
//! `publish.window_bytes` whatever the backlog.

use crate::cursor::Position;
use crate::metrics::Metrics;
use crate::relay::Batch;
use async_nats::jetstream::context::Context;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod ack;
mod window;

use ack::{parse_ack, Ack, Failure, PERMANENT};
use window::{Outgoing, Pending, Window, BACKOFF_MAX, BACKOFF_MIN, LABELS};

/// Header carrying the relay seq of the frame a message came from.
pub use contract::header::SEQ as SEQ_HEADER;

/// The JetStream context for stream management and the benchmark's ceiling publisher:
/// `ack_timeout` per request, at most the window plus one frame's ops awaiting acks.
pub fn context(client: async_nats::Client, cfg: &crate::config::Publish) -> Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(cfg.ack_timeout)
        .max_ack_inflight(cfg.window + firehose::MAX_OPS)
        .backpressure_on_inflight(true)
        .build(client)
}

/// The headers of one message: the sequence the stream must end at before it, and its
/// frame's relay seq. Public so the benchmark publishes exactly what the ingestor does.
pub fn headers(expected_last: u64, relay_seq: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
        itoa::Buffer::new().format(expected_last),
    );
    h.insert(SEQ_HEADER, relay_seq);
    h
}

/// Why publishing stopped for good. Each one stops the ingestor (exit non-zero).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// JetStream refuses the message and will go on refusing it.
    #[error("JetStream refuses to store more ({code}: {description}): raise the limit (account or stream storage, max_msg_size), then restart")]
    Limits {
        /// JetStream's error code.
        code: u64,
        /// Its description.
        description: String,
    },
    /// The stream is not where the ingestor left it.
    #[error("{0}; restart the ingestor to reconcile with what the stream holds")]
    StreamChanged(String),
}

/// Publishes what the relay reader decoded.
pub struct Publisher {
    pub client: async_nats::Client,
    pub js: Context,
    pub stream: String,
    pub window: usize,
    pub window_bytes: usize,
    pub ack_timeout: Duration,
    pub metrics: Metrics,
    /// Where the stream and the cursor stand at start.
    pub start: Position,
    /// The stream's last sequence at start: the first publish expects it.
    pub last_sequence: u64,
    /// The server's `max_payload`, read once at connect (`server_info()` clones the whole
    /// INFO, too much for every frame).
    pub max_payload: usize,
}

impl Publisher {
    /// Publishes every batch from `rx` until it closes, then waits for the window to drain
    /// (at most `drain_timeout`). Acked positions go to `cursor`. Returns an error only for
    /// what stops the ingestor (see [`PublishError`]).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Batch>,
        cursor: watch::Sender<Position>,
        drain_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Result<(), PublishError> {
        let inbox = self.client.new_inbox();
        let mut acks = self
            .client
            .subscribe(format!("{inbox}.>"))
            .await
            .map_err(|e| PublishError::StreamChanged(format!("cannot subscribe to acks: {e}")))?;
        let mut w = Window {
            pending: VecDeque::with_capacity(self.window + firehose::MAX_OPS),
            bytes: 0,
            unacked: 0,
            next_seq: self.last_sequence + 1,
            inbox,
            round: 0,
            position: self.start,
            backoff: BACKOFF_MIN,
            last_warn: None,
            counters: vec![None; firehose::Action::ALL.len() * LABELS],
        };
        let mut failed: Option<Failure> = None;
        let mut draining: Option<Instant> = None;
        loop {
            match failed.take() {
                Some(Failure::Permanent { code, description }) => {
                    return Err(PublishError::Limits { code, description })
                }
                Some(Failure::Retry(_)) if draining.is_some() => {
                    break; // no recovery during shutdown: what is unacked is read again on restart
                }
                Some(Failure::Retry(reason)) => {
                    self.recover(&mut w, &mut acks, &reason, &cursor, &shutdown)
                        .await?;
                    continue;
                }
                None => {}
            }
            if draining.is_some_and(|d| d.elapsed() >= drain_timeout) {
                break;
            }
            if draining.is_some() && w.unacked == 0 {
                // Frames without messages at the end of the window complete at once.
                self.complete_front(&mut w, &cursor);
                break;
            }
            let room =
                draining.is_none() && w.pending.len() < self.window && w.bytes < self.window_bytes;
            let deadline = w
                .pending
                .iter()
                .find_map(|p| p.msg.as_ref().filter(|m| !m.acked).map(|m| m.sent))
                .map(|sent| sent + self.ack_timeout);
            tokio::select! {
                biased;
                Some(ack) = acks.next() => {
                    // Take every ack already here, then move the cursor once.
                    let mut next = Some(ack);
                    while let Some(ack) = next {
                        if let Err(f) = self.on_ack(&mut w, &ack) {
                            failed.get_or_insert(f);
                        }
                        next = acks.next().now_or_never().flatten();
                    }
                    self.complete_front(&mut w, &cursor);
                }
                _ = sleep_until(deadline) => {
                    failed = Some(Failure::Retry(format!("no ack within {:?}", self.ack_timeout)));
                }
                _ = shutdown.cancelled(), if draining.is_none() => draining = Some(Instant::now()),
                batch = rx.recv(), if room => match batch {
                    Some(batch) => {
                        if let Err(f) = self.send(&mut w, batch).await {
                            failed = Some(f);
                        }
                        self.complete_front(&mut w, &cursor);
                    }
                    None => draining = Some(Instant::now()),
                },
                _ = tokio::time::sleep(drain_timeout), if draining.is_some() => {}
            }
            self.metrics.inflight.set(w.unacked as i64);
        }
        if w.unacked > 0 {
            warn!(
                cursor = w.position.relay_seq,
                unacked = w.unacked,
                "shutdown: gave up waiting for JetStream acks; the events after the cursor will be read again on restart"
            );
        }
        Ok(())
    }

    /// Sends a frame's messages; a placeholder marks the end of a frame whose last message
    /// was not sent (none, or too large for the server).
    async fn send(&self, w: &mut Window, batch: Batch) -> Result<(), Failure> {
        let relay_seq_text: std::sync::Arc<str> = itoa::Buffer::new().format(batch.seq).into();
        let max_payload = self.max_payload;
        let mut result = Ok(());
        let mut ended = false;
        let n = batch.messages.len();
        for (i, m) in batch.messages.into_iter().enumerate() {
            // Headers take well under 128 bytes.
            if m.payload.len() + 128 > max_payload {
                self.metrics.skip(firehose::SkipReason::TooLargeForNats);
                warn!(seq = batch.seq, id = %m.id(), bytes = m.payload.len(), max_payload, "message larger than the server's max_payload; skipped (raise max_payload)");
                continue;
            }
            ended = i + 1 == n;
            let mut out = Outgoing {
                counter: w.counter(&self.metrics, m.action, m.collection()),
                subject: Subject::from(m.subject),
                payload: Bytes::from(m.payload),
                relay_seq_text: relay_seq_text.clone(),
                stream_seq: w.next_seq,
                sent: Instant::now(),
                acked: false,
            };
            w.next_seq += 1;
            if result.is_ok() {
                result = self.publish(w, &mut out).await;
            }
            w.bytes += out.payload.len();
            w.unacked += 1;
            w.pending.push_back(Pending {
                relay_seq: batch.seq,
                last_of_frame: i + 1 == n,
                msg: Some(out),
            });
        }
        if !ended {
            w.pending.push_back(Pending {
                relay_seq: batch.seq,
                last_of_frame: true,
                msg: None,
            });
        }
        result
    }

    /// One publish; the caller keeps the message until its ack.
    async fn publish(&self, w: &Window, m: &mut Outgoing) -> Result<(), Failure> {
        m.sent = Instant::now();
        let reply = w.reply(m.stream_seq);
        self.client
            .publish_with_reply_and_headers(
                m.subject.clone(),
                reply,
                headers(m.stream_seq - 1, &m.relay_seq_text),
                m.payload.clone(),
            )
            .await
            .map_err(|e| Failure::Retry(format!("publish: {e}")))
    }

    /// Marks the message an ack names; a refusal or an inconsistent ack asks for recovery.
    fn on_ack(&self, w: &mut Window, ack: &async_nats::Message) -> Result<(), Failure> {
        let mut parts = ack.subject.as_str().rsplit('.');
        let (Some(seq), Some(round)) = (
            parts.next().and_then(|s| s.parse::<u64>().ok()),
            parts.next().and_then(|s| s.parse::<u64>().ok()),
        ) else {
            return Ok(());
        };
        if round != w.round {
            return Ok(()); // an answer to a publish sent again since
        }
        let Some(m) = w.find(seq) else {
            return Ok(());
        };
        match parse_ack(ack) {
            Ack::Stored(s) if s == seq => {
                if !m.acked {
                    m.acked = true;
                    w.unacked -= 1;
                }
                Ok(())
            }
            Ack::Stored(s) => Err(Failure::Retry(format!(
                "message sent as stream seq {seq} was stored at {s}"
            ))),
            Ack::Refused { code, description } if PERMANENT.contains(&code) => {
                Err(Failure::Permanent { code, description })
            }
            Ack::Refused { code, description } => {
                Err(Failure::Retry(format!("refused ({code}): {description}")))
            }
        }
    }

    /// Pops acked messages (and placeholders) from the front, counts them, and moves the
    /// cursor at each frame's last message.
    fn complete_front(&self, w: &mut Window, cursor: &watch::Sender<Position>) {
        let mut moved = false;
        while let Some(front) = w.pending.front() {
            if front.msg.as_ref().is_some_and(|m| !m.acked) {
                break;
            }
            let Some(p) = w.pending.pop_front() else {
                break;
            };
            if let Some(m) = &p.msg {
                w.bytes -= m.payload.len();
                w.position.stream_seq = m.stream_seq;
                m.counter.inc();
                self.metrics.published.inc();
            }
            if p.last_of_frame {
                w.position.relay_seq = Some(p.relay_seq);
                moved = true;
            }
        }
        if moved {
            w.backoff = BACKOFF_MIN;
            if let Some(seq) = w.position.relay_seq {
                self.metrics.cursor_seq.set(seq);
            }
            let _ = cursor.send(w.position);
        }
    }

    /// One recovery round (see the module docs).
    async fn recover(
        &self,
        w: &mut Window,
        acks: &mut async_nats::Subscriber,
        reason: &str,
        cursor: &watch::Sender<Position>,
        shutdown: &CancellationToken,
    ) -> Result<(), PublishError> {
        self.metrics.publish_rounds.inc();
        if w.last_warn
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            w.last_warn = Some(Instant::now());
            warn!(reason, unacked = w.unacked, "JetStream publish failed; checking what the stream holds, then sending the rest again in order");
        }
        // Back off once per round, taking the acks that still arrive.
        let pause = tokio::time::sleep(w.backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                _ = shutdown.cancelled() => return Ok(()),
                Some(ack) = acks.next() => {
                    if let Err(Failure::Permanent { code, description }) = self.on_ack(w, &ack) {
                        return Err(PublishError::Limits { code, description });
                    }
                    self.complete_front(w, cursor);
                }
            }
        }
        w.backoff = (w.backoff * 2).min(BACKOFF_MAX);
        let last = match self.stream_last().await {
            Ok(last) => last,
            Err(e) => {
                if w.last_warn
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
                {
                    w.last_warn = Some(Instant::now());
                    warn!(error = %e, "JetStream unavailable; retrying");
                }
                // Nothing is sent while the stream cannot be asked: the next round will.
                w.round += 1;
                return Ok(());
            }
        };
        let first = w
            .pending
            .iter()
            .find_map(|p| p.msg.as_ref().map(|m| m.stream_seq))
            .unwrap_or(w.next_seq);
        if last + 1 < first {
            return Err(PublishError::StreamChanged(format!(
                "stream {} now ends at sequence {last}, below the {} this ingestor had stored (deleted, purged to an older state or restored?)",
                self.stream,
                first - 1
            )));
        }
        if last >= w.next_seq {
            return Err(PublishError::StreamChanged(format!(
                "stream {} ends at sequence {last}, past every message this ingestor sent: another writer publishes into it",
                self.stream
            )));
        }
        if last >= first {
            self.check_identity(w, last).await?;
        }
        for p in w.pending.iter_mut() {
            if let Some(m) = p.msg.as_mut().filter(|m| m.stream_seq <= last && !m.acked) {
                m.acked = true;
                w.unacked -= 1;
            }
        }
        self.complete_front(w, cursor);
        w.round += 1;
        self.resend(w).await;
        Ok(())
    }

    /// Sends again every unacked message, in order, under the current round.
    async fn resend(&self, w: &mut Window) {
        let mut resent = 0u64;
        for i in 0..w.pending.len() {
            let Some(mut m) = w.pending[i].msg.take() else {
                continue;
            };
            let r = if m.acked {
                Ok(())
            } else {
                resent += 1;
                self.publish(w, &mut m).await
            };
            w.pending[i].msg = Some(m);
            if let Err(Failure::Retry(e) | Failure::Permanent { description: e, .. }) = r {
                info!(error = %e, "resend interrupted; the next round goes on");
                break;
            }
        }
        self.metrics.publish_retries.inc_by(resent);
    }

    /// The stream's last sequence, asked of JetStream.
    async fn stream_last(&self) -> Result<u64, String> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| e.to_string())?;
        Ok(stream
            .get_info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .last_sequence)
    }

    /// The message at `seq` must be the one this ingestor sent there.
    async fn check_identity(&self, w: &Window, seq: u64) -> Result<(), PublishError> {
        let Some(ours) = w
            .pending
            .iter()
            .find_map(|p| p.msg.as_ref().filter(|m| m.stream_seq == seq))
        else {
            return Ok(());
        };
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| PublishError::StreamChanged(e.to_string()))?;
        let held = match stream.direct_get(seq).await {
            Ok(m) => m,
            Err(e) => {
                // Not readable right now: the next round checks again.
                info!(seq, error = %e, "could not read back the stream's last message");
                return Ok(());
            }
        };
        let relay = held
            .headers
            .get(SEQ_HEADER)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        if held.subject != ours.subject
            || relay != *ours.relay_seq_text
            || held.payload != ours.payload
        {
            return Err(PublishError::StreamChanged(format!(
                "stream {} holds at sequence {seq} a message this ingestor did not send there (another writer?)",
                self.stream
            )));
        }
        Ok(())
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
