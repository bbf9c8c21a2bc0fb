//! The measured pipeline: the staging relay replays the capture at full speed in this
//! process, the real release `ingest` binary (a child) catches up from the first frame into
//! a fresh nats-server; then a durable pull consumer with explicit acks drains the stream.

use crate::Args;
use anyhow::{anyhow, bail, Context as _};
use async_nats::jetstream::{self, consumer};
use bench::ceiling::{dir_size, holding};
use bench::cost::Cpu;
use futures_util::StreamExt;
use staging::capture::Capture;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::process::status_kib;
use testkit::ChildGuard;

/// How often the ingest phase polls the stream and samples the child's RSS.
const POLL: Duration = Duration::from_millis(100);
/// A phase with no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);

pub struct Ingested {
    pub rate: f64,
    pub stored_secs: f64,
    pub hwm_kib: u64,
    pub max_rss_kib: u64,
    pub samples: u64,
    pub disk_bytes: u64,
    pub cpu: Cpu,
}

pub struct Consumed {
    pub rate: f64,
    pub secs: f64,
    pub cpu: Cpu,
}

/// Relay → real `ingest` binary → fresh nats-server, then a pull consumer on its stream.
pub async fn ingest_and_consume(
    bin: &Path,
    capture: Arc<Capture>,
    n: u64,
    args: &Args,
    env: &[(String, String)],
) -> anyhow::Result<(Ingested, Consumed)> {
    let nats = testkit::NatsServer::start().context("starting nats-server")?;
    let nats_pid = nats.pid();
    let stream_name = ingest::config::Config::default().stream.name;
    let relay = staging::replay::spawn(capture, staging::replay::ReplayOptions::default())
        .await
        .context("starting the staging relay")?;
    let metrics_port = testkit::free_port()?;
    let log_dir = testkit::workspace_root().join("target/bench-logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let log = log_dir.join("ingest.log");
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let cpu0 = Cpu::now(None, nats_pid);
    let mut child = ChildGuard(
        Command::new(bin)
            .args(["--relay", &format!("ws://{}", relay.addr())])
            .args(["--nats", &nats.url()])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .env("BSKY_INGEST_LOG__PROGRESS_INTERVAL", "0s")
            .env("BSKY_INGEST_PUBLISH__WINDOW", args.window.to_string())
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    let pid = child.id();
    println!(
        "ingest: pid {pid}, relay ws://{}, log {}",
        relay.addr(),
        log.display()
    );

    let client = async_nats::connect(nats.url()).await?;
    let js = jetstream::new(client.clone());
    let mut max_rss_kib = 0u64;
    let mut samples = 0u64;
    let mut last = (Instant::now(), 0u64);
    loop {
        if let Some(kib) = status_kib(pid, "VmRSS") {
            max_rss_kib = max_rss_kib.max(kib);
            samples += 1;
        }
        if !child.alive() {
            bail!("ingest exited early; see {}", log.display());
        }
        let count = stream_count(&js, &stream_name).await;
        if count >= n {
            break;
        }
        if count > last.1 {
            last = (Instant::now(), count);
        } else if last.0.elapsed() > STALL {
            bail!(
                "stream {stream_name} stuck at {count} of {n} messages for {STALL:?}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    // Reached n: nothing more may come (every op exactly once).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| anyhow!("stream {stream_name}: {e}"))?;
    let state = holding(&mut stream, n).await?;
    let cpu = Cpu::now(Some(pid), nats_pid).since(&cpu0);
    let hwm_kib = status_kib(pid, "VmHWM").context("reading VmHWM of ingest")?;
    let stored_secs = (state.last_timestamp - state.first_timestamp).as_seconds_f64();
    child.terminate(Duration::from_secs(10));
    let _ = relay.shutdown().await;
    let ingested = Ingested {
        rate: n as f64 / stored_secs,
        stored_secs,
        hwm_kib,
        max_rss_kib,
        samples,
        disk_bytes: dir_size(&nats.store_dir()),
        cpu,
    };
    println!(
        "ingest: {n} msgs stored in {stored_secs:.2} s: {:.0} ops/s, VmHWM {:.1} MiB",
        ingested.rate,
        hwm_kib as f64 / 1024.0
    );
    let consumed = pull_consumer(&client, &mut stream, n, args, nats_pid).await?;
    drop(nats);
    Ok((ingested, consumed))
}

/// A durable pull consumer with explicit acks drains the stream; done when the server's
/// ack floor reaches the last message.
async fn pull_consumer(
    client: &async_nats::Client,
    stream: &mut jetstream::stream::Stream,
    n: u64,
    args: &Args,
    nats_pid: Option<u32>,
) -> anyhow::Result<Consumed> {
    let mut consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: args.max_ack_pending,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("creating the pull consumer: {e}"))?;
    let cpu0 = Cpu::now(None, nats_pid);
    let start = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(args.batch)
        .messages()
        .await
        .map_err(|e| anyhow!("pull consumer: {e}"))?;
    let mut got = 0u64;
    let mut bytes = 0u64;
    while got < n {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .map_err(|_| anyhow!("no message for 30 s after {got} of {n}"))?
            .context("the consumer's message stream ended")?
            .map_err(|e| anyhow!("pull: {e}"))?;
        bytes += m.payload.len() as u64;
        m.ack().await.map_err(|e| anyhow!("ack: {e}"))?;
        got += 1;
    }
    client.flush().await?;
    loop {
        let info = consumer
            .info()
            .await
            .map_err(|e| anyhow!("consumer info: {e}"))?;
        if info.ack_floor.consumer_sequence >= n {
            break;
        }
        if start.elapsed() > STALL * 5 {
            bail!(
                "consumer ack floor stuck at {}",
                info.ack_floor.consumer_sequence
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = Cpu::now(None, nats_pid).since(&cpu0);
    let consumed = Consumed {
        rate: n as f64 / secs,
        secs,
        cpu,
    };
    println!(
        "consumer: {n} msgs ({:.1} MB) received and acked in {secs:.2} s: {:.0} msgs/s",
        bytes as f64 / 1e6,
        consumed.rate
    );
    Ok(consumed)
}

/// Messages in the stream right now (0 if it does not exist yet).
async fn stream_count(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}
