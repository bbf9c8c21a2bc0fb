//! The NATS side of one client: where to start, its own consumer, its filters.
//!
//! Where it sits: stream `BSKY` → **pump** (pull consumer, one per client, named
//! `<client.consumer_prefix>-…`, `filter_subjects` from the collections) → bounded buffer →
//! session (WebSocket).
//!
//! - **Start.** A `cursor` is a stream sequence (below 10^15, inclusive) or a storage time
//!   in unix microseconds (the first message stored at or after it): [`start`] maps both to
//!   JetStream's own deliver policies, so nothing is searched. No cursor, or one ahead of
//!   the stream: the live tail. One older than the stream: with `[archive]` set, the
//!   archive from the cursor to its end, then the stream at exactly the next sequence
//!   ([`Pump::read_archive`]; the archive keeps each message's sequence and storage time,
//!   so what is sent is what the stream sent); without, the stream's first message. Either
//!   way a client that misses messages (neither the stream nor the archive holds them any
//!   more) is counted (`bsky_gateway_cursor_clamped_total`); one older than a stream that
//!   still holds sequence 1 misses nothing.
//! - **What is sent.** Each payload with `time_us` set to the message's storage time and
//!   `"cursor"` to its sequence ([`crate::event`]): both follow stream order, so a client
//!   resuming from either loses nothing.
//! - **Memory.** Each pull request asks for at most `pull_batch` messages and `buffer_bytes`
//!   bytes, and the next one leaves only when the pump has handed the last one over; the
//!   pump hands a message over only when the client's buffer has room, counted in payload
//!   bytes ([`Budget`]). Per client that is at most two buffers of payload (one pulled, one
//!   buffered), or one larger message pulled alone; a client reading the archive also
//!   holds one compressed segment, and only `client.archive_readers` do at once. A slow
//!   client makes its own pulls wait; nothing grows in the gateway. A consumer a stuck client leaves idle for
//!   [`INACTIVE`] is removed by the server and recreated at the next sequence.
//! - **Failures.** Every pull asks for an idle heartbeat every [`HEARTBEAT`]: a server
//!   that died or restarted, or a consumer that is gone, is noticed within two of them,
//!   and the consumer is recreated at the next sequence, retrying every second at most,
//!   for up to [`RETRY_FOR`].
//! - **Filters.** The DID filter and `maxMessageSizeBytes` are applied here, message by
//!   message, with the latest filters; new collections recreate the consumer at the next
//!   stream sequence after the last one read, so an `options_update` loses nothing and
//!   repeats nothing.

use crate::event;
use crate::params::{Cursor, Filters};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use futures_util::StreamExt;
use kit::history::{History, Since};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Why the pump stopped: the stream cannot be read (the session closes with 1011).
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("reading the archive")]
    Archive(#[source] kit::handler::BoxError),
    #[error("reading the stream's state")]
    Info(#[source] async_nats::jetstream::stream::InfoError),
    #[error("creating the consumer")]
    Consumer(#[source] async_nats::jetstream::stream::ConsumerError),
    #[error("subscribing to the pull inbox")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error("sending a pull request")]
    Pull(#[source] async_nats::jetstream::consumer::pull::BatchRequestError),
    #[error("the server ended the pull request: {status} {description}")]
    Ended { status: u16, description: String },
    #[error("no message and no idle heartbeat for {0:?}: the server or the consumer is gone")]
    Silent(Duration),
    #[error("the pull inbox closed (the NATS connection is closed)")]
    Closed,
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
    /// The JSON sent: storage `time_us`, `cursor`.
    pub payload: Bytes,
    /// Its storage time, unix microseconds.
    pub time_us: i64,
    /// Messages matching the filters after this one, when it was read.
    pub pending: u64,
    _permit: OwnedSemaphorePermit,
}

/// Where a client's consumer starts (a JetStream deliver policy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum From {
    /// This stream sequence.
    Seq(u64),
    /// The first message stored at or after this time.
    Time(async_nats::datetime::DateTime),
}

/// Where a client starts, and whether its cursor was older than the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Start {
    /// Where in the stream (after the archive, if [`Start::archive`]).
    pub from: From,
    /// The cursor was older than the stream, which no longer holds sequence 1, and there
    /// is no archive.
    pub clamped: bool,
    /// The cursor was older than the stream: read the archive from here first.
    pub archive: Option<Since>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Where a client with this `cursor` starts: one stream-info request, no search. A cursor
/// older than the stream starts in the archive when there is one (`archive`).
pub async fn start(
    stream: &Stream,
    cursor: Option<Cursor>,
    archive: bool,
) -> Result<Start, PumpError> {
    let state = stream.get_info().await.map_err(PumpError::Info)?.state;
    let tail = From::Seq(state.last_sequence + 1);
    let first = From::Seq(state.first_sequence);
    let (from, older) = match cursor {
        None => (tail, None),
        Some(Cursor::Seq(seq)) if seq > state.last_sequence => (tail, None),
        // Sequence 0 does not exist: it means the first message, and loses nothing.
        Some(Cursor::Seq(seq)) if seq.max(1) < state.first_sequence => {
            (first, Some(Since::Seq(seq.max(1))))
        }
        Some(Cursor::Seq(seq)) => (From::Seq(seq.max(1)), None),
        Some(Cursor::Time(t)) if t > now_us() => (tail, None),
        Some(Cursor::Time(t)) => {
            let first_us = i64::try_from(state.first_timestamp.unix_timestamp_nanos() / 1000)
                .unwrap_or(i64::MAX);
            // An empty stream reports the Unix epoch as its first time.
            let older = state.messages > 0 && t < first_us;
            match async_nats::datetime::from_nanos(i128::from(t) * 1000) {
                Ok(time) if !older => (From::Time(time), None),
                // A stream that still holds sequence 1 holds everything: nothing is older.
                _ if state.first_sequence <= 1 => (first, None),
                _ => (first, older.then_some(Since::StoredTime(t))),
            }
        }
    };
    Ok(Start {
        from,
        clamped: older.is_some() && !archive,
        archive: older.filter(|_| archive),
    })
}

/// Whether a client that asked for `asked` and whose first archived message is `first`
/// lost messages before it: a sequence cursor below it, or a time cursor older than the
/// whole archive when the archive does not start at the stream's sequence 1.
async fn older_than_archive(history: &dyn History, asked: Since, first: u64) -> bool {
    match asked {
        Since::Seq(n) => first > n,
        Since::StoredTime(_) | Since::EventTime(_) => {
            first > 1 && matches!(history.first_seq().await, Ok(Some(f)) if f == first)
        }
    }
}

/// What the pump needs besides its channel.
pub struct Pump {
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub stream: Stream,
    pub start: Start,
    /// `[archive]`: where [`Start::archive`] is read.
    pub history: Option<Arc<dyn History>>,
    /// Taken while reading the archive (`client.archive_readers`).
    pub archive_slots: Arc<Semaphore>,
    pub pull_batch: usize,
    pub budget: Budget,
    /// Consumer names are `<prefix>-<instance>-<n>`.
    pub consumer_prefix: String,
    /// `bsky_gateway_cursor_clamped_total`, for a cursor older than the archive too.
    pub clamped: prometheus_client::metrics::counter::Counter,
}

/// How a consumer's reading ended.
enum Read {
    /// The session is gone.
    Done,
    /// New collections: recreate the consumer at the next sequence.
    Refilter,
    /// The consumer failed; recreate it after a pause.
    Failed(PumpError),
}

/// How long the pump keeps recreating a failing consumer before it closes the client.
pub const RETRY_FOR: Duration = Duration::from_secs(60);
/// Longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// How long a pull request waits for messages on the live tail.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// The server sends an idle heartbeat this often while a pull request waits.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence (no message, no heartbeat) after which the server or consumer is taken as gone.
const SILENCE: Duration = Duration::from_secs(3);
/// The server deletes a consumer whose client stopped pulling for this long (a stuck
/// client); the pump then recreates it at the next sequence.
const INACTIVE: Duration = Duration::from_secs(60);

/// A part of consumer names unique to this gateway process.
fn instance() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        format!("{:x}", nanos ^ (u64::from(std::process::id()) << 40))
    })
}

impl Pump {
    /// Reads the stream for one client until the session drops its end of `tx` or of
    /// `filters`; an error means the stream could not be read for [`RETRY_FOR`].
    pub async fn run(
        self,
        mut filters: watch::Receiver<Arc<Filters>>,
        tx: mpsc::Sender<Outgoing>,
    ) -> Result<(), PumpError> {
        let mut from = self.start.from;
        if let (Some(since), Some(history)) = (self.start.archive, &self.history) {
            let slot = tokio::select! {
                slot = self.archive_slots.clone().acquire_owned() => slot.ok(),
                _ = tx.closed() => return Ok(()),
            };
            let read = self
                .read_archive(history.as_ref(), since, &mut filters, &tx)
                .await;
            drop(slot);
            match read? {
                None => return Ok(()),
                Some(Some(next)) => from = From::Seq(next),
                Some(None) => {}
            }
        }
        let mut failing: Option<(Instant, u32)> = None;
        loop {
            let current = filters.borrow_and_update().clone();
            let why = match self.create(&current, from).await {
                Ok(consumer) => {
                    let name = consumer.cached_info().name.clone();
                    let read = self
                        .read(
                            &consumer,
                            current,
                            &mut filters,
                            &tx,
                            &mut from,
                            &mut failing,
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
                        Read::Failed(why) => why,
                    }
                }
                Err(e) => e,
            };
            let (since, n) = failing.get_or_insert((Instant::now(), 0));
            *n += 1;
            if since.elapsed() >= RETRY_FOR {
                return Err(why);
            }
            tracing::debug!(failures = *n, error = %why, "consumer failed; recreating it");
            let pause = Duration::from_millis(50 << (*n).min(5)).min(MAX_PAUSE);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    async fn create(&self, filters: &Filters, from: From) -> Result<PullConsumer, PumpError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let deliver_policy = match from {
            From::Seq(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            From::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
        };
        let mut subjects = filters.subjects();
        // One filter goes into the create subject, `$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`.
        let (filter_subject, filter_subjects) = if subjects.len() == 1 {
            (subjects.pop().unwrap_or_default(), Vec::new())
        } else {
            (String::new(), subjects)
        };
        self.stream
            .create_consumer(pull::Config {
                name: Some(format!("{}-{}-{n}", self.consumer_prefix, instance())),
                filter_subject,
                filter_subjects,
                deliver_policy,
                ack_policy: AckPolicy::None,
                inactive_threshold: INACTIVE,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(PumpError::Consumer)
    }

    /// Pulls from `consumer` and hands the matching events to the session, one bounded
    /// pull request after another.
    async fn read(
        &self,
        consumer: &PullConsumer,
        mut current: Arc<Filters>,
        filters: &mut watch::Receiver<Arc<Filters>>,
        tx: &mpsc::Sender<Outgoing>,
        from: &mut From,
        failing: &mut Option<(Instant, u32)>,
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
            let request = pull::BatchConfig {
                batch: count,
                expires: Some(PULL_EXPIRES),
                max_bytes: bytes,
                idle_heartbeat: HEARTBEAT,
                ..Default::default()
            };
            // A fresh inbox per pull, dropped (unsubscribed) when the pull ends: a status
            // the server sends after a pull is complete must not end the next one.
            let inbox = async_nats::Subject::from(self.nats.new_inbox());
            let mut replies = match self.nats.subscribe(inbox.clone()).await {
                Ok(s) => s,
                Err(e) => return Read::Failed(PumpError::Subscribe(e)),
            };
            if let Err(e) = consumer.request_batch(request, inbox).await {
                return Read::Failed(PumpError::Pull(e));
            }
            let mut received = 0usize;
            while received < count {
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
                    m = tokio::time::timeout(SILENCE, replies.next()) => m,
                };
                let m = match m {
                    Err(_) => return Read::Failed(PumpError::Silent(SILENCE)),
                    Ok(None) => return Read::Failed(PumpError::Closed),
                    Ok(Some(m)) => m,
                };
                match m.status {
                    None | Some(async_nats::StatusCode::OK) => {}
                    Some(async_nats::StatusCode::IDLE_HEARTBEAT) => continue,
                    // Expired, or (not asked for) no messages: the next request.
                    Some(async_nats::StatusCode::TIMEOUT | async_nats::StatusCode::NOT_FOUND) => {
                        break
                    }
                    Some(status) => {
                        let description = m.description.clone().unwrap_or_default();
                        if description.contains("Exceeds MaxBytes") {
                            one_big = received == 0;
                            break;
                        }
                        return Read::Failed(PumpError::Ended {
                            status: status.as_u16(),
                            description,
                        });
                    }
                }
                received += 1;
                *failing = None;
                one_big = false;
                if !self.pass(m, &current, tx, from).await {
                    return Read::Done;
                }
            }
            tracing::trace!(received, "pull request complete");
        }
    }

    /// Sends the archive from `since` to its end, and again from there while the stream
    /// still starts after it (the archive grows behind the head); the stream then goes on
    /// at the sequence returned (`None` inside: the archive had nothing from `since`).
    /// `None`: the session is gone.
    async fn read_archive(
        &self,
        history: &dyn History,
        mut since: Since,
        filters: &mut watch::Receiver<Arc<Filters>>,
        tx: &mpsc::Sender<Outgoing>,
    ) -> Result<Option<Option<u64>>, PumpError> {
        let asked = since;
        let mut next = None;
        let mut current = filters.borrow_and_update().clone();
        let mut subjects = current.subjects();
        // The stream as it was before each pass: its last sequence for the clients' lag,
        // its first for whether another pass is needed.
        let mut state = self.stream.get_info().await.map_err(PumpError::Info)?.state;
        loop {
            let mut reader = history.read(since).await.map_err(PumpError::Archive)?;
            let mut read = 0u64;
            while let Some(k) = reader.next().await.map_err(PumpError::Archive)? {
                if next.is_none() && older_than_archive(history, asked, k.seq).await {
                    self.clamped.inc();
                }
                read += 1;
                next = Some(k.seq + 1);
                match filters.has_changed() {
                    Err(_) => return Ok(None),
                    Ok(false) => {}
                    Ok(true) => {
                        current = filters.borrow_and_update().clone();
                        subjects = current.subjects();
                    }
                }
                if !subjects
                    .iter()
                    .any(|f| contract::subject::matches(f, &k.subject))
                {
                    continue;
                }
                let pending = state.last_sequence.saturating_sub(k.seq);
                let stored_us = k.stored_ns / 1000;
                let sent = self
                    .offer(
                        &k.subject, &k.payload, k.seq, stored_us, pending, &current, tx,
                    )
                    .await;
                if !sent {
                    return Ok(None);
                }
            }
            if next.is_none() && matches!(asked, Since::Seq(_)) {
                // Nothing kept at or after the cursor, and the stream starts after it.
                self.clamped.inc();
            }
            state = self.stream.get_info().await.map_err(PumpError::Info)?.state;
            match next {
                Some(n) if read > 0 && n < state.first_sequence => since = Since::Seq(n),
                _ => return Ok(Some(next)),
            }
        }
    }

    /// Filters one message and hands it over; `false` when the session is gone.
    async fn pass(
        &self,
        m: async_nats::Message,
        filters: &Filters,
        tx: &mpsc::Sender<Outgoing>,
        from: &mut From,
    ) -> bool {
        let m = async_nats::jetstream::Message {
            message: m,
            context: self.js.clone(),
        };
        let Ok(info) = m.info() else {
            tracing::warn!("message without JetStream metadata: skipped");
            return true;
        };
        let (seq, pending) = (info.stream_sequence, info.pending);
        let stored_us = i64::try_from(info.published.unix_timestamp_nanos() / 1000).unwrap_or(0);
        *from = From::Seq(seq + 1);
        let subject = m.message.subject.as_str();
        self.offer(
            subject,
            &m.message.payload,
            seq,
            stored_us,
            pending,
            filters,
            tx,
        )
        .await
    }

    /// One stream message (from the stream or the archive), patched, filtered by DID and
    /// size, handed over when the buffer has room; `false` when the session is gone.
    #[allow(clippy::too_many_arguments)]
    async fn offer(
        &self,
        subject: &str,
        payload: &[u8],
        seq: u64,
        stored_us: i64,
        pending: u64,
        filters: &Filters,
        tx: &mpsc::Sender<Outgoing>,
    ) -> bool {
        // Jetstream v1 has no `#sync` event (clients reject unknown kinds).
        if subject == contract::subject::SYNC {
            return true;
        }
        let Some(event) = event::patch(payload, stored_us, seq) else {
            tracing::warn!(seq, "payload off the contract (subjects.md): skipped");
            return true;
        };
        let size_ok =
            filters.max_message_bytes == 0 || event.json.len() <= filters.max_message_bytes;
        if !size_ok || !filters.wants_did(event.did()) {
            return true;
        }
        let Some(permit) = self.budget.take(event.json.len()).await else {
            return false;
        };
        let out = Outgoing {
            payload: event.json,
            time_us: stored_us,
            pending,
            _permit: permit,
        };
        tx.send(out).await.is_ok()
    }
}
