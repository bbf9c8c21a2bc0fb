//! # gateway: Jetstream's WebSocket API, served from the stream
//!
//! Where it sits: `relay → ingest → JetStream stream BSKY → **gateway** → any Jetstream
//! client` (`GET /subscribe?wantedCollections=…&wantedDids=…&cursor=…`). The stream's
//! payloads already are Jetstream v1 events (`subjects.md`); each is sent with `time_us`
//! set to the message's storage time and Jetstream v2's `cursor` (its stream sequence)
//! added, so a client resuming from either loses nothing. Instances are stateless: run as
//! many as needed, all reading NATS.
//!
//! ```text
//! GET /subscribe ─▶ params.rs ─(400 + reason)─▶ client
//!        │ upgrade (permessage-deflate offered, unless zstd was asked for)
//!        ▼
//! pump.rs: cursor → deliver policy, pull consumer ─(bounded buffer)─▶ session.rs ─▶ socket
//!          filter_subjects = collections; DIDs filtered here   (zstd.rs)   options_update ◀─┘
//!          event.rs: time_us and cursor patched in
//! ```
//!
//! - [`config`]: the one typed configuration (`BSKY_GATEWAY_` environment prefix).
//! - [`params`]: query parameters and `options_update`, validated; NATS subject filters.
//! - [`pump`]: start position (the archive first for a cursor older than the stream), the
//!   per-client consumer with idle heartbeats, DID filter.
//! - [`event`]: the payload as sent (storage `time_us`, `cursor`).
//! - [`session`]: the WebSocket side, bounded writes, close reasons.
//! - [`zstd`]: Jetstream v1's zstd with its dictionary.
//! - [`listen`]: accepted sockets get `TCP_NODELAY`; a too-long URI gets a 414 with a reason.
//! - [`metrics`]: `bsky_gateway_*` on `GET /metrics`; `GET /healthz` beside it.
//! - [`mirror`]: with `stream.mirror` set, the gateway's own copy of the stream in its own
//!   NATS account, created at start (`deploy/README.md`, "Users, permissions, secrets").
//!
//! `main.rs` parses the configuration and calls [`run`]; tests call [`serve`] on their own
//! listener.

pub mod config;
pub mod event;
pub mod listen;
pub mod metrics;
pub mod mirror;
pub mod params;
pub mod pump;
pub mod session;
pub mod zstd;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use config::Config;
use session::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// How long shutdown waits for the clients' close frames and tasks.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

struct App {
    shared: Arc<Shared>,
    nats: async_nats::Client,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    max_client_message_bytes: usize,
    deflate: bool,
}

/// Why the gateway stopped. Each one means: stop, and tell the operator.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `http.listen` cannot be bound (in use, not permitted).
    #[error("cannot listen on {addr}")]
    Listen {
        /// `http.listen`.
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The NATS settings cannot be used, or the server is unsuitable.
    #[error(transparent)]
    Connect(#[from] service::nats::ConnectError),
    /// The gateway's own mirror cannot be made or has another origin.
    #[error(transparent)]
    Mirror(#[from] mirror::MirrorError),
    /// The stream is missing: ingest has not created it yet, or the account cannot see it.
    #[error("stream {stream} not found on {url} (start ingest first)")]
    NoStream {
        /// `stream.name`.
        stream: String,
        /// The server, credentials removed.
        url: String,
        #[source]
        source: async_nats::jetstream::context::GetStreamError,
    },
    /// The HTTP server failed.
    #[error("HTTP server")]
    Serve(#[source] std::io::Error),
    /// `[archive]` cannot be opened.
    #[error(transparent)]
    Archive(#[from] service::config::ConfigError),
}

/// Binds `http.listen` and serves until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.http.listen.clone(),
            source,
        })?;
    serve(listener, config, shutdown).await
}

/// Serves `GET /subscribe`, `/healthz` and `/metrics` on `listener` until `shutdown`
/// fires, then closes every client (1001, "gateway stopping").
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    info!(config = %config.summary(), "starting");
    let history = archive::history::ArchiveHistory::from_table(&config.archive)?;
    let Some(nats) = service::nats::connect_until(&config.nats, &shutdown).await? else {
        return Ok(());
    };
    let js = async_nats::jetstream::new(nats.clone());
    if let Some(m) = &config.stream.mirror {
        mirror::ensure(&js, &config.stream.name, m).await?;
    }
    let stream = js
        .get_stream(&config.stream.name)
        .await
        .map_err(|source| RunError::NoStream {
            stream: config.stream.name.clone(),
            url: config.nats.redacted_url(),
            source,
        })?;
    let metrics = metrics::Metrics::default();
    let registry = metrics.registry();
    let metrics_rejected = metrics.rejected.clone();
    let tracker = TaskTracker::new();
    let app = Arc::new(App {
        shared: Arc::new(Shared {
            nats: nats.clone(),
            js,
            stream,
            client: config.client.clone(),
            history,
            archive_slots: Arc::new(Semaphore::new(config.client.archive_readers)),
            metrics,
            shutdown: shutdown.clone(),
        }),
        nats,
        slots: Arc::new(Semaphore::new(config.http.max_clients)),
        tracker: tracker.clone(),
        max_client_message_bytes: config.client.max_client_message_bytes,
        deflate: config.http.deflate,
    });
    let router = axum::Router::new()
        .route("/subscribe", axum::routing::get(subscribe))
        .route("/healthz", axum::routing::get(healthz))
        .with_state(app)
        .merge(service::telemetry::metrics_router(registry));
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    info!(%addr, "serving /subscribe, /healthz, /metrics");
    let listener = listen::Listener::new(listener, metrics_rejected);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(RunError::Serve)?;
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = tracker.len(),
            "clients still closing after the drain timeout"
        );
    }
    info!("stopped");
    Ok(())
}

fn reject(app: &App, status: StatusCode, why: String) -> Response {
    app.shared.metrics.rejected.inc();
    tracing::debug!(%status, %why, "request rejected");
    (status, why).into_response()
}

/// `GET /subscribe`: validate everything, then upgrade.
async fn subscribe(State(app): State<Arc<App>>, request: axum::extract::Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let encoding = parts
        .headers
        .get("Socket-Encoding")
        .and_then(|v| v.to_str().ok());
    let wanted = match params::parse_query(parts.uri.query().unwrap_or(""), encoding) {
        Ok(w) => w,
        Err(e) => return reject(&app, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let upgrade = match yawc::IncomingUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(status) => {
            let why = "GET /subscribe is a WebSocket endpoint: send a WebSocket upgrade request";
            return reject(&app, status, why.into());
        }
    };
    let Ok(slot) = app.slots.clone().try_acquire_owned() else {
        let why = "too many clients on this gateway instance; try another or retry later";
        return reject(&app, StatusCode::SERVICE_UNAVAILABLE, why.into());
    };
    let mut options = yawc::Options::default().with_max_payload_read(app.max_client_message_bytes);
    // Jetstream v1 never combines its zstd with permessage-deflate.
    options = if app.deflate && !wanted.zstd {
        options.with_low_latency_compression()
    } else {
        options.without_compression()
    };
    let (response, upgraded) = match upgrade.upgrade(options) {
        Ok(r) => r,
        Err(e) => return reject(&app, StatusCode::BAD_REQUEST, e.to_string()),
    };
    let shared = app.shared.clone();
    app.tracker.spawn(async move {
        match upgraded.await {
            Ok(ws) => session::run(ws, wanted, shared).await,
            Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
        }
        drop(slot);
    });
    response.map(axum::body::Body::new)
}

/// `GET /healthz`: 200 when NATS is connected and the stream answers.
async fn healthz(State(app): State<Arc<App>>) -> (StatusCode, String) {
    use async_nats::connection::State as Conn;
    if app.nats.connection_state() != Conn::Connected {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "NATS disconnected\n".into(),
        );
    }
    match tokio::time::timeout(Duration::from_secs(2), app.shared.stream.get_info()).await {
        Ok(Ok(info)) => (
            StatusCode::OK,
            format!(
                "ok: stream {} holds {} messages\n",
                info.config.name, info.state.messages
            ),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stream unreadable: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "stream info timed out\n".into(),
        ),
    }
}
