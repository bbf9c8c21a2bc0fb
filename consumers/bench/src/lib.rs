//! # consumer-bench: consumers against a plain pull consumer, in one run
//!
//! The parts every consumer benchmark needs, so each service adds only its subcommand:
//!
//! - [`filled`] / [`fill`]: a fresh stream `BSKY` (the ingestor's settings) holding a synthesized
//!   capture (`bench::ceiling::synth`), published directly with the ingestor's own headers
//!   by the end-to-end benchmark's publisher (much faster than replaying through the
//!   ingestor, and the same messages);
//! - [`plain_consumer`]: the baseline, a durable pull consumer with explicit acks that
//!   only receives and acks, on a given filter ([`pull_consumer`]: on several);
//! - [`run_consumer`]: a consumer binary as a child process, timed until its durable has
//!   nothing pending, with its peak RSS (`VmHWM`) and CPU seconds;
//! - [`probe`]: paced HTTP requests to a consumer while it works, with their latency.

pub mod probe;

use anyhow::{anyhow, bail, Context as _};
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use staging::capture::Capture;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::process::{cpu_secs, status_kib};
use testkit::ChildGuard;

/// The stream, as the ingestor names it.
pub const STREAM: &str = "BSKY";
/// A run with no progress for this long has failed.
pub const STALL: Duration = Duration::from_secs(60);

pub use bench::ceiling::synth;

/// Creates the stream on `url` and publishes every message the decoder makes of
/// `capture`; returns the number stored.
pub async fn fill(url: &str, capture: &Capture, window: usize) -> anyhow::Result<u64> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let cfg = ingest::stream::stream_config(&ingest::config::Config::default().stream);
    let mut stream = js
        .create_stream(cfg)
        .await
        .map_err(|e| anyhow!("stream: {e}"))?;
    let (msgs, _skipped) = bench::ceiling::messages(capture);
    bench::ceiling::publish_all(&js, &msgs, window, true).await?;
    Ok(stream
        .info()
        .await
        .map_err(|e| anyhow!("stream info: {e}"))?
        .state
        .messages)
}

/// A fresh nats-server whose stream holds a synthesized capture of `ops` record ops
/// (seed `seed`); prints what it did. Returns the server and the messages stored.
pub async fn filled(ops: u64, seed: u64) -> anyhow::Result<(testkit::NatsServer, u64)> {
    let t = Instant::now();
    let capture = synth(ops, seed)?;
    println!(
        "capture: {ops} ops, {} frames, synthesized in {:.1} s",
        capture.len(),
        t.elapsed().as_secs_f64()
    );
    let nats = testkit::NatsServer::start().context("nats-server")?;
    let t = Instant::now();
    let stored = fill(&nats.url(), &capture, 2048).await?;
    println!(
        "stream: {stored} messages stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok((nats, stored))
}

/// Where children's logs go: `target/bench-logs`, created.
pub fn logs_dir() -> anyhow::Result<std::path::PathBuf> {
    let logs = testkit::workspace_root().join("target/bench-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    Ok(logs)
}

/// A measured rate.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Messages.
    pub msgs: u64,
    /// Seconds.
    pub secs: f64,
}

impl Rate {
    /// Messages per second.
    pub fn per_s(&self) -> f64 {
        self.msgs as f64 / self.secs.max(1e-9)
    }
}

/// The baseline: a durable pull consumer on `filter` with explicit acks, receiving and
/// acking everything that matches; timed until the server has every ack.
pub async fn plain_consumer(
    url: &str,
    filter: &str,
    batch: usize,
    max_ack_pending: i64,
) -> anyhow::Result<Rate> {
    pull_consumer(url, "plain", &[filter], batch, max_ack_pending).await
}

/// [`plain_consumer`] as durable `durable` on several filter subjects (a multi-filter
/// consumer, which the server serves by another path than a single filter).
pub async fn pull_consumer(
    url: &str,
    durable: &str,
    filters: &[&str],
    batch: usize,
    max_ack_pending: i64,
) -> anyhow::Result<Rate> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| anyhow!("stream: {e}"))?;
    let (filter_subject, filter_subjects) = match filters {
        [one] => (one.to_string(), Vec::new()),
        many => (String::new(), many.iter().map(|s| s.to_string()).collect()),
    };
    let mut c: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.into()),
            filter_subject,
            filter_subjects,
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("consumer: {e}"))?;
    let n = c.cached_info().num_pending;
    let start = Instant::now();
    let mut msgs = c.stream().max_messages_per_batch(batch).messages().await?;
    for got in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(30), msgs.next())
            .await
            .map_err(|_| anyhow!("no message for 30 s after {got} of {n}"))?
            .context("the message stream ended")?
            .map_err(|e| anyhow!("pull: {e}"))?;
        m.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
    }
    loop {
        let info = c.info().await.map_err(|e| anyhow!("consumer info: {e}"))?;
        if info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Rate {
        msgs: n,
        secs: start.elapsed().as_secs_f64(),
    })
}

/// What a consumer binary did.
#[derive(Debug, Clone, Copy)]
pub struct ChildRun {
    /// Messages its durable applied, and the time from spawn to nothing pending.
    pub rate: Rate,
    /// Peak resident memory (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// CPU seconds of the child, and of the nats-server.
    pub cpu: (f64, f64),
}

/// Runs `cmd` (a consumer binary reading durable `durable`, which it creates) until that
/// durable has delivered everything and holds no unacknowledged message (the stream is
/// complete beforehand), counting `expected` messages; logs to `log`.
pub async fn run_consumer(
    url: &str,
    cmd: Command,
    durable: &str,
    expected: u64,
    nats_pid: Option<u32>,
    log: &Path,
) -> anyhow::Result<ChildRun> {
    run_consumer_then(url, cmd, durable, expected, nats_pid, log, || {}).await
}

/// [`run_consumer`], calling `caught_up` once the durable holds nothing more, before the
/// child is stopped (e.g. to stop requests to it first).
pub async fn run_consumer_then(
    url: &str,
    mut cmd: Command,
    durable: &str,
    expected: u64,
    nats_pid: Option<u32>,
    log: &Path,
    caught_up: impl FnOnce(),
) -> anyhow::Result<ChildRun> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| anyhow!("stream: {e}"))?;
    let nats_cpu0 = nats_pid.and_then(cpu).unwrap_or(0.0);
    let start = Instant::now();
    let mut child = ChildGuard(
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("spawning")?,
    );
    let pid = child.id();
    let mut last = (Instant::now(), 0u64);
    let secs = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            bail!("the consumer exited ({status}); see {}", log.display());
        }
        if let Ok(info) = stream.consumer_info(durable).await {
            let acked = info.ack_floor.stream_sequence;
            let started = info.delivered.consumer_sequence > 0;
            if started && info.num_pending == 0 && info.num_ack_pending == 0 {
                break start.elapsed().as_secs_f64();
            }
            if acked > last.1 {
                last = (Instant::now(), acked);
            }
        }
        if last.0.elapsed() > STALL {
            bail!(
                "no progress for {STALL:?} at {}; see {}",
                last.1,
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    caught_up();
    let hwm_kib = status_kib(pid, "VmHWM").context("VmHWM")?;
    let cpu = (
        self::cpu(pid).unwrap_or(0.0),
        nats_pid.and_then(self::cpu).unwrap_or(0.0) - nats_cpu0,
    );
    child.terminate(Duration::from_secs(10));
    Ok(ChildRun {
        rate: Rate {
            msgs: expected,
            secs,
        },
        hwm_kib,
        cpu,
    })
}

/// CPU seconds of process `pid`.
pub fn cpu(pid: u32) -> Option<f64> {
    cpu_secs(&pid.to_string())
}

/// A binary next to this executable (`cargo build --release` builds them together).
pub fn sibling(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let p = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join(name);
    if !p.is_file() {
        bail!(
            "{} not found: run `cargo build --release -p {name}` first",
            p.display()
        );
    }
    Ok(p)
}
