//! One writer per stream: a lease held in the cursor's KV bucket, key `lease.<stream>`.
//!
//! The holder renews it every `lease.ttl / 3` with a revision-checked update. Another
//! ingestor that finds it watches the revision with its own clock: a revision that moves
//! means a live holder, and the newcomer refuses to run ([`LeaseError::Held`]); a revision
//! that stays still for `lease.ttl` means a dead one, and the newcomer takes the lease
//! over with an update checked against that very revision. No clocks are compared between
//! hosts, and nats-server 2.10 suffices (no per-key TTL needed).
//!
//! The lease keeps two ingestors from running side by side; it cannot stop a stalled
//! holder (SIGSTOP, a long GC pause of the VM) from waking up after a takeover. That case
//! is fenced by the stream itself: every publish carries `Nats-Expected-Last-Sequence`
//! (see `publish.rs`), so the stale holder's next publish is refused, and its next renewal
//! finds the lease taken and stops it ([`LeaseError::Lost`]).

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use service::telemetry::{Chain, RateLimit};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Why the lease is not ours.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another ingestor holds it and renews it: stop (exit non-zero).
    #[error(
        "another ingestor ({holder}) holds the lease {key} and renews it: refusing to run a \
         second writer on this stream. Stop the other one first; a dead holder's lease is \
         taken over {ttl:?} after this one starts looking"
    )]
    Held {
        /// The key.
        key: String,
        /// Who holds it.
        holder: String,
        /// `lease.ttl`.
        ttl: Duration,
    },
    /// Someone took it over while we held it: stop at once.
    #[error(
        "lost the lease {key} to {holder}: another ingestor took over (this one did not renew \
         within lease.ttl); stopping"
    )]
    Lost {
        /// The key.
        key: String,
        /// Who holds it now.
        holder: String,
    },
    /// The bucket could not be read or written: retry.
    #[error("lease {key}: the KV bucket could not be read or written")]
    Kv {
        /// The key.
        key: String,
        /// What JetStream said (a read, create or update error of the KV store).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Shutdown came first.
    #[error("stopped while waiting for the lease")]
    Cancelled,
}

/// What the lease's value says.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    holder: String,
}

/// A held lease.
pub struct Lease {
    kv: kv::Store,
    key: String,
    me: String,
    revision: u64,
    ttl: Duration,
}

/// This process, as a lease holder: `host:pid:random`.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{nonce:08x}", std::process::id())
}

impl Lease {
    /// Takes the lease, waiting up to `ttl` for a silent holder to be declared dead.
    pub async fn acquire(
        kv: kv::Store,
        key: String,
        ttl: Duration,
        shutdown: &CancellationToken,
    ) -> Result<Lease, LeaseError> {
        let me = holder_id();
        let value = || -> bytes::Bytes {
            serde_json::to_vec(&Holder { holder: me.clone() })
                .unwrap_or_default()
                .into()
        };
        let poll = (ttl / 10).max(Duration::from_millis(100));
        let kv_err = |e: Box<dyn std::error::Error + Send + Sync>| LeaseError::Kv {
            key: key.clone(),
            source: e,
        };
        // The revision being watched, and since when it has not moved.
        let mut watched: Option<(u64, Instant, String)> = None;
        loop {
            let entry = kv.entry(&key).await.map_err(|e| kv_err(e.into()))?;
            match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    let holder = serde_json::from_slice::<Holder>(&e.value)
                        .map(|h| h.holder)
                        .unwrap_or_else(|_| "an unreadable holder".into());
                    match &watched {
                        Some((rev, since, _)) if *rev == e.revision => {
                            if since.elapsed() >= ttl {
                                match kv.update(&key, value(), e.revision).await {
                                    Ok(revision) => {
                                        warn!(key = %key, previous = %holder, silent_for = ?since.elapsed(), "took over the lease of a holder that stopped renewing it");
                                        return Ok(Lease {
                                            kv,
                                            key,
                                            me,
                                            revision,
                                            ttl,
                                        });
                                    }
                                    Err(_) => return Err(LeaseError::Held { key, holder, ttl }),
                                }
                            }
                        }
                        Some(_) => return Err(LeaseError::Held { key, holder, ttl }),
                        None => {
                            info!(key = %key, holder = %holder, ttl = ?ttl, "the lease is held: watching whether its holder renews it");
                            watched = Some((e.revision, Instant::now(), holder));
                        }
                    }
                }
                // Absent, or released (deleted/purged): take it.
                _ => match kv.create(&key, value()).await {
                    Ok(revision) => {
                        info!(key = %key, holder = %me, "lease acquired");
                        return Ok(Lease {
                            kv,
                            key,
                            me,
                            revision,
                            ttl,
                        });
                    }
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                    Err(e) => return Err(kv_err(e.into())),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(LeaseError::Cancelled),
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Renews the lease once.
    pub async fn renew(&mut self) -> Result<(), LeaseError> {
        let value = serde_json::to_vec(&Holder {
            holder: self.me.clone(),
        })
        .unwrap_or_default();
        match self.kv.update(&self.key, value.into(), self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let entry = self.kv.entry(&self.key).await.map_err(|e| LeaseError::Kv {
                    key: self.key.clone(),
                    source: e.into(),
                })?;
                let holder = match &entry {
                    Some(e) if e.operation == kv::Operation::Put => {
                        serde_json::from_slice::<Holder>(&e.value)
                            .map(|h| h.holder)
                            .unwrap_or_else(|_| "an unreadable holder".into())
                    }
                    _ => "nobody (released)".into(),
                };
                match entry {
                    // Our own renewal that timed out but landed after all (a stalled server).
                    Some(e) if holder == self.me => {
                        self.revision = e.revision;
                        Ok(())
                    }
                    _ => Err(LeaseError::Lost {
                        key: self.key.clone(),
                        holder,
                    }),
                }
            }
            Err(e) => Err(LeaseError::Kv {
                key: self.key.clone(),
                source: e.into(),
            }),
        }
    }

    /// Renews every `ttl / 3` until `shutdown`, then releases the lease so that a successor
    /// need not wait. Returns [`LeaseError::Lost`] as soon as the lease is found taken,
    /// counted in `losses` (`bsky_ingest_lease_losses_total`).
    pub async fn keep(
        mut self,
        shutdown: CancellationToken,
        losses: prometheus_client::metrics::counter::Counter,
    ) -> Result<(), LeaseError> {
        let mut warnings = RateLimit::new(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.ttl / 3) => {}
            }
            match self.renew().await {
                Ok(()) => {}
                Err(lost @ LeaseError::Lost { .. }) => {
                    losses.inc();
                    return Err(lost);
                }
                Err(e) => {
                    if let Some(suppressed) = warnings.allow() {
                        warn!(error = %Chain(&e), suppressed, "could not renew the lease; retrying");
                    }
                }
            }
        }
        let release = self
            .kv
            .delete_expect_revision(&self.key, Some(self.revision));
        match tokio::time::timeout(Duration::from_millis(500), release).await {
            Ok(Ok(())) => info!(key = %self.key, "lease released"),
            _ => {
                warn!(key = %self.key, "could not release the lease; a successor takes it over after lease.ttl")
            }
        }
        Ok(())
    }
}
