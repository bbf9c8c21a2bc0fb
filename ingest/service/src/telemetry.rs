//! Logs and metrics, the same way in every binary.
//!
//! Logs are `tracing` events with structured fields, on stderr, as text or JSON lines
//! (`log.format`); `RUST_LOG` filters them (default `info`). Metrics are a
//! `prometheus-client` registry served as OpenMetrics text on `GET /metrics`: every label
//! comes from a closed set, never a DID, an IP or a free-form string.

use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber: stderr, `RUST_LOG` or `info`, in `format`; colours only
/// on a terminal, so files and journals get plain text.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// A router with `GET /metrics` for `registry`; merge it into a service's own router, or
/// serve it alone with [`serve_metrics`].
pub fn metrics_router(registry: Registry) -> axum::Router {
    let registry = Arc::new(registry);
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &registry) {
                    Ok(()) => (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    ),
                    Err(_) => ([("content-type", "text/plain")], String::new()),
                }
            }
        }),
    )
}

/// Serves `router` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Serves `GET /metrics` alone until `shutdown` fires.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve(listener, metrics_router(registry), shutdown).await
}

/// Lets a repeated warning through at most once per `every`, counting what it held back.
///
/// ```
/// let mut limit = service::telemetry::RateLimit::new(std::time::Duration::from_secs(5));
/// for _ in 0..3 {
///     if let Some(suppressed) = limit.allow() {
///         tracing::warn!(suppressed, "skipping a frame");
///     }
/// }
/// ```
#[derive(Debug)]
pub struct RateLimit {
    every: std::time::Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// At most one warning per `every`.
    pub fn new(every: std::time::Duration) -> Self {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when this one may be logged (`n` were held back since the last one).
    pub fn allow(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// An error and its causes, `outer: inner: root`, for a log field (`error = %Chain(&e)`):
/// error types keep their cause as a `source` and leave it out of their own message, so
/// `%e` alone would drop it.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod chain_tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("storing the cursor")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_written() {
        let e = Outer(std::io::Error::other("timed out"));
        assert_eq!(Chain(&e).to_string(), "storing the cursor: timed out");
    }
}
