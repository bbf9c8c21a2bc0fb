//! A whole pipeline in one process, for tests (feature `testing`): a real nats-server
//! ([`testkit::NatsServer`]), the staging relay replaying a capture, and [`crate::run`]
//! between them, exactly as `main.rs` calls it.
//!
//! ```no_run
//! # async fn f() -> anyhow::Result<()> {
//! use ingest::testing::Pipeline;
//! let capture = std::sync::Arc::new(staging::fixtures::corpus()?);
//! let pipeline = Pipeline::start(capture, Default::default()).await?;
//! pipeline.wait_stored(152, std::time::Duration::from_secs(30)).await?;
//! let nats_url = pipeline.nats.url(); // consumers read the stream `BSKY` here
//! pipeline.stop().await?;
//! # Ok(()) }
//! ```

use crate::config::Config;
use anyhow::Context as _;
use staging::capture::Capture;
use staging::replay::{RelayHandle, ReplayOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The stream the pipeline fills (the default `stream.name`).
pub const STREAM: &str = "BSKY";

/// nats-server, staging relay and ingestor, running.
pub struct Pipeline {
    /// The server; connect consumers to [`testkit::NatsServer::url`].
    pub nats: testkit::NatsServer,
    /// The relay the ingestor reads.
    pub relay: RelayHandle,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), crate::RunError>>,
}

/// The ingestor's configuration for a test: this relay and server, no metrics endpoint,
/// no progress lines, quick reconnects.
pub fn config(relay: &RelayHandle, nats_url: &str) -> Config {
    let mut c = Config::default();
    c.relay.url = format!("ws://{}", relay.addr());
    c.relay.reconnect_min = Duration::from_millis(50);
    c.relay.reconnect_max = Duration::from_millis(500);
    c.nats.url = nats_url.to_string();
    c.metrics.listen = String::new();
    c.log.progress_interval = Duration::ZERO;
    c
}

impl Pipeline {
    /// Starts a fresh nats-server, a relay replaying `capture` with `opts`, and the
    /// ingestor reading it from the first frame.
    pub async fn start(capture: Arc<Capture>, opts: ReplayOptions) -> anyhow::Result<Pipeline> {
        let nats = testkit::NatsServer::start().context("nats-server")?;
        Self::start_on(nats, capture, opts, |_| {}).await
    }

    /// The same on a given server, with the configuration adjusted by `tune`.
    pub async fn start_on(
        nats: testkit::NatsServer,
        capture: Arc<Capture>,
        opts: ReplayOptions,
        tune: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Pipeline> {
        let relay = staging::replay::spawn(capture, opts)
            .await
            .context("staging relay")?;
        let mut cfg = config(&relay, &nats.url());
        tune(&mut cfg);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(crate::run(cfg, shutdown.clone()));
        Ok(Pipeline {
            nats,
            relay,
            shutdown,
            task,
        })
    }

    /// Waits until the stream holds at least `n` messages; fails after `timeout`, or at once
    /// if the ingestor stopped.
    pub async fn wait_stored(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let js = async_nats::jetstream::new(async_nats::connect(self.nats.url()).await?);
        let start = Instant::now();
        loop {
            let held = match js.get_stream(STREAM).await {
                Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            };
            if held >= n {
                return Ok(());
            }
            anyhow::ensure!(!self.task.is_finished(), "the ingestor stopped early");
            anyhow::ensure!(
                start.elapsed() < timeout,
                "stream {STREAM} holds {held} messages after {timeout:?}, wanted {n}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the ingestor (as SIGTERM would) and returns what `run` returned. The server
    /// keeps running until the returned value is dropped.
    pub async fn stop_ingest(self) -> anyhow::Result<(testkit::NatsServer, RelayHandle)> {
        self.shutdown.cancel();
        self.task.await.context("ingest task")??;
        Ok((self.nats, self.relay))
    }

    /// Stops everything.
    pub async fn stop(self) -> anyhow::Result<()> {
        let (_nats, relay) = self.stop_ingest().await?;
        relay.shutdown().await.context("relay")?;
        Ok(())
    }
}
