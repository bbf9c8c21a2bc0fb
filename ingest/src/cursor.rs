//! The resume cursor, kept in NATS itself: one key in a JetStream KV bucket.
//!
//! The value is `{"relay_seq":N,"stream_seq":S,"relay":"<url>","stream_created_us":C}`:
//! every event with relay seq ≤ N is stored in the stream, the last of them at stream
//! sequence S, in a stream created at C. It is stored every `cursor.save_interval` and on
//! shutdown, so it lags the stream by a second or so.
//!
//! The stream itself is the truth about what is stored (`resume.rs` reads its last message
//! on start); the cursor says which relay the sequence numbers belong to, where to go on
//! when the stream holds nothing, and lets a start notice that the stream was recreated or
//! lost messages the ingestor had stored.

use async_nats::jetstream::{self, context::CreateKeyValueError, kv, stream};
use serde::{Deserialize, Serialize};
use service::telemetry::Chain;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A point in the relay's sequence and the stream's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub relay_seq: Option<i64>,
    pub stream_seq: u64,
}

/// The stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// `null` until the first frame is stored.
    pub relay_seq: Option<i64>,
    /// The stream sequence of the last message of frame `relay_seq`.
    pub stream_seq: u64,
    /// The relay, normalised (`relay::normalize_url`).
    pub relay: String,
    /// When the stream was created, microseconds since the epoch (absent in records of
    /// older versions).
    #[serde(default)]
    pub stream_created_us: Option<i64>,
}

/// Why the cursor could not be opened, read or stored. At start: stop and tell the
/// operator (the bucket or the permissions are wrong). While running: warn and retry at the
/// next save, the stream is still the truth about what is stored.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// The bucket does not exist and could not be created.
    #[error("creating KV bucket {bucket}")]
    CreateBucket {
        /// `cursor.bucket`.
        bucket: String,
        /// What JetStream said.
        #[source]
        source: CreateKeyValueError,
    },
    /// The key could not be read.
    #[error("reading cursor {key}")]
    Read {
        /// `cursor.key`.
        key: String,
        /// What JetStream said.
        #[source]
        source: kv::EntryError,
    },
    /// The record could not be serialised (a bug: it holds numbers and a string).
    #[error("encoding the cursor record")]
    Encode(#[source] serde_json::Error),
    /// The key could not be written.
    #[error("storing cursor {key}")]
    Write {
        /// `cursor.key`.
        key: String,
        /// What JetStream said.
        #[source]
        source: kv::PutError,
    },
}

/// The KV key that holds the cursor.
pub struct CursorStore {
    kv: kv::Store,
    key: String,
    relay: String,
    stream_created_us: i64,
}

impl CursorStore {
    /// Opens (or creates) the bucket. `relay` is the normalised relay URL and
    /// `stream_created_us` the creation time of the stream the positions refer to.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        key: &str,
        relay: &str,
        replicas: usize,
        stream_created_us: i64,
    ) -> Result<CursorStore, CursorError> {
        let kv = open_bucket(js, bucket, replicas).await?;
        Ok(CursorStore {
            kv,
            key: key.to_string(),
            relay: relay.to_string(),
            stream_created_us,
        })
    }

    /// The bucket, shared with the lease (`lease.rs`).
    pub fn bucket(&self) -> kv::Store {
        self.kv.clone()
    }
}

/// Opens (or creates) the KV bucket of the cursor and the lease.
pub async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, CursorError> {
    Ok(match js.get_key_value(bucket).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: bucket.to_string(),
                description: "bsky ingest resume cursors".into(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|source| CursorError::CreateBucket {
                bucket: bucket.to_string(),
                source,
            })?,
    })
}

impl CursorStore {
    /// The stored record, if there is a readable one.
    pub async fn load(&self) -> Result<Option<Stored>, CursorError> {
        let Some(raw) = self
            .kv
            .get(&self.key)
            .await
            .map_err(|source| CursorError::Read {
                key: self.key.clone(),
                source,
            })?
        else {
            return Ok(None);
        };
        match serde_json::from_slice(&raw) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                warn!(key = %self.key, error = %e, "stored cursor is unreadable; ignoring it");
                Ok(None)
            }
        }
    }

    /// Stores `p`.
    pub async fn save(&self, p: Position) -> Result<(), CursorError> {
        let value = serde_json::to_vec(&Stored {
            relay_seq: p.relay_seq,
            stream_seq: p.stream_seq,
            relay: self.relay.clone(),
            stream_created_us: Some(self.stream_created_us),
        })
        .map_err(CursorError::Encode)?;
        self.kv
            .put(&self.key, value.into())
            .await
            .map_err(|source| CursorError::Write {
                key: self.key.clone(),
                source,
            })?;
        Ok(())
    }

    /// Stores the cursor each `interval` while it moves, and once more when `rx` closes
    /// or `shutdown` fires (after the publisher has drained).
    pub async fn keep(
        self,
        mut rx: watch::Receiver<Position>,
        interval: Duration,
        done: CancellationToken,
    ) {
        let mut saved = *rx.borrow();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = done.cancelled() => break,
            }
            let now = *rx.borrow_and_update();
            if now != saved {
                match self.save(now).await {
                    Ok(()) => saved = now,
                    Err(e) => warn!(error = %Chain(&e), "could not store the cursor; will retry"),
                }
            }
        }
        let last = *rx.borrow();
        if last != saved {
            match tokio::time::timeout(Duration::from_secs(2), self.save(last)).await {
                Ok(Ok(())) => info!(cursor = ?last.relay_seq, "cursor stored"),
                Ok(Err(e)) => warn!(error = %Chain(&e), "could not store the final cursor"),
                Err(_) => warn!("timed out storing the final cursor"),
            }
        }
    }
}
