//! # archive: every message of the stream, kept past its retention
//!
//! Where it sits: `relay → ingest → JetStream stream BSKY → **archive** → object store`,
//! and back: `object store → restore → a fresh stream`, `object store → replay → a reader`.
//! The stream keeps 72 hours; the archive keeps everything since the archiver started, as
//! sealed, zstd-compressed segments of JSON lines plus a manifest, in a local directory or
//! any S3-compatible store. README.md documents the format for operators.
//!
//! - [`archiver`]: the durable pull consumer that writes segments; `kill -9` safe, waits
//!   out store outages, records gaps the stream's retention made;
//! - [`format`]: object keys, the record line, manifest entries;
//! - [`reader`]: the manifest, checked segments, and [`reader::Replay`] from a sequence or
//!   an event time;
//! - [`history`]: the archive as kit's `History`, for consumers that read past the
//!   stream's start;
//! - [`restore`]: a range of the archive published into a fresh stream, sequence for
//!   sequence;
//! - [`store`]: the `[store]` table and the object store it opens;
//! - [`config`], [`metrics`]: the service's configuration and `bsky_archive_…` metrics.

pub mod archiver;
pub mod config;
pub mod format;
pub mod history;
pub mod metrics;
pub mod reader;
pub mod restore;
pub mod store;

use service::telemetry::Chain;
use tokio_util::sync::CancellationToken;

/// Why `archive` or `archive restore` stopped. Each one means: stop, and tell the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `[store]` cannot be opened.
    #[error(transparent)]
    Store(#[from] service::config::ConfigError),
    /// The NATS settings cannot be used, or the server is unsuitable.
    #[error(transparent)]
    Connect(#[from] service::nats::ConnectError),
    /// `http.listen` cannot be bound.
    #[error("http.listen: cannot listen on {addr}")]
    Listen {
        /// `http.listen`.
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The archiver stopped (see [`archiver::RunError`]).
    #[error(transparent)]
    Archiver(#[from] archiver::RunError),
    /// The restore stopped (see [`restore::RestoreError`]).
    #[error(transparent)]
    Restore(#[from] restore::RestoreError),
}

/// The archiver as `main` runs it: connects, serves `/metrics`, runs until `shutdown`.
pub async fn run(config: config::Config, shutdown: CancellationToken) -> Result<(), Error> {
    tracing::info!(config = %config.summary(), "starting the archiver");
    let store = store::Store::open(&config.store)?;
    let client = service::nats::connect(&config.nats).await?;
    let mut registry = prometheus_client::registry::Registry::with_prefix("bsky_archive");
    let metrics = metrics::Metrics::register(&mut registry);
    let http_stop = CancellationToken::new();
    let http = if config.http.listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.http.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.http.listen.clone(),
                source,
            })?;
        Some(tokio::spawn(service::telemetry::serve_metrics(
            listener,
            registry,
            http_stop.clone(),
        )))
    };
    let result = archiver::run(
        async_nats::jetstream::new(client),
        config,
        reader::Archive::new(store),
        metrics,
        shutdown,
    )
    .await;
    http_stop.cancel();
    if let Some(h) = http {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %Chain(&e), "metrics server"),
            Err(e) => tracing::warn!(error = %Chain(&e), "metrics server task"),
        }
    }
    Ok(result?)
}

/// `archive restore` as `main` runs it.
pub async fn restore(
    config: config::Config,
    opts: restore::Options,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let store = store::Store::open(&config.store)?;
    let client = service::nats::connect(&config.nats).await?;
    let js = async_nats::jetstream::new(client);
    let done = restore::restore(&js, &reader::Archive::new(store), &opts, &shutdown).await?;
    println!(
        "restored stream {}: sequences {}..={}, {} messages, {} left empty (gaps)",
        opts.stream, done.first_seq, done.last_seq, done.messages, done.missing
    );
    Ok(())
}
