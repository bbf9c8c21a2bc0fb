//! The stream's size against its limit, for the "store near its limit" alert: one task
//! that asks JetStream for the stream's info every [`REFRESH`] and sets
//! `bsky_ingest_stream_bytes` and `bsky_ingest_stream_max_bytes`.
//!
//! The ingestor's user may already read `$JS.API.STREAM.INFO.<stream>` (it checks the
//! stream at start), so this needs no new permission. A failed request keeps the last
//! figures and logs at most one warning a minute; the stream being unreachable is what
//! the other alerts (ingest stopped, publish recoveries) report.

use crate::metrics::Metrics;
use async_nats::jetstream;
use service::telemetry::{Chain, RateLimit};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the figures are refreshed: a little below a common scrape interval.
pub const REFRESH: Duration = Duration::from_secs(10);

/// Refreshes the stream's figures now and every `every` until `shutdown`.
pub async fn watch(
    js: jetstream::Context,
    stream: String,
    metrics: Metrics,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut warnings = RateLimit::new(Duration::from_secs(60));
    loop {
        match js.get_stream(&stream).await {
            Ok(s) => {
                let info = s.cached_info();
                metrics
                    .stream_bytes
                    .set(i64::try_from(info.state.bytes).unwrap_or(i64::MAX));
                metrics.stream_max_bytes.set(info.config.max_bytes);
            }
            Err(e) => {
                if let Some(suppressed) = warnings.allow() {
                    warn!(stream = %stream, error = %Chain(&e), suppressed, "could not read the stream's size; keeping the last figures");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
