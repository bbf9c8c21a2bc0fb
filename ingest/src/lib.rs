//! # ingest: the Bluesky firehose into NATS JetStream
//!
//! The data flow, one module each:
//!
//! ```text
//! relay.rs ──(bounded channel of decoded frames)──▶ publish.rs ──(acked positions)──▶ cursor.rs
//!   WebSocket, firehose::decode        async publishes, bounded window      KV bucket in NATS
//! ```
//!
//! [`run`] wires them: connect to NATS (refusing servers older than 2.10), create or
//! update the stream ([`stream`]), load the cursor and what the stream already holds past
//! it ([`cursor`]), then read the relay from there until `shutdown`. `main.rs` only parses
//! the configuration ([`config`]) and calls [`run`]; tests call the same function.

pub mod config;
pub mod cursor;
pub mod metrics;
pub mod publish;
pub mod relay;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;

use config::Config;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Decoded frames waiting for the publisher; small, since the publish window is the buffer.
const CHANNEL_FRAMES: usize = 64;
/// How long shutdown waits for in-flight acks before storing the cursor and exiting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs the ingestor until `shutdown` fires; returns after the in-flight publishes are
/// acked (or [`DRAIN_TIMEOUT`] passes) and the cursor is stored.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    info!(config = %config.summary(), "starting");
    let client = service::nats::connect(&config.nats).await?;
    info!(server = %client.server_info().version, "connected to NATS");
    let js = publish::context(client.clone(), &config.publish);
    let mut stream = stream::ensure(&js, &config.stream).await?;

    let store = cursor::CursorStore::open(
        &js,
        &config.cursor.bucket,
        &config.cursor_key(),
        &config.relay.url,
        config.stream.replicas,
    )
    .await?;
    let stored = match store.load().await? {
        Some(position) => position,
        None => {
            // First start against this stream: record where the stream stands before
            // publishing anything, so a crash before the first cursor save can still tell
            // its own messages (those after this point) from older ones.
            let position = cursor::Position {
                relay_seq: None,
                stream_seq: stream.info().await?.state.last_sequence,
            };
            store.save(position).await?;
            position
        }
    };
    let already_stored = cursor::stored_after(&mut stream, stored.stream_seq).await?;
    let start = config.relay.start_cursor.or(stored.relay_seq);
    info!(cursor = ?start, stored = ?stored.relay_seq, already_stored = already_stored.len(), "resuming");

    let metrics = metrics::Metrics::default();
    let registry = metrics.registry();
    let metrics_task = if config.metrics.listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .map_err(|e| anyhow::anyhow!("metrics.listen {}: {e}", config.metrics.listen))?;
        info!(addr = %listener.local_addr()?, "metrics on /metrics");
        Some(tokio::spawn(service::telemetry::serve_metrics(
            listener,
            registry,
            shutdown.clone(),
        )))
    };

    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    let position = cursor::Position {
        relay_seq: start,
        stream_seq: stored.stream_seq,
    };
    let (cursor_tx, cursor_rx) = watch::channel(position);
    let publisher = publish::Publisher {
        js: js.clone(),
        window: config.publish.window,
        window_bytes: config.publish.window_bytes,
        metrics: metrics.clone(),
        already_stored,
        start: position,
    };
    let saver_done = CancellationToken::new();
    let saver =
        tokio::spawn(store.keep(cursor_rx, config.cursor.save_interval, saver_done.clone()));
    let publisher = tokio::spawn(publisher.run(rx, cursor_tx, DRAIN_TIMEOUT));
    let progress = tokio::spawn(progress(
        metrics.clone(),
        config.log.progress_interval,
        shutdown.clone(),
    ));
    let reader = relay::run(
        config.relay.clone(),
        start,
        tx,
        metrics.clone(),
        shutdown.clone(),
    );

    reader.await; // returns on shutdown; dropping its sender lets the publisher drain
    let _ = publisher.await;
    saver_done.cancel();
    let _ = saver.await;
    progress.abort();
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    info!("stopped");
    Ok(())
}

/// Logs a progress line every `every`: events/s, ops/s, relay seq, lag.
async fn progress(m: metrics::Metrics, every: Duration, shutdown: CancellationToken) {
    if every.is_zero() {
        return;
    }
    let total_events = |m: &metrics::Metrics| -> u64 {
        firehose::Kind::ALL
            .iter()
            .map(|k| {
                m.events
                    .get_or_create(&metrics::KindLabel { kind: k.as_str() })
                    .get()
            })
            .sum()
    };
    let mut last = (Instant::now(), total_events(&m), m.published.get());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = (Instant::now(), total_events(&m), m.published.get());
        let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-9);
        info!(
            events_per_s = ((now.1 - last.1) as f64 / secs).round(),
            ops_per_s = ((now.2 - last.2) as f64 / secs).round(),
            relay_seq = m.relay_seq.get(),
            cursor = m.cursor_seq.get(),
            lag_s = (m.lag_seconds.get() * 10.0).round() / 10.0,
            inflight = m.inflight.get(),
            "progress"
        );
        last = now;
    }
}
