//! # kit: what every consumer of the stream shares
//!
//! Where it sits: `relay → ingest → JetStream stream BSKY → **kit** → charts, feedgen,
//! gateway, your service`. A service writes a [`Handler`] (its SQLite tables and what one
//! event does to them); kit does the rest:
//!
//! - [`consumer`]: the service's own durable pull consumer with its subject filters,
//!   bound or recreated at the committed position;
//! - [`run`]: batches, one SQLite transaction per batch holding the data **and** the
//!   stream position, then acks; poison messages terminated and counted by reason;
//!   transient failures NAKed with a growing delay and retried in stream order; graceful
//!   shutdown;
//! - [`serve`]: [`run_serving`], the loop beside the service's HTTP server, the first
//!   failure of either stopping both;
//! - [`state`]: the database (WAL) and the position row; redeliveries at or below the
//!   position are skipped, so nothing is counted twice or missed after a crash;
//! - [`config`]: the `[consumer]` and `[state]` tables, and the rebuild flags
//!   (`--from-seq`, `--from-time`: by *event* time through [`seek`], or by storage time
//!   for a handler that bounds the clock skew, [`Handler::clock_skew_bound`]);
//! - [`history`]: what the stream no longer holds, read from the archive before the
//!   stream, without a seam;
//! - [`status`]: lag in messages and in event time, and losses to the stream's retention;
//! - [`metrics`]: `<prefix>_messages_total{outcome}`, `_poison_total{reason}`,
//!   `_lag_messages`, `_lag_seconds`, `_acks_pending`, `_retention_lost_messages_total`…;
//! - [`event`]: the payloads of `subjects.md` as typed, borrowed values, parsed once
//!   (`contract::event`, re-exported here so `kit::event::Event` keeps working).
//!
//! A whole consumer (`examples/langs.rs`, posts per language per day):
//!
//! ```no_run
//! # use kit::{Handler, HandleError, Msg, Rebuild, rusqlite::{self, Transaction}};
//! # struct Langs;
//! # impl Handler for Langs {
//! #   fn init(&mut self, _: &Transaction<'_>) -> rusqlite::Result<()> { Ok(()) }
//! #   fn rebuild(&mut self, _: &Transaction<'_>, _: Rebuild) -> rusqlite::Result<()> { Ok(()) }
//! #   fn handle(&mut self, _: &Transaction<'_>, _: &Msg<'_>) -> Result<(), HandleError> { Ok(()) }
//! # }
//! # async fn f() -> Result<(), kit::Error> {
//! let opts = kit::Options::new("langs", &[contract::subject::POSTS]);
//! kit::run_with_signals("nats://127.0.0.1:4222", opts, Langs).await
//! # }
//! ```

pub mod config;
pub mod consumer;
/// The payload types of the contract crate (`contract::event`).
pub use contract::event;
pub mod handler;
pub mod history;
pub mod metrics;
pub mod run;
pub mod seek;
pub mod serve;
mod start;
pub mod state;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use config::Start;
pub use handler::{HandleError, Handler, Msg, Rebuild};
pub use run::{run, Options, RunError};
pub use rusqlite;
pub use serve::{listen, run_serving, ServiceError, Serving};
pub use status::Progress;

/// A standalone consumer could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS could not be reached, or refused.
    #[error(transparent)]
    Connect(#[from] service::nats::ConnectError),
    /// The loop stopped.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl Options {
    /// Defaults for a service: durable `durable` on stream `BSKY` with these subject
    /// filters, state in `<durable>.db`, resuming.
    pub fn new(durable: &str, subjects: &[&str]) -> Options {
        Options {
            consumer: config::Consumer {
                durable: durable.into(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                ..config::Consumer::default()
            },
            state: config::State {
                path: format!("{durable}.db").into(),
                ..config::State::default()
            },
            start: Start::Resume,
            history: None,
        }
    }
}

/// Connects to `nats_url` and runs `handler` until SIGINT or SIGTERM: a whole consumer for
/// a service that needs nothing else (its metrics are kept but not served).
pub async fn run_with_signals<H: Handler>(
    nats_url: &str,
    opts: Options,
    handler: H,
) -> Result<(), Error> {
    let settings = service::nats::Settings {
        url: nats_url.into(),
        name: opts.consumer.durable.clone(),
        ..Default::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(service::shutdown::on_signals(shutdown.clone()));
    let Some(client) = service::nats::connect_until(&settings, &shutdown).await? else {
        return Ok(());
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry, H::POISON_REASONS);
    let (progress, _) = tokio::sync::watch::channel(Progress::default());
    run(
        async_nats::jetstream::new(client),
        opts,
        handler,
        metrics,
        progress,
        shutdown,
    )
    .await?;
    Ok(())
}
