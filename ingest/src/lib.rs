//! # ingest: the Bluesky firehose into NATS JetStream
//!
//! The data flow, one module each:
//!
//! ```text
//! relay.rs ──(bounded channel of decoded frames)──▶ publish.rs ──(acked positions)──▶ cursor.rs
//!   WebSocket, firehose::decode        sequence-checked publishes, bounded window   KV bucket
//! ```
//!
//! [`run`] wires them: connect to NATS (refusing servers older than 2.10 or with a small
//! `max_payload`), create or adjust the stream ([`stream`]), take the single-writer lease
//! ([`lease`]), work out where to start from what the stream holds ([`resume`], with the
//! stored [`cursor`]), then read the relay from there until `shutdown`. `main.rs` only
//! parses the configuration ([`config`]) and calls [`run`]; the consumers' tests call the
//! same function in-process ([`testing`], feature `testing`), the ingestor's own tests run
//! the binary. Beside them, [`usage`] keeps the stream's size in the metrics.
//!
//! Every task runs under one supervisor (`service::supervise`): one that fails, panics or
//! ends too early stops the others and makes [`run`] return the error with the task's
//! name, so the process exits non-zero and a process supervisor sees it. Shutdown stops
//! them in stages: reader and publisher (which drains), then the cursor saver, then the
//! lease.

pub mod config;
pub mod cursor;
pub mod lease;
pub mod metrics;
pub mod publish;
pub mod relay;
pub mod resume;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;
pub mod usage;

use config::Config;
use service::supervise::{Role, Supervisor};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Decoded frames waiting for the publisher; small, since the publish window is the buffer.
const CHANNEL_FRAMES: usize = 64;
/// How long shutdown waits for in-flight acks before storing the cursor.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(2500);
/// How long shutdown waits for the final cursor save, and for the lease release.
const SAVE_TIMEOUT: Duration = Duration::from_secs(1);
/// What the first stop stage is given on top of the drain; also the last flush's timeout.
const STOP_MARGIN: Duration = Duration::from_millis(500);

/// Runs `step` unless `shutdown` fires first (then `None`).
async fn unless_stopped<T>(
    shutdown: &CancellationToken,
    step: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        r = step => Some(r),
    }
}

/// Runs the ingestor until `shutdown` fires; returns after the in-flight publishes are
/// acked (or a short drain passes), the cursor is stored and the lease released. Returns
/// an error when something stops it for good (see the module docs).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    info!(config = %config.summary(), "starting");
    let Some(client) = service::nats::connect_until(&config.nats, &shutdown).await? else {
        return Ok(());
    };
    let max_payload = client.server_info().max_payload;
    info!(server = %client.server_info().version, max_payload, "connected to NATS");
    service::nats::check_max_payload(&client, contract::limits::MAX_MESSAGE_BYTES)?;
    let js = publish::context(client.clone(), &config.publish);
    let path = publish::choose_path(&client.server_info().version, &config.publish);

    let Some(prepared) = unless_stopped(&shutdown, prepare(&config, &js, path, &shutdown)).await
    else {
        return Ok(());
    };
    let Prepared {
        start,
        store,
        lease,
        metrics,
    } = match prepared? {
        Some(p) => p,
        None => return Ok(()),
    };
    info!(
        relay_cursor = ?start.relay_cursor,
        stored_until = ?start.stored_until,
        stream_last = start.last_sequence,
        "resuming"
    );

    let metrics_listener = match config.metrics.listen.as_str() {
        "" => None,
        listen => {
            let failed = |source| RunError::Listen {
                addr: listen.to_string(),
                source,
            };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(failed)?;
            info!(addr = %listener.local_addr().map_err(failed)?, "metrics on /metrics");
            Some(listener)
        }
    };

    // Stages: the reader, the publisher (which drains after it), the progress log and the
    // metrics server stop on `shutdown`; the cursor is stored after the publisher has
    // ended; the lease is released last.
    let mut tasks = Supervisor::<TaskFailure>::new(&shutdown, DRAIN_TIMEOUT + STOP_MARGIN);
    let saving = tasks.stage(SAVE_TIMEOUT + Duration::from_millis(200));
    let leasing = tasks.stage(SAVE_TIMEOUT);
    let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
    let (cursor_tx, cursor_rx) = watch::channel(start.position);
    let relay = config.relay.clone();
    let m = metrics.clone();
    tasks.spawn(0, "relay reader", Role::Root, move |stop| {
        relay::run(relay, start.relay_cursor, start.stored_until, tx, m, stop)
    });
    let publisher = publish::Publisher {
        client: client.clone(),
        js: js.clone(),
        stream: config.stream.name.clone(),
        path,
        window: config.publish.window,
        window_bytes: config.publish.window_bytes,
        ack_timeout: config.publish.ack_timeout,
        metrics: metrics.clone(),
        start: start.position,
        last_sequence: start.last_sequence,
        max_payload,
    };
    tasks.spawn(0, "publisher", Role::Keeper, move |stop| {
        publisher.run(rx, cursor_tx, DRAIN_TIMEOUT, stop)
    });
    let every = config.log.progress_interval;
    let m = metrics.clone();
    tasks.spawn(0, "progress log", Role::Helper, move |stop| async move {
        progress(m, every, stop).await;
        Ok::<_, TaskFailure>(())
    });
    let (usage_js, usage_stream, m) = (js.clone(), config.stream.name.clone(), metrics.clone());
    tasks.spawn(0, "stream usage", Role::Helper, move |stop| async move {
        usage::watch(usage_js, usage_stream, m, usage::REFRESH, stop).await;
        Ok::<_, TaskFailure>(())
    });
    if let Some(listener) = metrics_listener {
        let registry = metrics.registry();
        tasks.spawn(0, "metrics server", Role::Keeper, move |stop| {
            service::telemetry::serve_metrics(listener, registry, stop)
        });
    }
    let interval = config.cursor.save_interval;
    tasks.spawn(
        saving,
        "cursor saver",
        Role::Keeper,
        move |stop| async move {
            store.keep(cursor_rx, interval, stop).await;
            Ok::<_, TaskFailure>(())
        },
    );
    let losses = metrics.lease_losses.clone();
    tasks.spawn(leasing, "lease", Role::Keeper, move |stop| {
        lease.keep(stop, losses)
    });

    let result = tasks.run().await;
    let _ = tokio::time::timeout(STOP_MARGIN, client.flush()).await;
    result?;
    info!("stopped");
    Ok(())
}

/// Why [`run`] stopped. Each one means: stop, and tell the operator; a restart resumes
/// from the stream without a gap or a duplicate.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The NATS settings cannot be used, or the server is unsuitable.
    #[error(transparent)]
    Connect(#[from] service::nats::ConnectError),
    /// `metrics.listen` cannot be bound.
    #[error("metrics.listen: cannot listen on {addr}")]
    Listen {
        /// `metrics.listen`.
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// The stream cannot be created or adjusted.
    #[error(transparent)]
    Stream(#[from] stream::StreamError),
    /// The cursor bucket cannot be used.
    #[error(transparent)]
    Cursor(#[from] cursor::CursorError),
    /// The lease cannot be taken.
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// Where to start cannot be worked out.
    #[error(transparent)]
    Resume(#[from] resume::ResumeError),
    /// A task failed, panicked or ended early.
    #[error(transparent)]
    Task(#[from] service::supervise::TaskError<TaskFailure>),
}

/// What stopped one of [`run`]'s tasks.
#[derive(Debug, thiserror::Error)]
pub enum TaskFailure {
    #[error(transparent)]
    Relay(#[from] relay::RelayError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    /// The metrics server.
    #[error(transparent)]
    Metrics(#[from] std::io::Error),
}

/// What start-up sets up before the tasks run.
struct Prepared {
    start: resume::Start,
    store: cursor::CursorStore,
    lease: lease::Lease,
    metrics: metrics::Metrics,
}

/// Stream, lease, cursor and the start plan; `None` when shutdown came first.
async fn prepare(
    config: &Config,
    js: &async_nats::jetstream::Context,
    path: publish::Path,
    shutdown: &CancellationToken,
) -> Result<Option<Prepared>, RunError> {
    let ensured = stream::ensure(js, &config.stream, path.batched()).await?;
    let bucket =
        cursor::open_bucket(js, &config.cursor.bucket, ensured.info.config.num_replicas).await?;
    let lease =
        match lease::Lease::acquire(bucket, config.lease_key(), config.lease.ttl, shutdown).await {
            Ok(l) => l,
            Err(lease::LeaseError::Cancelled) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
    let relay = relay::normalize_url(&config.relay.url);
    let store = cursor::CursorStore::open(
        js,
        &config.cursor.bucket,
        &config.cursor_key(),
        &relay,
        ensured.info.config.num_replicas,
        resume::created_us(&ensured.info),
    )
    .await?;
    let stored = store.load().await?;
    let start = resume::plan(
        &ensured.stream,
        &ensured.info,
        stored.as_ref(),
        &relay,
        config.relay.start_cursor,
    )
    .await?;
    let metrics = metrics::Metrics::default();
    metrics.lease_acquired();
    metrics.stream_gap.inc_by(start.gap);
    if stored.is_none() || start.gap > 0 {
        // The first record (or one for the recreated stream), before anything is published.
        store.save(start.position).await?;
    }
    Ok(Some(Prepared {
        start,
        store,
        lease,
        metrics,
    }))
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
            lag_s = (metrics::lag_seconds(m.last_event_us.get()) * 10.0).round() / 10.0,
            inflight = m.inflight.get(),
            "progress"
        );
        last = now;
    }
}
