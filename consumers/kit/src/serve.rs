//! [`run_serving`]: the consumer loop ([`crate::run()`]) beside the service's HTTP server
//! (its pages and `/metrics`), under one supervisor (`service::supervise`).
//!
//! ```text
//! shutdown ─▶ stage 0: the loop (commits its batch, however long that takes)
//!               │ ends (shutdown, or an error)
//!               ▼
//!             stage 1: the HTTP server (graceful: open requests end) ── fails? ─▶ stops the loop
//! ```
//!
//! The first failure, the loop's or the server's, is returned.

use crate::metrics::Metrics;
use crate::run::{run, Options, RunError};
use crate::status::Progress;
use crate::Handler;
use service::supervise::{Role, Supervisor, TaskError};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Why a kit service (charts, feedgen) stopped: while starting, or [`run_serving`]'s first
/// failure. Each one means: stop, and tell the operator (a restart resumes from the
/// committed position).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A setting cannot be used.
    #[error(transparent)]
    Config(#[from] service::config::ConfigError),
    /// The NATS settings cannot be used, or the server is unsuitable.
    #[error(transparent)]
    Connect(#[from] service::nats::ConnectError),
    /// `http.listen` cannot be bound (in use, not permitted).
    #[error("http.listen: cannot listen on {addr}")]
    Listen {
        /// `http.listen`.
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The handler cannot be made ready: its database, its tables, its settings.
    #[error("preparing the handler")]
    Prepare(#[source] crate::handler::BoxError),
    /// The loop or the HTTP server stopped.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Binds a service's `http.listen`; also returns the address it got (the port, for `:0`).
pub async fn listen(
    addr: &str,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), ServiceError> {
    let failed = |source| ServiceError::Listen {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}

/// How long the HTTP server's open requests may take once the loop has stopped.
const HTTP_GRACE: Duration = Duration::from_secs(5);

/// What [`run_serving`] runs: [`crate::run()`]'s arguments, and what to serve where.
pub struct Serving<H> {
    /// The JetStream context of the service's connection.
    pub js: async_nats::jetstream::Context,
    /// The consumer, the state and where to start.
    pub opts: Options,
    /// The service's handler.
    pub handler: H,
    /// The loop's metrics (registered in the registry `router` serves).
    pub metrics: Metrics,
    /// Receives the position after each batch and the lag after each status poll.
    pub progress: watch::Sender<Progress>,
    /// Where the HTTP server listens.
    pub listener: tokio::net::TcpListener,
    /// What it serves, e.g. the service's pages and its `/metrics`.
    pub router: axum::Router,
}

/// Runs the loop and the HTTP server until `shutdown` fires or either fails (see the
/// module docs); returns the first failure.
pub async fn run_serving<H: Handler>(
    serving: Serving<H>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let Serving {
        js,
        opts,
        handler,
        metrics,
        progress,
        listener,
        router,
    } = serving;
    let mut tasks = Supervisor::<RunError>::new(&shutdown, Duration::MAX);
    let http = tasks.stage(HTTP_GRACE);
    tasks.spawn(0, "consumer loop", Role::Root, move |stop| {
        run(js, opts, handler, metrics, progress, stop)
    });
    tasks.spawn(http, "HTTP server", Role::Keeper, move |stop| async move {
        service::telemetry::serve(listener, router, stop)
            .await
            .map_err(RunError::Http)
    });
    match tasks.run().await {
        Ok(()) => Ok(()),
        Err(TaskError::Failed { source, .. }) => Err(source),
        Err(TaskError::Panicked { task, source }) => {
            Err(RunError::Task(TaskError::Panicked { task, source }))
        }
        Err(TaskError::StoppedEarly { task }) => {
            Err(RunError::Task(TaskError::StoppedEarly { task }))
        }
    }
}
