//! The publisher: a bounded window of publishes into the stream, each one checked by the
//! server against the stream's last sequence, acks read from one subscription.
//!
//! Order and exactly-once are structural, not lucky. The ingestor is the only writer
//! (`lease.rs`), so it knows which stream sequence each message will get: the next one.
//! Every publish carries `Nats-Expected-Last-Sequence` = that sequence minus one, and the
//! server stores a message only right after its predecessor: never twice, never out of
//! order, whatever is resent, lost in a reconnect, or delayed past any window. A lost
//! publish makes every later one fail; a stalled server makes acks time out. Either way
//! the publisher runs one recovery round (`recover.rs`): stop sending, ask the stream
//! where it ends, check that its last message is the one expected there, and send the
//! rest again, in order, after one back-off per round. A stream that went backwards, holds
//! a message the ingestor did not publish, or refuses a publish for good (account or
//! stream storage limits, message size) stops the ingestor with a message: restarting is
//! the operator's call, and the start (`resume.rs`) reconciles again from what the stream
//! holds.
//!
//! # Two paths, chosen once at start ([`choose_path`])
//!
//! - **Batched** (nats-server 2.14+, `publish.batch = true`, the default): fast-ingest
//!   batches (ADR-50, `batch.rs`). The stream gets `allow_batched`; messages are stored as
//!   they arrive and the server answers once per `flow` messages instead of once per
//!   message. The guarantees hold the same way, because the batch changes only how acks
//!   come back, not what is checked:
//!   - *fencing*: every message still carries `Nats-Expected-Last-Sequence`. Messages of
//!     one batch may interleave with other publishers' messages, so this header, not the
//!     batch, is what keeps a stale writer out: its first message after a takeover is
//!     refused, the batch ends there (gap mode `fail`), and nothing after it is stored;
//!   - *a gap* (a message lost between client and server, a leader change): the server
//!     ends the batch before the gap and says how many messages it stored; the publisher
//!     runs a recovery round and sends the rest in a new batch;
//!   - *a lost flow ack* costs nothing when a later one arrives (each covers all before
//!     it); when none does, the batch is ended after [`LINGER`] and the end's answer
//!     covers everything stored; when that is lost too, one recovery round after
//!     `publish.ack_timeout`.
//!
//!   A batch stays open while messages flow. When the input pauses (or the oldest
//!   unacknowledged message waited [`LINGER`]), the publisher ends it (end-of-batch, not
//!   stored) so the last messages are acknowledged and the cursor moves; the next message
//!   opens a new one, after the server answered its first message.
//! - **Per message** (older servers, or `publish.batch = false`): one core-NATS publish
//!   with its own ack per message.
//!
//! The hot path: one pre-built subject per message from the decoder, two small headers,
//! one core-NATS publish with a reply subject under this publisher's inbox. No ack future,
//! oneshot or timer per message: acks arrive in order on one subscription and name the
//! message (or the batch) in their subject; one deadline watches the oldest unacknowledged
//! publish.
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
use tracing::warn;

mod ack;
mod batch;
mod error;
mod path;
mod recover;
mod window;

pub use error::PublishError;
pub use path::{choose_path, Path};

use ack::{parse_ack, Ack, Failure, Retry, PERMANENT};
use batch::{Answer, Op, Open};
use window::{Outgoing, Pending, Window, BACKOFF_MIN, LABELS};

/// Header carrying the relay seq of the frame a message came from.
pub use contract::header::SEQ as SEQ_HEADER;

/// JetStream's code for "batch publish not enabled on stream".
const BATCH_DISABLED: u64 = 10205;

/// How long a batch waits, with messages unacknowledged (or none sent), before the
/// publisher ends it: bounds the cursor's delay when the input pauses.
pub const LINGER: Duration = Duration::from_millis(100);

/// The JetStream context for stream management and the benchmark's ceiling publisher:
/// `ack_timeout` per request, at most the window plus one frame's ops awaiting acks.
pub fn context(client: async_nats::Client, cfg: &crate::config::Publish) -> Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(cfg.ack_timeout)
        .max_ack_inflight(cfg.window + contract::limits::MAX_OPS)
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

/// Publishes what the relay reader decoded.
pub struct Publisher {
    pub client: async_nats::Client,
    pub js: Context,
    pub stream: String,
    pub path: Path,
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
            .map_err(PublishError::Subscribe)?;
        let mut w = Window {
            pending: VecDeque::with_capacity(self.window + contract::limits::MAX_OPS),
            bytes: 0,
            unacked: 0,
            next_seq: self.last_sequence + 1,
            inbox,
            round: 0,
            position: self.start,
            backoff: BACKOFF_MIN,
            warn: service::telemetry::RateLimit::new(Duration::from_secs(5)),
            counters: vec![None; firehose::Action::ALL.len() * LABELS],
            send_at: 0,
            open: None,
            batches: 0,
        };
        let mut failed: Option<Failure> = None;
        let mut draining: Option<Instant> = None;
        loop {
            match failed.take() {
                Some(Failure::Permanent { code, description }) => {
                    return Err(self.permanent(code, description))
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
            // One timer: the oldest unacked publish's deadline, or the open batch's end.
            let deadline = w
                .pending
                .iter()
                .find_map(|p| p.msg.as_ref().filter(|m| !m.acked).map(|m| m.sent))
                .map(|sent| sent + self.ack_timeout);
            let end_at = w
                .open
                .as_ref()
                .and_then(|b| self.end_at(&w, b, draining.is_some()));
            let wake = match (deadline, end_at) {
                (Some(d), Some(e)) => Some(d.min(e)),
                (d, e) => d.or(e),
            };
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
                    if failed.is_none() {
                        failed = self.pump(&mut w).await.err();
                    }
                }
                _ = sleep_until(wake) => {
                    if deadline.is_some_and(|d| d <= Instant::now()) {
                        failed = Some(Failure::Retry(Retry::Timeout(self.ack_timeout)));
                    } else {
                        failed = self.end_batch(&mut w).await.err();
                    }
                }
                _ = shutdown.cancelled(), if draining.is_none() => draining = Some(Instant::now()),
                batch = rx.recv(), if room => match batch {
                    Some(batch) => {
                        self.intake(&mut w, batch);
                        failed = self.pump(&mut w).await.err();
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

    /// The error that stops the ingestor for a refusal no resend cures.
    fn permanent(&self, code: u64, description: String) -> PublishError {
        if code == BATCH_DISABLED {
            PublishError::BatchesRefused {
                stream: self.stream.clone(),
                description,
            }
        } else {
            PublishError::Limits { code, description }
        }
    }

    /// Puts a frame's messages in the window, unsent; a placeholder marks the end of a frame
    /// whose last message is not sent (none, or too large for the server).
    fn intake(&self, w: &mut Window, batch: Batch) {
        let relay_seq_text: std::sync::Arc<str> = itoa::Buffer::new().format(batch.seq).into();
        let max_payload = self.max_payload;
        let mut ended = false;
        let n = batch.messages.len();
        let now = Instant::now();
        for (i, m) in batch.messages.into_iter().enumerate() {
            // Headers take well under 128 bytes.
            if m.payload.len() + 128 > max_payload {
                self.metrics.skip(firehose::SkipReason::TooLargeForNats);
                warn!(seq = batch.seq, id = %m.id(), bytes = m.payload.len(), max_payload, "message larger than the server's max_payload; skipped (raise max_payload)");
                continue;
            }
            ended = i + 1 == n;
            let out = Outgoing {
                counter: w.counter(&self.metrics, m.action, m.collection()),
                subject: Subject::from(m.subject),
                payload: Bytes::from(m.payload),
                relay_seq_text: relay_seq_text.clone(),
                stream_seq: w.next_seq,
                sent: now, // set again when sent
                acked: false,
            };
            w.next_seq += 1;
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
    }

    /// Sends what the window holds unsent, in order, as far as the path allows: everything
    /// per message; in a batch, up to [`batch::OUTSTANDING`] flows past the last flow ack.
    async fn pump(&self, w: &mut Window) -> Result<(), Failure> {
        while w.send_at < w.pending.len() {
            let i = w.send_at;
            let Some(mut m) = w.pending[i].msg.take() else {
                w.send_at += 1;
                continue;
            };
            let r = if m.acked {
                Ok(true)
            } else {
                self.publish(w, &mut m).await
            };
            w.pending[i].msg = Some(m);
            match r {
                Ok(true) => w.send_at += 1,
                Ok(false) => break, // the batch waits for an answer
                Err(f) => return Err(f),
            }
        }
        Ok(())
    }

    /// One publish, unless the open batch must wait (`Ok(false)`); the caller keeps the
    /// message until its ack.
    async fn publish(&self, w: &mut Window, m: &mut Outgoing) -> Result<bool, Failure> {
        let now = Instant::now();
        let reply = match self.path {
            Path::PerMessage => w.reply(m.stream_seq),
            Path::Batched { flow } => {
                let open = w.open.get_or_insert_with(|| {
                    w.batches += 1;
                    Open::new(
                        &w.inbox,
                        w.batches,
                        flow,
                        m.stream_seq - 1,
                        Subject::from(contract::subject::batch_end(&self.stream)),
                    )
                });
                if !open.may_send() {
                    return Ok(false);
                }
                let seq = open.sent + 1;
                if open.base + seq != m.stream_seq {
                    // Only a new round re-bases; never reached, but never sent misplaced.
                    return Err(Failure::Retry(Retry::Misplaced {
                        sent: open.base + seq,
                        stored: m.stream_seq,
                    }));
                }
                open.sent = seq;
                open.last_sent = now;
                open.reply(seq, if seq == 1 { Op::Start } else { Op::Append })
            }
        };
        m.sent = now;
        self.client
            .publish_with_reply_and_headers(
                m.subject.clone(),
                reply,
                headers(m.stream_seq - 1, &m.relay_seq_text),
                m.payload.clone(),
            )
            .await
            .map_err(|e| Failure::Retry(Retry::Publish(e)))?;
        Ok(true)
    }

    /// When the open batch is to be ended: at once while draining, else [`LINGER`] after
    /// the oldest unacknowledged message was sent (or the last one, when all are acked).
    fn end_at(&self, w: &Window, b: &Open, draining: bool) -> Option<Instant> {
        if b.ending || !b.started || b.sent == 0 {
            return None;
        }
        if draining {
            return Some(Instant::now());
        }
        let oldest = w
            .pending
            .iter()
            .find_map(|p| p.msg.as_ref().filter(|m| !m.acked).map(|m| m.sent))
            .unwrap_or(b.last_sent);
        Some(oldest + LINGER)
    }

    /// Ends the open batch: an end-of-batch message (not stored), answered by the pub ack
    /// that says how many of its messages are stored.
    async fn end_batch(&self, w: &mut Window) -> Result<(), Failure> {
        let Some(b) = w.open.as_mut() else {
            return Ok(());
        };
        b.ending = true;
        let reply = b.reply(b.sent + 1, Op::EndOfBatch);
        self.client
            .publish_with_reply(b.end_subject.clone(), reply, Bytes::new())
            .await
            .map_err(|e| Failure::Retry(Retry::Publish(e)))
    }

    /// Marks what an ack confirms; a refusal or an inconsistent ack asks for recovery.
    fn on_ack(&self, w: &mut Window, ack: &async_nats::Message) -> Result<(), Failure> {
        if self.path.batched() {
            return self.on_answer(w, ack);
        }
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
            Ack::Stored(s) => Err(Failure::Retry(Retry::Misplaced {
                sent: seq,
                stored: s,
            })),
            Ack::Refused { code, description } if PERMANENT.contains(&code) => {
                Err(Failure::Permanent { code, description })
            }
            Ack::Refused { code, description } => {
                Err(Failure::Retry(Retry::Refused { code, description }))
            }
        }
    }

    /// An answer on the open batch's subject (answers to earlier batches are ignored: the
    /// recovery round that ended them asked the stream instead).
    fn on_answer(&self, w: &mut Window, ack: &async_nats::Message) -> Result<(), Failure> {
        let Some(b) = w.open.as_mut() else {
            return Ok(());
        };
        if batch::id_of(ack.subject.as_str(), &w.inbox) != Some(b.id.as_str()) {
            return Ok(());
        }
        let refused = |code, description| {
            if PERMANENT.contains(&code) || code == BATCH_DISABLED {
                Failure::Permanent { code, description }
            } else {
                Failure::Retry(Retry::Refused { code, description })
            }
        };
        let stored = match batch::parse(ack) {
            Answer::Flow { seq, flow } => {
                b.started = true;
                b.flow = u64::from(flow.max(1));
                seq.min(b.sent)
            }
            Answer::Ended { stream_seq, count } => {
                let (base, sent) = (b.base, b.sent);
                if count > 0 && stream_seq != base + count {
                    return Err(Failure::Retry(Retry::Misplaced {
                        sent: base + count,
                        stored: stream_seq,
                    }));
                }
                w.open = None;
                self.mark_acked(w, base + count.min(sent));
                return if count < sent {
                    Err(Failure::Retry(Retry::Ended {
                        stored: count,
                        sent,
                    }))
                } else {
                    Ok(())
                };
            }
            Answer::Gap { expected, got } => {
                return Err(Failure::Retry(Retry::Gap { expected, got }))
            }
            Answer::Refused {
                code, description, ..
            }
            | Answer::Error { code, description } => return Err(refused(code, description)),
            Answer::Unreadable => return Err(Failure::Retry(Retry::Unreadable)),
        };
        if stored > b.acked {
            b.acked = stored;
            let upto = b.base + stored;
            self.mark_acked(w, upto);
        }
        Ok(())
    }

    /// Marks every message up to stream sequence `upto` acked.
    fn mark_acked(&self, w: &mut Window, upto: u64) {
        for p in w.pending.iter_mut() {
            let Some(m) = p.msg.as_mut() else {
                continue;
            };
            if m.stream_seq > upto {
                break;
            }
            if !m.acked {
                m.acked = true;
                w.unacked -= 1;
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
            w.send_at = w.send_at.saturating_sub(1);
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
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
