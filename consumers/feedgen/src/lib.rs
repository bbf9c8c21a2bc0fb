//! # feedgen: Bluesky feeds from the stream
//!
//! Where it sits: `JetStream stream BSKY → durable consumer "feedgen" (kit), filter
//! bsky.app.bsky.feed.post → SQLite index → app.bsky.feed.getFeedSkeleton`. Feeds are
//! defined in the configuration (words, patterns, languages, media, authors, replies);
//! each post create is matched against all of them once and indexed in those it belongs
//! to, each delete removes the post from all of them.
//!
//! - [`config`]: the typed configuration (`BSKY_FEEDGEN_…`), the feeds, checked at start;
//! - [`post`]: the post record's fields the feeds read, and its place in time (`sort_at`);
//! - [`matcher`]: every feed compiled once; one pass per post for all feeds;
//! - [`index`]: the [`kit::Handler`]: the tables, deletes, retention;
//! - [`query`]: pages by a stable key, opaque cursors, read-only connections;
//! - [`web`]: the XRPC endpoints and `did.json`; [`metrics`]: what is counted.
//!
//! `main.rs` parses the configuration and calls [`run`]; tests call the same function.

pub mod config;
pub mod index;
pub mod matcher;
pub mod metrics;
pub mod post;
pub mod query;
pub mod web;

use config::Config;
use kit::{Handler, Progress, Start};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Prefix of the metrics (`bsky_feedgen_messages_total`, …).
pub const METRICS_PREFIX: &str = "bsky_feedgen";
/// The only subject feedgen reads.
pub const SUBJECT: &str = contract::subject::POSTS;

/// Runs the consumer and the HTTP server until `shutdown` fires (or the consumer stops on
/// an error, which stops the HTTP server too).
pub async fn run(
    config: Config,
    start: Start,
    shutdown: CancellationToken,
) -> Result<(), kit::ServiceError> {
    info!(config = %config.summary(), ?start, "starting");
    if config.feeds.is_empty() {
        tracing::warn!("no feeds configured ([[feeds]] in the --config file): nothing is indexed");
    }
    let mut registry = prometheus_client::registry::Registry::with_prefix(METRICS_PREFIX);
    let kit_metrics = kit::metrics::Metrics::register(&mut registry, index::Index::POISON_REASONS);
    let names: Vec<String> = config.feeds.iter().map(|f| f.name.clone()).collect();
    let metrics = metrics::Metrics::register(&mut registry, &names);
    let mut handler = index::Index::new(&config.feeds, metrics.clone())
        .map_err(|e| kit::ServiceError::Prepare(e.into()))?;

    // The tables and the feeds' ids before anything is served (kit runs init again).
    let state = config.state.clone();
    let handler =
        tokio::task::spawn_blocking(move || -> Result<index::Index, kit::handler::BoxError> {
            let mut conn = kit::state::open(&state)?;
            let tx = conn.transaction()?;
            handler.init(&tx)?;
            tx.commit()?;
            Ok(handler)
        })
        .await
        .map_err(|e| kit::ServiceError::Prepare(e.into()))?
        .map_err(kit::ServiceError::Prepare)?;
    let feeds = config
        .feeds
        .iter()
        .zip(handler.feed_ids())
        .map(|(f, (_, id))| (config.feed_uri(f), id))
        .collect();

    let Some(client) = service::nats::connect_until(&config.nats, &shutdown).await? else {
        return Ok(());
    };
    info!(server = %client.server_info().version, "connected to NATS");
    let js = async_nats::jetstream::new(client.clone());

    let (listener, addr) = kit::listen(&config.http.listen).await?;
    info!(%addr, did = %config.service_did(), "serving /xrpc/app.bsky.feed.getFeedSkeleton, describeFeedGenerator, /.well-known/did.json, /status, /metrics");
    let (progress, progress_rx) = watch::channel(Progress::default());
    let app = Arc::new(web::AppState {
        readers: query::Readers::new(config.state.path.clone(), config.http.readers),
        feeds,
        did: config.service_did(),
        endpoint: config.endpoint(),
        metrics,
        progress: progress_rx,
    });
    let router = web::router(app).merge(service::telemetry::metrics_router(registry));
    let serving = kit::Serving {
        js,
        opts: kit::Options {
            consumer: config.consumer.clone(),
            state: config.state.clone(),
            start,
            history: archive::history::ArchiveHistory::from_table(&config.archive)?,
        },
        handler,
        metrics: kit_metrics,
        progress,
        listener,
        router,
    };
    let result = kit::run_serving(serving, shutdown).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client.flush()).await;
    result?;
    info!("stopped");
    Ok(())
}

/// Reads a feed's whole content from the database at `db`, newest first (for tests and
/// tools): the at-uris of the feed named `name`.
pub fn feed_contents(db: &std::path::Path, name: &str) -> Result<Vec<String>, query::ReadError> {
    let conn = kit::state::open_reader(db)?;
    let id: i64 = conn.query_row("SELECT id FROM feeds WHERE name = ?1", [name], |r| r.get(0))?;
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = query::page(&conn, id, web::MAX_LIMIT, cursor)?;
        out.extend(page.posts);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}
