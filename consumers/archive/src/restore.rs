//! `archive restore`: re-publishes a range of the archive into a fresh stream, so a lost
//! stream can be rebuilt with the same sequences.
//!
//! The stream is created with the ingestor's settings (`ingest::stream::stream_config`)
//! and `first_seq` at the range's first archived sequence; each message is published with
//! its subject, payload and `Bsky-Seq`, and with `Nats-Expected-Last-Sequence` so that it
//! can only land at its own sequence. A gap entry inside the range is published as
//! placeholders on [`GAP_SUBJECT`] that are deleted at once: the stream then has the same
//! holes as the archive, and every later message keeps its sequence.

use crate::format::{Entry, Record};
use crate::reader::{Archive, ArchiveError, SegmentReader};
use async_nats::jetstream::{self, context::PublishAckFuture};
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::future::IntoFuture;
use tokio_util::sync::CancellationToken;

/// Subject of the placeholders that keep a gap's sequences (deleted right after).
pub const GAP_SUBJECT: &str = contract::subject::ARCHIVE_GAP;

/// What to restore, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The stream to create (it must not exist).
    pub stream: String,
    /// First sequence (an earlier one than the archive's first starts there).
    pub from_seq: u64,
    /// Last sequence; `None`: the archive's end.
    pub to_seq: Option<u64>,
    /// Publishes awaiting their ack at once.
    pub window: usize,
}

/// What was restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The stream's first sequence.
    pub first_seq: u64,
    /// Its last sequence.
    pub last_seq: u64,
    /// Messages published.
    pub messages: u64,
    /// Sequences left empty (the archive's gaps).
    pub missing: u64,
}

/// The restore stopped. Nothing is retried: fix the cause, delete the half-restored
/// stream, and run it again.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The archive cannot be read.
    #[error("reading the archive")]
    Archive(#[from] ArchiveError),
    /// Nothing archived in the range.
    #[error("the archive holds nothing from {from} to {to:?}")]
    Empty {
        /// Asked from.
        from: u64,
        /// Asked to.
        to: Option<u64>,
    },
    /// The target stream exists: a restore only fills a fresh one.
    #[error("stream {0} exists; delete it first (a restore fills a fresh stream)")]
    Exists(String),
    /// The stream cannot be created.
    #[error("creating stream {stream}")]
    Create {
        /// Its name.
        stream: String,
        /// The server's answer.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// A publish failed.
    #[error("publishing sequence {seq}")]
    Publish {
        /// The message's sequence.
        seq: u64,
        /// The client's or server's error.
        #[source]
        source: jetstream::context::PublishError,
    },
    /// A message was stored at another sequence than its own.
    #[error("sequence {want} was stored as {got}")]
    Misplaced {
        /// Its own sequence.
        want: u64,
        /// Where it went.
        got: u64,
    },
    /// A gap's placeholder could not be deleted.
    #[error("deleting placeholder {seq}")]
    Delete {
        /// Its sequence.
        seq: u64,
        /// The server's answer.
        #[source]
        source: jetstream::stream::DeleteMessageError,
    },
    /// Shutdown fired.
    #[error("interrupted at sequence {0}")]
    Interrupted(u64),
    /// Every message is restored, but the stream's metadata could not say where they come
    /// from: consumers will ask for a rebuild instead of going on.
    #[error("restored stream {stream} through {through}, but could not record its lineage")]
    Lineage {
        /// Its name.
        stream: String,
        /// The last sequence restored.
        through: u64,
        /// The server's answer.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Names, in the restored stream's metadata ([`contract::lineage`]), the streams its
/// messages were archived from and the last sequence restored, so consumers built on those
/// streams go on from their positions. Nothing when no entry recorded its stream (an
/// archive written before the archiver recorded it).
async fn record_lineage(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    name: &str,
    entries: &[Entry],
    through: u64,
) -> Result<(), RestoreError> {
    let mut from: Vec<String> = Vec::new();
    for e in entries {
        if let Entry::Segment(s) = e {
            if let Some(c) = s.stream_created.as_ref().filter(|c| !from.contains(c)) {
                from.push(c.clone());
            }
        }
    }
    if from.is_empty() {
        tracing::warn!(stream = name, "the archive does not name the streams it was read from: consumers of the lost stream will need --from-seq 1");
        return Ok(());
    }
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| RestoreError::Lineage {
        stream: name.to_string(),
        through,
        source,
    };
    let mut config = stream
        .get_info()
        .await
        .map_err(|e| failed(e.into()))?
        .config;
    config
        .metadata
        .extend(contract::lineage::Restored { from, through }.metadata());
    js.update_stream(&config)
        .await
        .map_err(|e| failed(e.into()))?;
    Ok(())
}

/// Publishes with at most `window` acks outstanding, each checked to land at its sequence.
struct Publisher<'a> {
    js: &'a jetstream::Context,
    inflight: FuturesOrdered<Pending>,
    window: usize,
}

type Pending = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (u64, Result<u64, jetstream::context::PublishError>)>
            + Send,
    >,
>;

impl Publisher<'_> {
    async fn publish(&mut self, r: &Record) -> Result<(), RestoreError> {
        while self.inflight.len() >= self.window {
            self.settle_one().await?;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            contract::header::EXPECTED_LAST_SEQUENCE,
            (r.seq - 1).to_string().as_str(),
        );
        if let Some(b) = r.bsky_seq {
            headers.insert(contract::header::SEQ, b.to_string().as_str());
        }
        let ack: PublishAckFuture = self
            .js
            .publish_with_headers(r.subject.clone(), headers, r.payload.clone())
            .await
            .map_err(|source| RestoreError::Publish { seq: r.seq, source })?;
        let seq = r.seq;
        self.inflight.push_back(Box::pin(async move {
            (seq, ack.into_future().await.map(|a| a.sequence))
        }));
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<(), RestoreError> {
        if let Some((want, got)) = self.inflight.next().await {
            let got = got.map_err(|source| RestoreError::Publish { seq: want, source })?;
            if got != want {
                return Err(RestoreError::Misplaced { want, got });
            }
        }
        Ok(())
    }

    async fn settle_all(&mut self) -> Result<(), RestoreError> {
        while !self.inflight.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }
}

/// Restores `opts`'s range of `archive` into a new stream on `js`.
pub async fn restore(
    js: &jetstream::Context,
    archive: &Archive,
    opts: &Options,
    shutdown: &CancellationToken,
) -> Result<Restored, RestoreError> {
    let to = opts.to_seq.unwrap_or(u64::MAX);
    let entries: Vec<Entry> = archive
        .manifest()
        .await?
        .into_iter()
        .filter(|e| e.last_seq() >= opts.from_seq && e.first_seq() <= to)
        .skip_while(|e| matches!(e, Entry::Gap(_)))
        .collect();
    let Some(first) = entries.first().map(|e| e.first_seq().max(opts.from_seq)) else {
        return Err(RestoreError::Empty {
            from: opts.from_seq,
            to: opts.to_seq,
        });
    };
    if js.get_stream(&opts.stream).await.is_ok() {
        return Err(RestoreError::Exists(opts.stream.clone()));
    }
    let mut cfg = ingest::stream::stream_config(&ingest::config::Stream {
        name: opts.stream.clone(),
        ..ingest::config::Config::default().stream
    });
    cfg.first_sequence = Some(first);
    let stream = js
        .create_stream(cfg)
        .await
        .map_err(|source| RestoreError::Create {
            stream: opts.stream.clone(),
            source,
        })?;
    let mut p = Publisher {
        js,
        inflight: FuturesOrdered::new(),
        window: opts.window.max(1),
    };
    let mut done = Restored {
        first_seq: first,
        last_seq: first - 1,
        messages: 0,
        missing: 0,
    };
    for e in &entries {
        match e {
            Entry::Segment(s) => {
                let bytes = archive.segment_bytes(s).await?;
                let mut reader = SegmentReader::new(s, bytes)?;
                while let Some(r) = reader.next_record()? {
                    if r.seq < first || r.seq > to {
                        continue;
                    }
                    if shutdown.is_cancelled() {
                        return Err(RestoreError::Interrupted(r.seq));
                    }
                    p.publish(&r).await?;
                    done.messages += 1;
                    done.last_seq = r.seq;
                }
            }
            Entry::Gap(g) => {
                let last = g.last_seq.min(to);
                for seq in g.first_seq..=last {
                    let placeholder = Record {
                        seq,
                        stored_ns: 0,
                        subject: GAP_SUBJECT.into(),
                        bsky_seq: None,
                        payload: bytes::Bytes::new(),
                    };
                    p.publish(&placeholder).await?;
                }
                p.settle_all().await?;
                for seq in g.first_seq..=last {
                    stream
                        .delete_message(seq)
                        .await
                        .map_err(|source| RestoreError::Delete { seq, source })?;
                }
                done.missing += last - g.first_seq + 1;
                done.last_seq = last;
            }
        }
    }
    p.settle_all().await?;
    record_lineage(js, &stream, &opts.stream, &entries, done.last_seq).await?;
    tracing::info!(
        stream = %opts.stream,
        first_seq = done.first_seq,
        last_seq = done.last_seq,
        messages = done.messages,
        missing = done.missing,
        "restored"
    );
    Ok(done)
}
