//! The consumer loop: durable pull consumer → batches → one SQLite transaction each →
//! acks.
//!
//! ```text
//! messages ──▶ classify ──▶ batch (≤ consumer.batch, ≤ consumer.linger) ──▶ Worker::apply
//!   (pull)     ≤ position: ack, skip          (spawn_blocking, one transaction)   │
//!              in hand already: drop                                              ▼
//!              delivery gap: rewind            poison: TERM; last message: ACK (ack_policy all)
//!                                              transient: NAK with delay, retried in order
//! ```
//!
//! **Order.** Messages are applied in stream order, so the committed position means
//! "everything matching up to here is applied". A transient failure NAKs the batch with a
//! delay (`service::backoff`: jittered, growing to `retry_max`); messages that arrive
//! meanwhile with a higher sequence are NAKed too and held back until the lower ones have
//! come again and been applied.
//! When that does not happen in time, or a delivery went missing (a gap in the consumer's
//! delivery sequence, e.g. lost in a reconnect), the loop *rewinds*: the durable consumer is
//! recreated at the committed position + 1.
//!
//! **Shutdown.** When `shutdown` fires, the batch being applied is committed and acked;
//! messages in hand that were not applied are left unacknowledged (the next start
//! recreates the consumer at the committed position, so they come first).

use crate::config::{self, Start};
use crate::consumer::{self, ConsumerError, Opened};
use crate::handler::{BoxError, Handler, Rebuild};
use crate::history::History;
use crate::metrics::{Metrics, Outcome, ReasonLabel, Rewind};
use crate::state::{self, Position, StateError};
use crate::status::{Progress, Tracker};
use crate::worker::{Applied, ApplyError, Raw, Worker};
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream::Stream};
use futures_util::StreamExt;
use service::backoff::Backoff;
use service::telemetry::Chain;
use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Idle heartbeat asked of the server for the pull stream.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long to wait between attempts while the stream does not exist yet.
const WAIT_STREAM: Duration = Duration::from_secs(1);

/// What the loop needs besides the handler.
#[derive(Debug, Clone)]
pub struct Options {
    /// `[consumer]`
    pub consumer: config::Consumer,
    /// `[state]`
    pub state: config::State,
    /// Resume, or rebuild (`--from-seq`, `--from-time`).
    pub start: Start,
    /// Where to read what the stream no longer holds (the archive); `None`: such
    /// messages are counted as lost.
    pub history: Option<std::sync::Arc<dyn History>>,
}

/// Why the loop stopped. Each one means: stop the service, and tell the operator (a
/// restart resumes from the committed position).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The database cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The durable consumer cannot be opened.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The stream cannot be read.
    #[error("stream {stream}")]
    Stream {
        /// Its name.
        stream: String,
        /// What JetStream said.
        #[source]
        source: BoxError,
    },
    /// `--from-time` cannot be honoured.
    #[error("--from-time: {0}")]
    Rebuild(String),
    /// A `--from-time` the stream no longer reaches cannot be sought in the archive (its
    /// store failed): a restart tries again. Catching up waits out such failures instead.
    #[error("--from-time: reading the archive")]
    History(#[source] BoxError),
    /// The handler panicked (a bug); nothing of its batch was committed.
    #[error("the handler panicked")]
    Panicked(#[source] tokio::task::JoinError),
    /// A panic in an earlier batch took the worker with it (a bug).
    #[error("the worker was lost to an earlier panic")]
    WorkerLost,
    /// The HTTP server beside the loop ([`crate::run_serving`]) failed.
    #[error("the HTTP server stopped")]
    Http(#[source] std::io::Error),
    /// A task of [`crate::run_serving`] panicked or ended early (a bug).
    #[error(transparent)]
    Task(service::supervise::TaskError<std::convert::Infallible>),
}

/// Runs `handler` over the stream until `shutdown` fires. `progress` receives the position
/// after each batch and the lag after each status poll.
pub async fn run<H: Handler>(
    js: jetstream::Context,
    opts: Options,
    handler: H,
    metrics: Metrics,
    progress: watch::Sender<Progress>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let cfg = opts.consumer.clone();
    let state_cfg = opts.state.clone();
    let (mut worker, stored) = blocking(move || -> Result<_, RunError> {
        let conn = state::open(&state_cfg)?;
        let stored = state::load(&conn)?;
        let mut w = Worker {
            conn,
            handler,
            position: stored.clone().unwrap_or(Position {
                stream: String::new(),
                stream_created: String::new(),
                seq: 0,
                time_us: None,
                rebuilding: None,
            }),
        };
        w.init().map_err(StateError::from)?;
        Ok((w, stored))
    })
    .await??;

    let Some(stream) = wait_for_stream(&js, &cfg.stream, &shutdown).await? else {
        return Ok(());
    };
    let info = stream.get_info().await.map_err(|e| RunError::Stream {
        stream: cfg.stream.clone(),
        source: e.into(),
    })?;
    let created = contract::lineage::created_id(info.created.unix_timestamp_nanos());
    let restored = contract::lineage::Restored::from_metadata(&info.config.metadata);
    let state = info.state;
    if let (Some(stored), Start::Resume | Start::FromTime(_)) = (&stored, opts.start) {
        if state::check_stream(stored, &cfg.stream, &created, restored.as_ref())? {
            tracing::warn!(
                stream = %cfg.stream,
                position = stored.seq,
                "the stream was restored from the archive of the one this state was built on; going on from the position"
            );
        }
    }
    worker.position.stream = cfg.stream.clone();
    worker.position.stream_created = created;

    let mut force_new = false;
    match opts.start {
        Start::Resume => {}
        Start::FromSeq(n) => {
            tracing::warn!(from_seq = n, "rebuild: dropping all derived state");
            worker = rebuild(worker, Rebuild::All, n).await?;
            force_new = true;
        }
        Start::FromTime(t) => {
            let mut from = worker.handler.rebuild_from(t).min(t);
            if let Some(r) = worker.position.rebuilding {
                from = from.min(r.from_us);
            }
            let seek = crate::start::seek_time(
                &stream,
                &state,
                &cfg,
                opts.history.as_deref(),
                worker.handler.clock_skew_bound(),
                from,
            )
            .await?;
            let start = seek.unwrap_or(u64::MAX).min(worker.position.seq + 1);
            tracing::warn!(
                from_time = %crate::seek::rfc3339(from),
                from_seq = start,
                "rebuild: dropping state from this event time on"
            );
            worker = rebuild(worker, Rebuild::Since(from), start).await?;
            force_new = true;
        }
    }
    let mut state = state;
    if let (Some(history), true) = (
        &opts.history,
        stored.is_some() || opts.start != Start::Resume,
    ) {
        worker = crate::history::catch_up(
            worker,
            history.as_ref(),
            &stream,
            &cfg,
            &metrics,
            &progress,
            &shutdown,
        )
        .await?;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        state = stream
            .get_info()
            .await
            .map_err(|e| RunError::Stream {
                stream: cfg.stream.clone(),
                source: e.into(),
            })?
            .state;
    }
    let position = worker.position.clone();
    announce(&metrics, &progress, &position);
    // A first start reads what the stream holds; anything else must find its position
    // still in the stream.
    let mut tracker = Tracker::at(if stored.is_some() || opts.start != Start::Resume {
        position.seq
    } else {
        state.first_sequence.saturating_sub(1)
    });
    if state.messages > 0 {
        let lost = tracker.check_loss(state.first_sequence, 0, u64::MAX, &metrics);
        progress.send_modify(|p| p.lost += lost);
    }

    let (consumer, opened) = consumer::open(&stream, &cfg, position.seq, force_new).await?;
    let mut l = Loop {
        stream,
        cfg,
        metrics,
        progress,
        shutdown,
        worker: Some(worker),
        consumer,
        last_delivery: match opened {
            Opened::Bound { last_delivery } => last_delivery,
            Opened::Created => 0,
        },
        owed: BTreeSet::new(),
        retry: Backoff::new(opts.consumer.retry_min, opts.consumer.retry_max),
        last_progress: Instant::now(),
        tracker,
        history: opts.history,
        last_behind: None,
    };
    l.run().await
}

/// A committed batch of `n` messages, in the metrics.
pub(crate) fn committed(metrics: &Metrics, applied: &Applied, n: usize) {
    for (_, reason) in &applied.poison {
        metrics.poison.get_or_create(&ReasonLabel { reason }).inc();
    }
    metrics.count(Outcome::Processed, n as u64 - applied.kept);
    metrics.count(Outcome::Kept, applied.kept);
    metrics.batches.inc();
}

/// The committed position, in the metrics and to `progress`.
pub(crate) fn announce(metrics: &Metrics, progress: &watch::Sender<Progress>, p: &Position) {
    metrics
        .position
        .set(i64::try_from(p.seq).unwrap_or(i64::MAX));
    progress.send_modify(|pr| {
        pr.seq = p.seq;
        pr.time_us = p.time_us;
    });
}

/// Runs `f` on the blocking pool; a panic becomes [`RunError::Panicked`].
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(RunError::Panicked)
}

async fn rebuild<H: Handler>(
    mut w: Worker<H>,
    from: Rebuild,
    start: u64,
) -> Result<Worker<H>, RunError> {
    blocking(move || {
        let r = w.rebuild(from, start);
        r.map(|_| w)
    })
    .await?
    .map_err(|e| RunError::State(e.into()))
}

/// The stream, once it exists (the ingestor may start after us); `None` on shutdown.
async fn wait_for_stream(
    js: &jetstream::Context,
    name: &str,
    shutdown: &CancellationToken,
) -> Result<Option<Stream>, RunError> {
    let mut logged = false;
    loop {
        match js.get_stream(name).await {
            Ok(s) => return Ok(Some(s)),
            Err(e) => {
                if !logged {
                    tracing::warn!(stream = name, error = %e, "waiting for the stream to exist");
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(WAIT_STREAM) => {}
        }
    }
}

/// What ended a batch's collection.
enum Next {
    /// Apply the batch.
    Apply,
    /// Apply nothing more; stop.
    Stop,
    /// Recreate the consumer at the position (after applying nothing of the batch).
    Rewind(Rewind),
    /// The pull stream ended or failed: open a new one on the same consumer.
    Reopen,
}

struct Loop<H> {
    stream: Stream,
    cfg: config::Consumer,
    metrics: Metrics,
    progress: watch::Sender<Progress>,
    shutdown: CancellationToken,
    worker: Option<Worker<H>>,
    consumer: PullConsumer,
    /// The last delivery sequence received (0: none since the consumer was opened).
    last_delivery: u64,
    /// NAKed messages that must be applied before anything above them.
    owed: BTreeSet<u64>,
    /// The NAK delays: from `retry_min`, growing to `retry_max`, reset by a commit.
    retry: Backoff,
    /// When the position last moved.
    last_progress: Instant,
    tracker: Tracker,
    /// Where messages the stream dropped before we read them are read from.
    history: Option<std::sync::Arc<dyn History>>,
    /// When the last [`Rewind::Behind`] read the history (one per `retry_max`, so an
    /// archive that lags as well cannot make the loop rewind without end).
    last_behind: Option<Instant>,
}

impl<H: Handler> Loop<H> {
    fn position(&self) -> u64 {
        self.worker.as_ref().map_or(0, |w| w.position.seq)
    }

    async fn run(&mut self) -> Result<(), RunError> {
        let mut ticker = tokio::time::interval(self.cfg.status_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut messages = match self
                .consumer
                .stream()
                .max_messages_per_batch(self.cfg.batch)
                .heartbeat(HEARTBEAT)
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the pull stream; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.cfg.retry_min) => continue,
                    }
                }
            };
            loop {
                let mut batch = Vec::with_capacity(self.cfg.batch);
                let next = self.collect(&mut messages, &mut batch, &mut ticker).await;
                match next {
                    Next::Apply => self.apply(batch).await?,
                    Next::Stop => {
                        tracing::info!(position = self.position(), "stopped");
                        return Ok(());
                    }
                    Next::Rewind(reason) => {
                        drop(messages);
                        self.rewind(reason).await?;
                        break;
                    }
                    Next::Reopen => break,
                }
            }
        }
    }

    /// Collects a batch: up to `consumer.batch` messages, waiting at most
    /// `consumer.linger` after the first one.
    async fn collect(
        &mut self,
        messages: &mut async_nats::jetstream::consumer::pull::Stream,
        batch: &mut Vec<jetstream::Message>,
        ticker: &mut tokio::time::Interval,
    ) -> Next {
        let mut in_hand = HashSet::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let linger = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let m = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Next::Stop,
                _ = linger => return Next::Apply,
                _ = ticker.tick() => {
                    if let Some(reason) = self.status().await {
                        return Next::Rewind(reason);
                    }
                    continue;
                }
                m = messages.next() => m,
            };
            let m = match m {
                Some(Ok(m)) => m,
                Some(Err(e)) if e.kind() == MessagesErrorKind::ConsumerDeleted => {
                    return Next::Rewind(Rewind::Deleted)
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pull stream failed; opening a new one");
                    return if batch.is_empty() {
                        Next::Reopen
                    } else {
                        Next::Apply
                    };
                }
                None => {
                    return if batch.is_empty() {
                        Next::Reopen
                    } else {
                        Next::Apply
                    }
                }
            };
            let Ok(info) = m.info() else {
                tracing::warn!(subject = %m.subject, "a message without JetStream metadata; ignored");
                continue;
            };
            let (seq, delivery) = (info.stream_sequence, info.consumer_sequence);
            if delivery != self.last_delivery + 1 {
                tracing::warn!(
                    expected = self.last_delivery + 1,
                    got = delivery,
                    "a delivery went missing (lost in transit, or another process reads this durable); rewinding"
                );
                return Next::Rewind(Rewind::DeliveryGap);
            }
            self.last_delivery = delivery;
            self.tracker.received(seq);
            if seq <= self.position() {
                // Applied and committed before (a redelivery): acknowledge, skip.
                self.metrics.count(Outcome::Redelivered, 1);
                if let Err(e) = m.ack().await {
                    tracing::debug!(error = %e, "ack of a redelivered message failed");
                }
                continue;
            }
            if !in_hand.insert(seq) {
                self.metrics.count(Outcome::Duplicate, 1);
                continue;
            }
            batch.push(m);
            self.metrics.acks_pending.set(batch.len() as i64);
            if batch.len() >= self.cfg.batch {
                return Next::Apply;
            }
            if deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + self.cfg.linger);
            }
        }
    }

    /// Applies what may be applied of `batch` in order, holds back the rest.
    async fn apply(&mut self, mut batch: Vec<jetstream::Message>) -> Result<(), RunError> {
        let seq_of = |m: &jetstream::Message| m.info().map(|i| i.stream_sequence).unwrap_or(0);
        batch.sort_by_key(seq_of);
        let here: HashSet<u64> = batch.iter().map(seq_of).collect();
        // The lowest NAKed message not here: nothing above it may be applied yet.
        let cut = self.owed.iter().find(|s| !here.contains(s)).copied();
        let split = cut.map_or(batch.len(), |c| batch.partition_point(|m| seq_of(m) < c));
        let held = batch.split_off(split);
        if !held.is_empty() {
            self.nak(&held, self.cfg.retry_min).await;
        }
        if batch.is_empty() {
            return Ok(());
        }
        let raws: Vec<Raw> = batch
            .iter()
            .map(|m| Raw {
                seq: seq_of(m),
                subject: m.subject.clone(),
                payload: m.payload.clone(),
                stored_ns: m.info().map_or(0, |i| i.published.unix_timestamp_nanos()),
            })
            .collect();
        let Some(mut worker) = self.worker.take() else {
            return Err(RunError::WorkerLost);
        };
        let (worker, result) = blocking(move || {
            let r = worker.apply(&raws, 0);
            (worker, r)
        })
        .await?;
        let position = worker.position.clone();
        self.worker = Some(worker);
        match result {
            Ok(applied) => {
                for (seq, _) in &applied.poison {
                    if let Some(m) = batch.iter().find(|m| seq_of(m) == *seq) {
                        let _ = m.ack_with(AckKind::Term).await;
                    }
                }
                if let Some(last) = batch.last() {
                    if let Err(e) = last.ack().await {
                        tracing::warn!(error = %e, "ack failed; the server will deliver again (skipped)");
                    }
                }
                for m in &batch {
                    self.owed.remove(&seq_of(m));
                }
                self.metrics.acks_pending.set(0);
                committed(&self.metrics, &applied, batch.len());
                announce(&self.metrics, &self.progress, &position);
                self.retry.reset();
                self.last_progress = Instant::now();
            }
            Err(ApplyError::Transient(e)) => {
                let delay = self.retry.next_delay();
                tracing::warn!(error = %Chain(e.as_ref()), first_seq = seq_of(&batch[0]), messages = batch.len(), ?delay,
                    "batch rolled back; NAKed to come again after the delay");
                self.metrics.transient_failures.inc();
                self.nak(&batch, delay).await;
                tokio::select! {
                    _ = self.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
        Ok(())
    }

    /// NAKs `msgs` with `delay` and owes them.
    async fn nak(&mut self, msgs: &[jetstream::Message], delay: Duration) {
        for m in msgs {
            if let Ok(i) = m.info() {
                self.owed.insert(i.stream_sequence);
            }
            if let Err(e) = m.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::debug!(error = %e, "NAK failed; the server will deliver again after ack_wait");
            }
        }
        self.metrics.count(Outcome::Nak, msgs.len() as u64);
        self.metrics.acks_pending.set(0);
    }

    /// The status poll; asks for a rewind when NAKed messages did not come back in time,
    /// or when the stream dropped messages not yet read and an archive holds them.
    async fn status(&mut self) -> Option<Rewind> {
        let state = match self.stream.get_info().await {
            Ok(info) => Some(info.state),
            Err(e) => {
                tracing::warn!(error = %e, "stream info failed; lag not updated");
                None
            }
        };
        if let Some(state) = &state {
            let behind = state.first_sequence > self.tracker.reached().max(self.position()) + 1;
            let may_read_history = self.history.is_some()
                && self
                    .last_behind
                    .is_none_or(|t| t.elapsed() > self.cfg.retry_max);
            if behind && may_read_history {
                return Some(Rewind::Behind);
            }
        }
        let mut p = self.progress.borrow().clone();
        if let Some(state) = &state {
            self.tracker
                .poll(
                    state,
                    &self.stream,
                    &mut self.consumer,
                    self.last_delivery,
                    &mut p,
                    &self.metrics,
                )
                .await;
        }
        self.progress.send_replace(p);
        let patience = self.cfg.ack_wait + self.cfg.retry_max * 2;
        (!self.owed.is_empty() && self.last_progress.elapsed() > patience)
            .then_some(Rewind::Stalled)
    }

    /// Recreates the durable consumer at the committed position + 1.
    async fn rewind(&mut self, reason: Rewind) -> Result<(), RunError> {
        let position = self.position();
        tracing::warn!(
            reason = reason.as_str(),
            position,
            "rewinding: recreating the durable consumer at the committed position"
        );
        self.metrics
            .rewinds
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
        self.owed.clear();
        self.last_delivery = 0;
        let position = match (&self.history, reason) {
            (Some(history), Rewind::Behind) => {
                self.last_behind = Some(Instant::now());
                let Some(worker) = self.worker.take() else {
                    return Err(RunError::WorkerLost);
                };
                let worker = crate::history::catch_up(
                    worker,
                    history.as_ref(),
                    &self.stream,
                    &self.cfg,
                    &self.metrics,
                    &self.progress,
                    &self.shutdown,
                )
                .await?;
                let p = worker.position.seq;
                self.worker = Some(worker);
                p
            }
            _ => position,
        };
        self.tracker.rewound(position);
        self.last_progress = Instant::now();
        loop {
            match consumer::open(&self.stream, &self.cfg, position, true).await {
                Ok((c, _)) => {
                    self.consumer = c;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "rewind failed; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(self.retry.next_delay()) => {}
                    }
                }
            }
        }
    }
}
