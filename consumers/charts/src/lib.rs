//! # charts: the network's activity, by event time
//!
//! Where it sits: `JetStream stream BSKY → durable consumer "charts" (kit) → SQLite →
//! page, JSON, /metrics`. What bskycharts showed: posts, likes, reposts, follows, blocks,
//! profile updates, deletes and new accounts per hour, daily active users, and the
//! languages of posts, every figure keyed by the event's own time.
//!
//! - [`handler`]: what one commit does to the tables (the rules of each figure);
//! - [`users`]: exact distinct users per day in bounded memory (64-bit DID hashes);
//! - [`query`]: the read side, shared by the page, the JSON API and the tests;
//! - [`web`] and [`chart`]: the page (maud), its charts drawn on the server (plotters
//!   SVG, working offline and without JavaScript), the JSON and CSV downloads;
//! - [`config`]: the typed configuration (`BSKY_CHARTS_…`), `--from-seq`/`--from-time`.
//!
//! `main.rs` parses the configuration and calls [`run`]; tests call the same function.

pub mod chart;
pub mod config;
pub mod handler;
pub mod query;
pub mod users;
pub mod web;

use config::Config;
use kit::{Handler, Progress, Start};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Prefix of the metrics (`bsky_charts_messages_total`, …).
pub const METRICS_PREFIX: &str = "bsky_charts";

/// Runs the consumer and the web server until `shutdown` fires (or the consumer stops on
/// an error, which stops the web server too).
pub async fn run(
    config: Config,
    start: Start,
    shutdown: CancellationToken,
) -> Result<(), kit::ServiceError> {
    info!(config = %config.summary(), ?start, "starting");
    let Some(client) = service::nats::connect_until(&config.nats, &shutdown).await? else {
        return Ok(());
    };
    info!(server = %client.server_info().version, "connected to NATS");
    let js = async_nats::jetstream::new(client.clone());

    let mut registry = prometheus_client::registry::Registry::with_prefix(METRICS_PREFIX);
    let metrics = kit::metrics::Metrics::register(&mut registry, handler::Charts::POISON_REASONS);
    let skips = handler::SkipMetrics::register(&mut registry);
    let clock = config.clock.parse()?;
    let (progress_tx, progress_rx) = watch::channel(Progress::default());

    let (listener, addr) = kit::listen(&config.http.listen).await?;
    info!(%addr, "charts page on /, JSON on /api/, metrics on /metrics");
    let state = Arc::new(web::AppState {
        db: config.state.path.clone(),
        progress: progress_rx,
        range: config.http.range,
        upstream: config.upstream.label,
        clock,
    });
    let router = web::router(state).merge(service::telemetry::metrics_router(registry));
    let serving = kit::Serving {
        js,
        opts: kit::Options {
            consumer: config.consumer.clone(),
            state: config.state.clone(),
            start,
            history: archive::history::ArchiveHistory::from_table(&config.archive)?,
        },
        handler: handler::Charts::new(clock, skips),
        metrics,
        progress: progress_tx,
        listener,
        router,
    };
    let result = kit::run_serving(serving, shutdown).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client.flush()).await;
    result?;
    info!("stopped");
    Ok(())
}
