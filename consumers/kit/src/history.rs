//! Messages older than the stream: where a consumer reads what the stream's retention
//! removed before it continues from the stream at exactly the next sequence.
//!
//! kit defines the interface; the archive crate implements it over its sealed segments
//! (`archive::history`). A service plugs one in through [`crate::Options::history`]
//! (charts and feedgen: their `[archive]` table). With one, [`crate::run`] reads the
//! history whenever the next sequence it needs is below the stream's first: a rebuild
//! (`--from-seq`, `--from-time`) older than the stream, a consumer that was stopped
//! longer than the stream keeps, or one that fell behind it while running (the status
//! poll notices; `Rewind::Behind`). The handler sees the same messages, in the same order,
//! as the stream would have delivered them; nothing at the seam twice, nothing missing.

use crate::config;
use crate::handler::{BoxError, Handler};
use crate::metrics::Metrics;
use crate::run::{announce, blocking, committed, RunError};
use crate::status::Progress;
use crate::worker::{ApplyError, Raw, Worker};
use async_nats::jetstream::stream::Stream;
use futures_util::future::BoxFuture;
use service::backoff::Backoff;
use service::telemetry::Chain;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One message as the stream stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Its stream sequence.
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its payload, byte for byte.
    pub payload: bytes::Bytes,
    /// When JetStream stored it, ns since the epoch.
    pub stored_ns: i64,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// At this stream sequence, or the first kept one after it.
    Seq(u64),
    /// At the first message, in stream order, whose event time (`time_us`) is at or after
    /// this (µs since the epoch).
    EventTime(i64),
    /// At the first message JetStream stored at or after this (µs since the epoch).
    StoredTime(i64),
}

/// A store of the stream's past messages. Errors are the store's: kit waits and reads
/// again while catching up; a `--from-time` seek that cannot read it stops, saying so.
pub trait History: Send + Sync {
    /// What it is, for logs (never a credential).
    fn describe(&self) -> String;
    /// The oldest kept message; `None` when nothing is kept.
    fn first(&self) -> BoxFuture<'_, Result<Option<Kept>, BoxError>>;
    /// The oldest kept message's sequence. The default reads [`History::first`]; a store
    /// with an index of what it keeps answers from that instead.
    fn first_seq(&self) -> BoxFuture<'_, Result<Option<u64>, BoxError>> {
        Box::pin(async move { Ok(self.first().await?.map(|k| k.seq)) })
    }
    /// The kept messages from `since` on, in stream order. Sequences it does not hold
    /// (its own gaps) are skipped: the caller sees the jump.
    fn read(&self, since: Since) -> BoxFuture<'_, Result<Box<dyn Reader>, BoxError>>;
}

/// Kept messages, one at a time.
pub trait Reader: Send {
    /// The next one; `None` at the end of what is kept.
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Kept>, BoxError>>;
}

impl std::fmt::Debug for dyn History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Applies `history` from the position + 1 on, in batches of `consumer.batch` messages,
/// each one transaction with the position, as from the stream. It reads to the history's
/// end, not only to the stream's first sequence: that edge moves with every message the
/// stream takes in, while the archive's end is near the stream's head, where the switch
/// is safe. If the stream still starts after the end (the archive fell behind), the
/// archive is read again from there while it grows. Messages outside the consumer's
/// subject filters move the position without reaching the handler. Sequences the history
/// lacks (the archive's own gaps) are counted as lost; what is missing between its end and
/// the stream is left to the [`crate::status::Tracker`], which counts it the same way.
pub(crate) async fn catch_up<H: Handler>(
    mut worker: Worker<H>,
    history: &dyn History,
    stream: &Stream,
    cfg: &config::Consumer,
    metrics: &Metrics,
    progress: &watch::Sender<Progress>,
    shutdown: &CancellationToken,
) -> Result<Worker<H>, RunError> {
    let from = worker.position.seq + 1;
    let Some(first) = stream_first(stream).await else {
        return Ok(worker);
    };
    if from >= first {
        return Ok(worker);
    }
    tracing::info!(history = %history.describe(), from_seq = from, stream_first_seq = first,
        "the stream no longer holds the next message: reading the archive");
    let mut retry = Backoff::new(cfg.retry_min, cfg.retry_max);
    let mut store_retry = Backoff::new(cfg.retry_min, cfg.retry_max);
    let mut through = worker.position.seq;
    let mut read = 0u64;
    while !shutdown.is_cancelled() {
        // A store error (an outage, a damaged segment) is waited out: the reader is opened
        // again after the position, as when the archive grows.
        let mut failed = None;
        let mut batch = Vec::with_capacity(cfg.batch);
        let (mut scanned, mut this_pass) = (0usize, 0u64);
        match history.read(Since::Seq(through + 1)).await {
            Err(e) => failed = Some(e),
            Ok(mut reader) => {
                while !shutdown.is_cancelled() {
                    let k = match reader.next().await {
                        Ok(Some(k)) => k,
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    };
                    if k.seq > through + 1 {
                        let lost = k.seq - through - 1;
                        tracing::error!(after_seq = through, lost,
                            "the archive lacks these stream messages (its gap record says why): stream messages of any subject; the figures miss at most this many");
                        metrics.retention_lost.inc_by(lost);
                        progress.send_modify(|p| p.lost += lost);
                    }
                    through = k.seq;
                    scanned += 1;
                    this_pass += 1;
                    if cfg
                        .subjects
                        .iter()
                        .any(|f| contract::subject::matches(f, &k.subject))
                    {
                        batch.push(Raw {
                            seq: k.seq,
                            subject: k.subject.into(),
                            payload: k.payload,
                            stored_ns: i128::from(k.stored_ns),
                        });
                    }
                    if scanned >= cfg.batch {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(cfg.batch));
                        worker = apply(
                            worker, full, through, metrics, progress, &mut retry, shutdown,
                        )
                        .await?;
                        scanned = 0;
                    }
                }
            }
        }
        if scanned > 0 {
            worker = apply(
                worker, batch, through, metrics, progress, &mut retry, shutdown,
            )
            .await?;
        }
        read += this_pass;
        metrics.history.inc_by(this_pass);
        if let Some(e) = failed {
            let delay = store_retry.next_delay();
            tracing::warn!(error = %Chain(e.as_ref()), history = %history.describe(), position = worker.position.seq, ?delay,
                "the archive cannot be read; retrying after the delay");
            through = worker.position.seq;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(delay) => {}
            }
            continue;
        }
        store_retry.reset();
        // Unknown (the stream cannot be asked): go on from the stream; the loop's status
        // poll comes back here if the stream started past the position.
        if this_pass == 0 || stream_first(stream).await.is_none_or(|f| through + 1 >= f) {
            break;
        }
    }
    tracing::info!(
        read,
        position = worker.position.seq,
        "archive read; continuing from the stream"
    );
    Ok(worker)
}

/// The stream's first sequence now; `None` (logged) when the stream cannot be asked.
async fn stream_first(stream: &Stream) -> Option<u64> {
    match stream.get_info().await {
        Ok(info) => Some(info.state.first_sequence),
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "stream info failed; not reading the archive now");
            None
        }
    }
}

/// One batch of kept messages, committed with the position `through`; a transient failure
/// is retried after a growing delay (nothing to NAK: the batch is in hand).
async fn apply<H: Handler>(
    mut worker: Worker<H>,
    batch: Vec<Raw>,
    through: u64,
    metrics: &Metrics,
    progress: &watch::Sender<Progress>,
    retry: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<Worker<H>, RunError> {
    let batch = std::sync::Arc::new(batch);
    loop {
        let raws = batch.clone();
        let (w, result) = blocking(move || {
            let r = worker.apply(&raws, through);
            (worker, r)
        })
        .await?;
        worker = w;
        match result {
            Ok(applied) => {
                committed(metrics, &applied, batch.len());
                announce(metrics, progress, &worker.position);
                retry.reset();
                return Ok(worker);
            }
            Err(ApplyError::Transient(e)) => {
                let delay = retry.next_delay();
                tracing::warn!(error = %Chain(e.as_ref()), through, ?delay,
                    "a batch from the archive rolled back; retrying after the delay");
                metrics.transient_failures.inc();
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(worker),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
