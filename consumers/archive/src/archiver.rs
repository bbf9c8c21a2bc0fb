//! The archiver: a durable pull consumer on `bsky.>` that writes sealed segments.
//!
//! ```text
//! start: manifest ──▶ position (last sequence covered) ──▶ remove segments no entry names
//!        durable consumer recreated at position + 1 (the manifest is the truth)
//! loop:  continuous pull ──▶ append to the open segment (zstd, in memory)
//!          │        a sequence skipped by the stream: seal, write a gap entry, go on
//!          ▼
//!        full (bytes, messages) or old (max_age) or shutdown:
//!          put segment ──▶ put manifest entry ──▶ ack its last message (ack_policy all)
//! ```
//!
//! **Crash safety.** An object is written whole or not at all (S3 PUT; a local file is
//! written aside and renamed). A segment is part of the archive once its manifest entry
//! exists; a process killed between the two leaves a segment no entry names, which the
//! next start removes, and nothing was acked. A process killed before the entry was
//! written is read again from the position. So `kill -9` at any point leaves no partial
//! and no duplicate segment.
//!
//! **Outages.** A failed store operation is retried forever with a growing wait
//! (`store.retry_min` to `store.retry_max`), counted in `store_failures_total{op}`; nothing
//! is acked meanwhile, so the consumer holds its position.
//!
//! **Gaps.** A stream sequence that never arrives (the stream's retention removed it
//! first) is recorded as a gap entry in the manifest, logged as an error and counted in
//! `gap_messages_total`; archiving goes on after it.

use crate::config::Config;
use crate::format::{self, Entry, GapEntry, Record, SegmentEntry};
use crate::metrics::{Metrics, StoreOp};
use crate::reader::{hex, Archive, ArchiveError};
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::{self, stream::Stream};
use futures_util::StreamExt;
use object_store::path::Path;
use service::telemetry::Chain;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Idle heartbeat asked of the server for the pull stream: a lost server or consumer is
/// noticed within two of them.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Why the archiver stopped. Each one means: stop, and tell the operator (a restart
/// resumes from the manifest).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The archive is damaged (an unreadable or overlapping manifest entry).
    #[error("the archive cannot be read")]
    Archive(#[from] ArchiveError),
    /// The durable consumer cannot be opened.
    #[error(transparent)]
    Consumer(#[from] kit::consumer::ConsumerError),
    /// The stream ends before the archive does: it was recreated or lost.
    #[error("stream {stream} ends at sequence {last}, but the archive covers up to {position}: the stream was recreated; restore it from the archive (`archive restore`) or archive the new one into another store")]
    StreamBehind {
        /// The stream.
        stream: String,
        /// Its last sequence.
        last: u64,
        /// The archive's last sequence.
        position: u64,
    },
    /// zstd failed on memory (a bug, or out of memory).
    #[error("compressing a segment")]
    Compress(#[source] std::io::Error),
}

/// The segment being written.
struct Open {
    enc: zstd::Encoder<'static, Vec<u8>>,
    first_seq: u64,
    last_seq: u64,
    first_stored_ns: i64,
    last_stored_ns: i64,
    min_time_us: Option<i64>,
    max_time_us: Option<i64>,
    opened: Instant,
    /// Its last message, acked once the segment is stored.
    last_msg: jetstream::Message,
}

impl Open {
    fn messages(&self) -> u64 {
        self.last_seq - self.first_seq + 1
    }
}

/// Runs the archiver until `shutdown` fires: seals what it holds and returns.
pub async fn run(
    js: jetstream::Context,
    config: Config,
    archive: Archive,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let mut a = Archiver {
        archive,
        metrics,
        shutdown,
        position: 0,
        open: None,
        last_delivery: 0,
        line: Vec::new(),
        stream_created: None,
        config,
    };
    let Some(position) = a.reconcile().await? else {
        return Ok(());
    };
    a.position = position;
    a.metrics
        .position
        .set(i64::try_from(position).unwrap_or(i64::MAX));
    let Some(stream) = a.wait_for_stream(&js).await else {
        return Ok(());
    };
    let Some(consumer) = a.open_consumer(&stream).await? else {
        return Ok(());
    };
    a.run(stream, consumer).await
}

struct Archiver {
    config: Config,
    archive: Archive,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// Last stream sequence the stored archive covers.
    position: u64,
    open: Option<Open>,
    last_delivery: u64,
    line: Vec<u8>,
    /// The creation id of the stream read ([`contract::lineage::created_id`]), recorded in
    /// each segment's entry for `archive restore`.
    stream_created: Option<String>,
}

/// `None` when shutdown fired first.
type Stopped<T> = Option<T>;

impl Archiver {
    /// Calls `f` until it succeeds or shutdown fires, waiting longer after each failure.
    async fn retry<T, E, F, Fut>(&self, op: StoreOp, what: &str, mut f: F) -> Stopped<T>
    where
        E: std::error::Error,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut wait = self.config.store.retry_min;
        loop {
            match f().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    self.metrics.store_failed(op);
                    tracing::warn!(op = op.as_str(), what, error = %e, retry_in = ?wait, "object store failed; retrying");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(self.config.store.retry_max);
        }
    }

    /// Reads the manifest (retrying while the store is unreachable), removes segments no
    /// entry names and local staging files; returns the position.
    async fn reconcile(&self) -> Result<Stopped<u64>, RunError> {
        let entries = loop {
            match self.archive.manifest().await {
                Ok(e) => break e,
                Err(ArchiveError::Store { what, key, source }) => {
                    self.metrics.store_failed(StoreOp::ReadManifest);
                    tracing::warn!(what, key, error = %source, "cannot read the manifest; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Ok(None),
                        _ = tokio::time::sleep(self.config.store.retry_min) => {}
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        let position = entries.last().map_or(0, Entry::last_seq);
        let named: HashSet<&str> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Segment(s) => Some(s.key.as_str()),
                Entry::Gap(_) => None,
            })
            .collect();
        let Some(keys) = self
            .retry(StoreOp::ReadManifest, "listing segments", || {
                self.archive.list(format::SEGMENTS)
            })
            .await
        else {
            return Ok(None);
        };
        for key in keys.iter().filter(|k| !named.contains(k.as_str())) {
            tracing::warn!(key, "removing a segment whose manifest entry was never written (the archiver stopped in between)");
            let path = Path::from(key.as_str());
            let objects = &self.archive.store().objects;
            if self
                .retry(StoreOp::Delete, key, || objects.delete(&path))
                .await
                .is_none()
            {
                return Ok(None);
            }
        }
        match self.archive.store().remove_staging_files() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                files = n,
                "removed partly written files of a stopped archiver"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot remove partly written files"),
        }
        tracing::info!(
            position,
            entries = entries.len(),
            store = %self.config.store.summary(),
            "archive opened"
        );
        Ok(Some(position))
    }

    async fn wait_for_stream(&self, js: &jetstream::Context) -> Stopped<Stream> {
        let name = &self.config.consumer.stream;
        let mut logged = false;
        loop {
            match js.get_stream(name).await {
                Ok(s) => return Some(s),
                Err(e) if !logged => {
                    tracing::warn!(stream = %name, error = %e, "waiting for the stream to exist");
                    logged = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.config.consumer.retry_min) => {}
            }
        }
    }

    /// Checks the stream still reaches the position, then (re)creates the durable at
    /// position + 1.
    async fn open_consumer(
        &mut self,
        stream: &Stream,
    ) -> Result<Stopped<jetstream::consumer::PullConsumer>, RunError> {
        loop {
            let info = stream.get_info().await;
            if let Ok(i) = &info {
                self.stream_created = Some(contract::lineage::created_id(
                    i.created.unix_timestamp_nanos(),
                ));
            }
            let last = info.map(|i| i.state.last_sequence);
            let opened = match last {
                Ok(last) if last < self.position => {
                    return Err(RunError::StreamBehind {
                        stream: self.config.consumer.stream.clone(),
                        last,
                        position: self.position,
                    })
                }
                Ok(_) => kit::consumer::open(stream, &self.config.consumer, self.position, true)
                    .await
                    .map_err(kit::handler::BoxError::from),
                Err(e) => Err(e.into()),
            };
            match opened {
                Ok((c, _)) => {
                    self.last_delivery = 0;
                    return Ok(Some(c));
                }
                Err(e) => tracing::warn!(
                    error = %service::telemetry::Chain(&*e),
                    "cannot open the durable consumer; retrying"
                ),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(self.config.consumer.retry_min) => {}
            }
        }
    }

    /// Reads through a continuous pull (the client keeps requests open and refills them, so
    /// deliveries go on while a segment is being stored) until `shutdown`.
    async fn run(
        mut self,
        stream: Stream,
        mut consumer: jetstream::consumer::PullConsumer,
    ) -> Result<(), RunError> {
        let mut status = tokio::time::interval(self.config.consumer.status_interval);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let opened = consumer
                .stream()
                .max_messages_per_batch(self.config.consumer.batch)
                .heartbeat(HEARTBEAT)
                .messages()
                .await;
            let mut messages = match opened {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "cannot open the pull stream; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return self.stop().await,
                        _ = tokio::time::sleep(self.config.consumer.retry_min) => continue,
                    }
                }
            };
            loop {
                let max_age = self.open.as_ref().map(|o| {
                    tokio::time::Instant::from_std(o.opened + self.config.segment.max_age)
                });
                let old = async {
                    match max_age {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let m = tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return self.stop().await,
                    _ = old => {
                        // `false`: shutdown came while the store was away; the next turn stops.
                        self.seal().await?;
                        continue;
                    }
                    _ = status.tick() => {
                        if let Ok(info) = stream.get_info().await {
                            let lag = info.state.last_sequence.saturating_sub(self.position);
                            self.metrics.lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
                        }
                        continue;
                    }
                    m = messages.next() => m,
                };
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) if e.kind() == MessagesErrorKind::ConsumerDeleted => {
                        drop(messages);
                        self.rewind();
                        match self.open_consumer(&stream).await? {
                            Some(c) => consumer = c,
                            None => return self.stop().await,
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        // A missed heartbeat (the server restarted, the connection dropped):
                        // a new pull stream on the same consumer goes on where this one was.
                        tracing::warn!(error = %Chain(&e), "pull stream failed; opening a new one");
                        break;
                    }
                    None => break,
                };
                if !self.take(m).await? {
                    drop(messages);
                    self.rewind();
                    match self.open_consumer(&stream).await? {
                        Some(c) => consumer = c,
                        None => return self.stop().await,
                    }
                    break;
                }
            }
        }
    }

    /// Seals what is held and stops.
    async fn stop(&mut self) -> Result<(), RunError> {
        self.seal().await?;
        tracing::info!(position = self.position, "stopped");
        Ok(())
    }

    /// Drops the open segment; the caller recreates the consumer at the position.
    fn rewind(&mut self) {
        if let Some(o) = self.open.take() {
            tracing::warn!(
                position = self.position,
                dropped = o.messages(),
                "a delivery went missing; reading again from the archived position"
            );
        }
        self.metrics.rewinds.inc();
        self.metrics.open_messages.set(0);
    }

    /// Takes one delivered message; `false` when a delivery went missing (rewind).
    async fn take(&mut self, m: jetstream::Message) -> Result<bool, RunError> {
        let Ok(info) = m.info() else {
            tracing::warn!(subject = %m.subject, "a message without JetStream metadata; ignored");
            return Ok(true);
        };
        let (seq, delivery) = (info.stream_sequence, info.consumer_sequence);
        let stored_ns = i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        if delivery != self.last_delivery + 1 {
            return Ok(false);
        }
        self.last_delivery = delivery;
        let in_hand = self.open.as_ref().map_or(self.position, |o| o.last_seq);
        if seq <= in_hand {
            return Ok(true); // a redelivery of what is archived or in hand
        }
        if seq > in_hand + 1 && !self.gap(in_hand + 1, seq - 1).await? {
            return Ok(true); // shutdown while the store was away; read again at start
        }
        let record = Record {
            seq,
            stored_ns,
            subject: m.subject.to_string(),
            bsky_seq: m
                .headers
                .as_ref()
                .and_then(|h| h.get(contract::header::SEQ))
                .and_then(|v| v.as_str().parse().ok()),
            payload: m.payload.clone(),
        };
        let time_us = kit::event::time_us(&record.payload).ok();
        self.line.clear();
        format::write_line(&mut self.line, &record);
        if self.open.is_none() {
            let enc = zstd::Encoder::new(Vec::new(), self.config.segment.zstd_level)
                .map_err(RunError::Compress)?;
            self.open = Some(Open {
                enc,
                first_seq: seq,
                last_seq: seq,
                first_stored_ns: stored_ns,
                last_stored_ns: stored_ns,
                min_time_us: time_us,
                max_time_us: time_us,
                opened: Instant::now(),
                last_msg: m,
            });
        } else if let Some(o) = &mut self.open {
            o.last_seq = seq;
            o.last_stored_ns = stored_ns;
            o.min_time_us = o.min_time_us.min(time_us).or(time_us.or(o.min_time_us));
            o.max_time_us = o.max_time_us.max(time_us);
            o.last_msg = m;
        }
        let full = match &mut self.open {
            Some(o) => {
                o.enc.write_all(&self.line).map_err(RunError::Compress)?;
                self.metrics
                    .open_messages
                    .set(i64::try_from(o.messages()).unwrap_or(i64::MAX));
                o.enc.get_ref().len() as u64 >= self.config.segment.max_bytes
                    || o.messages() >= self.config.segment.max_messages
            }
            None => false,
        };
        if full {
            self.seal().await?;
        }
        Ok(true)
    }

    /// Seals the open segment, if any: segment, then manifest entry, then the ack.
    /// `false` when shutdown fired while the store was away (nothing acked).
    async fn seal(&mut self) -> Result<bool, RunError> {
        let Some(o) = self.open.take() else {
            return Ok(true);
        };
        self.metrics.open_messages.set(0);
        let messages = o.messages();
        let bytes = bytes::Bytes::from(o.enc.finish().map_err(RunError::Compress)?);
        let entry = SegmentEntry {
            key: format::segment_key(o.first_seq, o.last_seq),
            first_seq: o.first_seq,
            last_seq: o.last_seq,
            messages,
            first_stored_ns: o.first_stored_ns,
            last_stored_ns: o.last_stored_ns,
            min_time_us: o.min_time_us,
            max_time_us: o.max_time_us,
            bytes: bytes.len() as u64,
            sha256: hex(&Sha256::digest(&bytes)),
            stream_created: self.stream_created.clone(),
        };
        let objects = self.archive.store().objects.clone();
        let seg_path = Path::from(entry.key.as_str());
        let put_seg = self
            .retry(StoreOp::PutSegment, &entry.key, || {
                objects.put(&seg_path, bytes.clone().into())
            })
            .await;
        if put_seg.is_none() || !self.put_entry(&Entry::Segment(entry.clone())).await {
            return Ok(false);
        }
        if let Err(e) = o.last_msg.ack().await {
            tracing::warn!(error = %e, "ack failed; the server will deliver the segment again (skipped)");
        }
        self.position = entry.last_seq;
        self.metrics
            .position
            .set(i64::try_from(self.position).unwrap_or(i64::MAX));
        self.metrics.messages.inc_by(messages);
        self.metrics.segments.inc();
        self.metrics.bytes.inc_by(entry.bytes);
        tracing::info!(
            key = %entry.key,
            messages,
            bytes = entry.bytes,
            "segment sealed"
        );
        Ok(true)
    }

    /// Writes a manifest entry; `false` on shutdown while the store was away.
    async fn put_entry(&self, entry: &Entry) -> bool {
        let key = format::manifest_key(entry.first_seq());
        let body = match serde_json::to_vec_pretty(entry) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a manifest entry");
                return false;
            }
        };
        let path = Path::from(key.as_str());
        let objects = self.archive.store().objects.clone();
        self.retry(StoreOp::PutManifest, &key, || {
            objects.put(&path, body.clone().into())
        })
        .await
        .is_some()
    }

    /// Records that the stream no longer holds `first..=last`: seals the open segment
    /// (segments are contiguous), then writes the gap entry. `false` on shutdown.
    async fn gap(&mut self, first: u64, last: u64) -> Result<bool, RunError> {
        if !self.seal().await? {
            return Ok(false);
        }
        let missing = last - first + 1;
        tracing::error!(
            first_seq = first,
            last_seq = last,
            missing,
            "the stream removed messages before they were archived; recording the gap"
        );
        let entry = Entry::Gap(GapEntry {
            first_seq: first,
            last_seq: last,
            detected_ns: i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            )
            .unwrap_or(i64::MAX),
            reason: "retention".into(),
        });
        if !self.put_entry(&entry).await {
            return Ok(false);
        }
        self.position = last;
        self.metrics
            .position
            .set(i64::try_from(last).unwrap_or(i64::MAX));
        self.metrics.gaps.inc();
        self.metrics.gap_messages.inc_by(missing);
        Ok(true)
    }
}
