//! The NATS side of one client: where to start, its own consumer, its filters.
//!
//! Where it sits: stream `BSKY` → **pump** (ephemeral pull consumer, one per
//! client, `filter_subjects` from the collections) → bounded buffer → session (WebSocket).
//!
//! - **Start.** A `cursor` is in *event* time: [`start`] seeks `cursor - margin` with
//!   [`kit::seek::seq_at_time`] (a binary search on `time_us`, never JetStream's storage
//!   time). Because neighbouring event times are out of order by up to about a second, the
//!   pump then drops the events older than the cursor until it reads one at or after
//!   `cursor + margin`; from there on it delivers everything, in stream order. No cursor,
//!   or one in the future: the live tail. One older than the stream: its first message.
//! - **Memory.** Each pull request asks for at most `pull_batch` messages and `buffer_bytes`
//!   bytes, and the next one leaves only when the pump has handed the last one over; the
//!   pump hands a message over only when the client's buffer has room, counted in payload
//!   bytes ([`Budget`]). Per client that is at most two buffers of payload (one pulled, one
//!   buffered), or one larger message pulled alone. A slow client makes its own pulls
//!   wait; nothing grows in the gateway. A consumer a stuck client leaves idle for
//!   [`INACTIVE`] is removed by the server and recreated at the next sequence.
//! - **Filters.** The DID filter and `maxMessageSizeBytes` are applied here, message by
//!   message, with the latest filters; new collections recreate the consumer at the next
//!   stream sequence after the last one read, so an `options_update` loses nothing and
//!   repeats nothing.

use crate::params::Filters;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures_util::StreamExt;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Why the pump stopped: the stream cannot be read (the session closes with 1011).
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("seeking the cursor: {0}")]
    Seek(#[from] kit::seek::SeekError),
    #[error("reading the stream's state: {0}")]
    Info(String),
    #[error("creating the consumer: {0}")]
    Consumer(String),
    #[error("reading the consumer: {0}")]
    Read(String),
}

/// The bytes of the per-client buffer: one permit per payload byte.
#[derive(Clone)]
pub struct Budget {
    sem: Arc<Semaphore>,
    size: usize,
}

impl Budget {
    /// A buffer of `size` bytes (a single larger message takes the whole budget).
    pub fn new(size: usize) -> Self {
        let size = size.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        Budget {
            sem: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes.clamp(1, self.size)).unwrap_or(u32::MAX);
        self.sem.clone().acquire_many_owned(n).await.ok()
    }

    /// Bytes read from NATS and not yet written to the client.
    pub fn used(&self) -> usize {
        self.size - self.sem.available_permits()
    }
}

/// One event for the client, holding its share of the buffer until it is written.
pub struct Outgoing {
    pub payload: Bytes,
    /// Its event time.
    pub time_us: i64,
    /// Messages matching the filters after this one, when it was read.
    pub pending: u64,
    _permit: OwnedSemaphorePermit,
}

/// Events older than `cursor` are dropped until one at or after `until` is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub cursor: i64,
    pub until: i64,
}

/// Where a client starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start {
    /// First stream sequence to read.
    pub seq: u64,
    pub window: Option<Window>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn tail(stream: &Stream) -> Result<u64, PumpError> {
    let info = stream
        .get_info()
        .await
        .map_err(|e| PumpError::Info(e.to_string()))?;
    Ok(info.state.last_sequence + 1)
}

/// Where a client with this `cursor` (unix microseconds, event time) starts.
pub async fn start(
    stream: &Stream,
    cursor: Option<i64>,
    margin: Duration,
) -> Result<Start, PumpError> {
    let live = match cursor {
        None => true,
        Some(c) => c > now_us(),
    };
    let Some(cursor) = cursor.filter(|_| !live) else {
        return Ok(Start {
            seq: tail(stream).await?,
            window: None,
        });
    };
    let margin = i64::try_from(margin.as_micros()).unwrap_or(i64::MAX);
    let seq = match kit::seek::seq_at_time(stream, cursor.saturating_sub(margin)).await? {
        Some(seq) => seq,
        None => tail(stream).await?,
    };
    Ok(Start {
        seq,
        window: Some(Window {
            cursor,
            until: cursor.saturating_add(margin),
        }),
    })
}

/// The two fields of a payload the gateway looks at.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    did: Cow<'a, str>,
    time_us: i64,
}

/// What the pump needs besides its channel.
pub struct Pump {
    pub stream: Stream,
    pub start: Start,
    pub pull_batch: usize,
    pub budget: Budget,
}

/// How a consumer's reading ended.
enum Read {
    /// The session is gone.
    Done,
    /// New collections: recreate the consumer at `next_seq`.
    Refilter,
    /// The consumer failed; recreate it after a pause.
    Failed(String),
}

/// Consecutive failures (consumer creation or pull) before the client is closed.
const RETRIES: u32 = 10;
/// How long a pull request waits for messages on the live tail.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// The server deletes a consumer whose client stopped pulling for this long (a stuck
/// client); the pump then recreates it at the next sequence.
const INACTIVE: Duration = Duration::from_secs(60);

impl Pump {
    /// Reads the stream for one client until the session drops its end of `tx` or of
    /// `filters`; an error means the stream could not be read, [`RETRIES`] times in a row.
    pub async fn run(
        mut self,
        mut filters: watch::Receiver<Arc<Filters>>,
        tx: mpsc::Sender<Outgoing>,
    ) -> Result<(), PumpError> {
        let mut cursor = Position {
            next_seq: self.start.seq,
            window: self.start.window.take(),
        };
        let mut failures = 0;
        loop {
            let current = filters.borrow_and_update().clone();
            let why = match self.create(&current, cursor.next_seq).await {
                Ok(consumer) => {
                    let name = consumer.cached_info().name.clone();
                    let read = self
                        .read(
                            &consumer,
                            current,
                            &mut filters,
                            &tx,
                            &mut cursor,
                            &mut failures,
                        )
                        .await;
                    // Best effort: the server drops it after INACTIVE anyway.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        self.stream.delete_consumer(&name),
                    )
                    .await;
                    match read {
                        Read::Done => return Ok(()),
                        Read::Refilter => continue,
                        Read::Failed(why) => PumpError::Read(why),
                    }
                }
                Err(e) => e,
            };
            failures += 1;
            if failures >= RETRIES {
                return Err(why);
            }
            tracing::debug!(failures, error = %why, "consumer failed; recreating it");
            let pause = Duration::from_millis(100 << failures.min(6));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    async fn create(&self, filters: &Filters, start: u64) -> Result<PullConsumer, PumpError> {
        self.stream
            .create_consumer(pull::Config {
                filter_subjects: filters.subjects(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                },
                ack_policy: AckPolicy::None,
                inactive_threshold: INACTIVE,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| PumpError::Consumer(e.to_string()))
    }

    /// Pulls from `consumer` and hands the matching events to the session, one bounded
    /// pull request after another.
    async fn read(
        &self,
        consumer: &PullConsumer,
        mut current: Arc<Filters>,
        filters: &mut watch::Receiver<Arc<Filters>>,
        tx: &mpsc::Sender<Outgoing>,
        pos: &mut Position,
        failures: &mut u32,
    ) -> Read {
        let subjects = current.subjects();
        // After a pull that could not deliver the next message within `buffer_bytes`, the
        // next pull asks for that one message alone, whatever its size.
        let mut one_big = false;
        loop {
            let (count, bytes) = if one_big {
                (1, 0)
            } else {
                (self.pull_batch, self.budget.size)
            };
            let batch = consumer
                .batch()
                .max_messages(count)
                .max_bytes(bytes)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => return Read::Failed(e.to_string()),
            };
            let mut received = 0usize;
            loop {
                let m = tokio::select! {
                    biased;
                    changed = filters.changed() => {
                        if changed.is_err() {
                            return Read::Done;
                        }
                        current = filters.borrow_and_update().clone();
                        if current.subjects() != subjects {
                            return Read::Refilter;
                        }
                        continue;
                    }
                    m = batch.next() => m,
                };
                let m = match m {
                    None => {
                        tracing::trace!(received, "pull request complete");
                        break;
                    }
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        let text = e.to_string();
                        tracing::trace!(received, error = %text, "pull request ended");
                        if text.contains("Exceeds MaxBytes") {
                            one_big = received == 0;
                            break;
                        }
                        return Read::Failed(text);
                    }
                };
                received += 1;
                *failures = 0;
                one_big = false;
                if !self.pass(m, &current, tx, pos).await {
                    return Read::Done;
                }
            }
        }
    }

    /// Filters one message and hands it over; `false` when the session is gone.
    async fn pass(
        &self,
        m: async_nats::jetstream::Message,
        filters: &Filters,
        tx: &mpsc::Sender<Outgoing>,
        pos: &mut Position,
    ) -> bool {
        let Ok(info) = m.info() else {
            tracing::warn!("message without JetStream metadata: skipped");
            return true;
        };
        let (seq, pending) = (info.stream_sequence, info.pending);
        pos.next_seq = seq + 1;
        // Jetstream v1 has no `#sync` event (clients reject unknown kinds).
        if m.message.subject.as_str() == SYNC_SUBJECT {
            return true;
        }
        let payload = m.message.payload;
        let env: Envelope = match serde_json::from_slice(&payload) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(seq, error = %e, "payload off the contract: skipped");
                return true;
            }
        };
        if let Some(w) = pos.window {
            if env.time_us >= w.until {
                pos.window = None;
            } else if env.time_us < w.cursor {
                return true;
            }
        }
        let size_ok = filters.max_message_bytes == 0 || payload.len() <= filters.max_message_bytes;
        if !size_ok || !filters.wants_did(&env.did) {
            return true;
        }
        let time_us = env.time_us;
        let Some(permit) = self.budget.take(payload.len()).await else {
            return false;
        };
        let out = Outgoing {
            payload,
            time_us,
            pending,
            _permit: permit,
        };
        tx.send(out).await.is_ok()
    }
}

/// The subject of `#sync` events, never sent to clients.
const SYNC_SUBJECT: &str = "bsky.sync";

/// How far the pump has read.
struct Position {
    /// The stream sequence after the last message read (delivered or filtered out).
    next_seq: u64,
    window: Option<Window>,
}
