//! The NATS side of one client: where to start, its own consumer, its filters.
//!
//! Where it sits: stream `BSKY` → **pump** (ephemeral ordered pull consumer, one per
//! client, `filter_subjects` from the collections) → bounded buffer → session (WebSocket).
//!
//! - **Start.** A `cursor` is in *event* time: [`start`] seeks `cursor - margin` with
//!   [`kit::seek::seq_at_time`] (a binary search on `time_us`, never JetStream's storage
//!   time). Because neighbouring event times are out of order by up to about a second, the
//!   pump then drops the events older than the cursor until it reads one at or after
//!   `cursor + margin`; from there on it delivers everything, in stream order. No cursor,
//!   or one in the future: the live tail. One older than the stream: its first message.
//! - **Memory.** The consumer pulls `pull_batch` messages at a time and asks for more only
//!   as the pump reads them; the pump reads only when the buffer has room, counted in
//!   payload bytes by a semaphore ([`Budget`]). A slow client therefore makes its own
//!   consumer wait, and nothing grows in the gateway.
//! - **Filters.** The DID filter and `maxMessageSizeBytes` are applied here, message by
//!   message, with the latest filters; new collections recreate the consumer at the next
//!   stream sequence after the last one read, so an `options_update` loses nothing and
//!   repeats nothing.

use crate::params::Filters;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
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

impl Pump {
    /// Reads the stream for one client until the session drops its end of `tx` or of
    /// `filters`; an error means the stream cannot be read.
    pub async fn run(
        self,
        mut filters: watch::Receiver<Arc<Filters>>,
        tx: mpsc::Sender<Outgoing>,
    ) -> Result<(), PumpError> {
        let mut next_seq = self.start.seq;
        let mut window = self.start.window;
        let mut current = filters.borrow_and_update().clone();
        loop {
            let subjects = current.subjects();
            let consumer = self
                .stream
                .create_consumer(OrderedConfig {
                    filter_subjects: subjects.clone(),
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: next_seq,
                    },
                    max_batch: i64::try_from(self.pull_batch).unwrap_or(i64::MAX),
                    ..Default::default()
                })
                .await
                .map_err(|e| PumpError::Consumer(e.to_string()))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| PumpError::Consumer(e.to_string()))?;
            tracing::debug!(start = next_seq, ?subjects, "consumer created");
            loop {
                tokio::select! {
                    biased;
                    changed = filters.changed() => {
                        if changed.is_err() {
                            return Ok(()); // the session ended
                        }
                        current = filters.borrow_and_update().clone();
                        if current.subjects() != subjects {
                            break; // recreate the consumer at next_seq
                        }
                    }
                    m = messages.next() => {
                        let m = match m {
                            Some(Ok(m)) => m,
                            Some(Err(e)) => return Err(PumpError::Read(e.to_string())),
                            None => return Err(PumpError::Read("consumer ended".into())),
                        };
                        let info = m.info().map_err(|e| PumpError::Read(e.to_string()))?;
                        let (seq, pending) = (info.stream_sequence, info.pending);
                        next_seq = seq + 1;
                        let payload = m.message.payload;
                        let env: Envelope = match serde_json::from_slice(&payload) {
                            Ok(env) => env,
                            Err(e) => {
                                tracing::warn!(seq, error = %e, "payload off the contract: skipped");
                                continue;
                            }
                        };
                        if let Some(w) = window {
                            if env.time_us >= w.until {
                                window = None;
                            } else if env.time_us < w.cursor {
                                continue;
                            }
                        }
                        let size_ok = current.max_message_bytes == 0
                            || payload.len() <= current.max_message_bytes;
                        if !size_ok || !current.wants_did(&env.did) {
                            continue;
                        }
                        let time_us = env.time_us;
                        let Some(permit) = self.budget.take(payload.len()).await else {
                            return Ok(());
                        };
                        let out = Outgoing { payload, time_us, pending, _permit: permit };
                        if tx.send(out).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}
