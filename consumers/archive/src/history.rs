//! The archive as kit's [`kit::history::History`]: what a consumer reads, before the
//! stream, when the stream no longer holds the next message it needs. charts, feedgen and
//! the gateway open it from their `[archive]` table ([`ArchiveHistory::from_table`]).

use crate::reader::{Archive, From, Replay};
use crate::store::{Store, StoreConfig};
use futures_util::future::BoxFuture;
use kit::handler::BoxError;
use kit::history::{History, Kept, Reader, Since};

/// The archive in a store, read-only.
#[derive(Debug, Clone)]
pub struct ArchiveHistory {
    archive: Archive,
    summary: String,
}

impl ArchiveHistory {
    /// Opens the archive `config` names, the `[table]` of a consumer's configuration (its
    /// keys are those of the archiver's `[store]`); an error names `<table>.<key>`.
    pub fn open(
        table: &str,
        config: &StoreConfig,
    ) -> Result<ArchiveHistory, service::config::ConfigError> {
        let under = |e: service::config::ConfigError| e.under("store", table);
        config.check().map_err(under)?;
        let store = Store::open(config).map_err(under)?;
        Ok(ArchiveHistory::new(store, config.summary()))
    }

    /// A consumer's `[archive]` table as it is by default: no archive (`url` empty), the
    /// other keys those of the archiver's `[store]`.
    pub fn table_default() -> StoreConfig {
        StoreConfig {
            url: String::new(),
            ..StoreConfig::default()
        }
    }

    /// The history a consumer's `[archive]` table names: `None` when its `url` is empty.
    pub fn from_table(
        config: &StoreConfig,
    ) -> Result<Option<std::sync::Arc<dyn History>>, service::config::ConfigError> {
        if unset(config) {
            return Ok(None);
        }
        Ok(Some(std::sync::Arc::new(ArchiveHistory::open(
            "archive", config,
        )?)))
    }

    /// Over an open store; `summary` says where it is (no credentials).
    pub fn new(store: Store, summary: String) -> ArchiveHistory {
        ArchiveHistory {
            archive: Archive::new(store),
            summary,
        }
    }
}

/// A consumer's `[archive]` table names no archive: its `url` is empty.
fn unset(config: &StoreConfig) -> bool {
    config.url.trim().is_empty()
}

/// `--help`'s note on a consumer's `archive.url`.
pub const URL_HINT: &str =
    "empty: none; else the archiver's store.url (a directory, s3://bucket/prefix)";

/// Checks a consumer's `[archive]` table (nothing when `url` is empty); the message names
/// `archive.<key>`.
pub fn check_table(config: &StoreConfig) -> Result<(), service::config::ConfigError> {
    if unset(config) {
        return Ok(());
    }
    config.check().map_err(|e| e.under("store", "archive"))
}

/// A consumer's `[archive]` table, as a log line: `none`, or where it is.
pub fn summary(config: &StoreConfig) -> String {
    if unset(config) {
        "none".into()
    } else {
        config.summary()
    }
}

fn kept(r: crate::format::Record) -> Kept {
    Kept {
        seq: r.seq,
        subject: r.subject,
        payload: r.payload,
        stored_ns: r.stored_ns,
    }
}

struct ReplayReader(Replay);

impl Reader for ReplayReader {
    fn next(&mut self) -> BoxFuture<'_, Result<Option<Kept>, BoxError>> {
        Box::pin(async move { Ok(self.0.next().await?.map(kept)) })
    }
}

impl History for ArchiveHistory {
    fn describe(&self) -> String {
        format!("archive in {}", self.summary)
    }

    fn first(&self) -> BoxFuture<'_, Result<Option<Kept>, BoxError>> {
        Box::pin(async move {
            let mut replay = self.archive.replay(From::Seq(0)).await?;
            Ok(replay.next().await?.map(kept))
        })
    }

    /// From the manifest: the first segment's first sequence (every sequence of a segment
    /// is inside it), without reading the segment.
    fn first_seq(&self) -> BoxFuture<'_, Result<Option<u64>, BoxError>> {
        Box::pin(async move {
            Ok(self.archive.manifest().await?.iter().find_map(|e| match e {
                crate::format::Entry::Segment(s) => Some(s.first_seq),
                crate::format::Entry::Gap(_) => None,
            }))
        })
    }

    fn read(&self, since: Since) -> BoxFuture<'_, Result<Box<dyn Reader>, BoxError>> {
        Box::pin(async move {
            let from = match since {
                Since::Seq(n) => From::Seq(n),
                Since::EventTime(t) => From::Time(t),
                Since::StoredTime(t) => From::Stored(t),
            };
            let replay = self.archive.replay(from).await?;
            Ok(Box::new(ReplayReader(replay)) as Box<dyn Reader>)
        })
    }
}
