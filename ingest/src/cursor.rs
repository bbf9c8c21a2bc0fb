//! The resume cursor, kept in NATS itself: one key in a JetStream KV bucket.
//!
//! The value is `{"relay_seq":N,"stream_seq":S,"relay":"<url>"}`: every event with relay seq
//! ≤ N is acknowledged by JetStream, and S is the highest stream sequence among them that
//! a first publish stored (a retried message can land after later frames' messages, so it
//! would push S past messages a restart must know about). Every message of a frame after N
//! is therefore stored above S.
//! It is stored every `cursor.save_interval` and on shutdown.
//!
//! Exactly once after `kill -9`: the cursor lags what the stream holds by at most one save
//! interval plus the in-flight window. On start, [`stored_after`] reads the `Nats-Msg-Id`
//! of every message the stream holds past S (headers only); the publisher does not send
//! those again. This does not depend on the server's duplicate window, so a restart a
//! day later is as exact as one a second later.

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
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

#[derive(Serialize, Deserialize)]
struct Stored {
    /// `null` until the first frame is acknowledged: the record then only marks where the
    /// stream stood when this ingestor first started, so a crash before the first real
    /// save still knows which messages are its own.
    relay_seq: Option<i64>,
    stream_seq: u64,
    relay: String,
}

/// The KV key that holds the cursor.
pub struct CursorStore {
    kv: kv::Store,
    key: String,
    relay: String,
}

impl CursorStore {
    /// Opens (or creates) the bucket.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        key: &str,
        relay: &str,
        replicas: usize,
    ) -> anyhow::Result<CursorStore> {
        let kv = match js.get_key_value(bucket).await {
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
                .map_err(|e| anyhow::anyhow!("creating KV bucket {bucket}: {e}"))?,
        };
        Ok(CursorStore {
            kv,
            key: key.to_string(),
            relay: relay.to_string(),
        })
    }

    /// The stored position, if there is one for this relay.
    pub async fn load(&self) -> anyhow::Result<Option<Position>> {
        let Some(raw) = self
            .kv
            .get(&self.key)
            .await
            .map_err(|e| anyhow::anyhow!("reading cursor {}: {e}", self.key))?
        else {
            return Ok(None);
        };
        let stored: Stored = match serde_json::from_slice(&raw) {
            Ok(s) => s,
            Err(e) => {
                warn!(key = %self.key, error = %e, "stored cursor is unreadable; starting from the relay's live tail");
                return Ok(None);
            }
        };
        if stored.relay != self.relay && stored.relay_seq.is_some() {
            warn!(stored_relay = %stored.relay, relay = %self.relay, "stored cursor belongs to another relay (seq numbers differ between relays); starting from the relay's default");
            return Ok(Some(Position {
                relay_seq: None,
                stream_seq: stored.stream_seq,
            }));
        }
        Ok(Some(Position {
            relay_seq: stored.relay_seq,
            stream_seq: stored.stream_seq,
        }))
    }

    pub async fn save(&self, p: Position) -> anyhow::Result<()> {
        let value = serde_json::to_vec(&Stored {
            relay_seq: p.relay_seq,
            stream_seq: p.stream_seq,
            relay: self.relay.clone(),
        })?;
        self.kv
            .put(&self.key, value.into())
            .await
            .map_err(|e| anyhow::anyhow!("storing cursor: {e}"))?;
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
                    Err(e) => warn!(error = %e, "could not store the cursor; will retry"),
                }
            }
        }
        let last = *rx.borrow();
        if last != saved {
            match tokio::time::timeout(Duration::from_secs(2), self.save(last)).await {
                Ok(Ok(())) => info!(cursor = ?last.relay_seq, "cursor stored"),
                Ok(Err(e)) => warn!(error = %e, "could not store the final cursor"),
                Err(_) => warn!("timed out storing the final cursor"),
            }
        }
    }
}

/// The `Nats-Msg-Id`s of every message in `stream` after `after` (headers only).
pub async fn stored_after(
    stream: &mut jetstream::stream::Stream,
    after: u64,
) -> anyhow::Result<HashSet<String>> {
    let last = stream
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
        .state
        .last_sequence;
    let mut ids = HashSet::new();
    if last <= after {
        return Ok(ids);
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            headers_only: true,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("resume consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("resume consumer: {e}"))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("resume consumer: {e}"))?;
        let info = msg
            .info()
            .map_err(|e| anyhow::anyhow!("resume consumer: {e}"))?;
        let seq = info.stream_sequence;
        if let Some(id) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        {
            ids.insert(id.as_str().to_string());
        }
        if seq >= last {
            break;
        }
    }
    Ok(ids)
}
