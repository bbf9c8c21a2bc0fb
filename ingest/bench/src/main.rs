//! # bench: the end-to-end benchmark, one run, one machine
//!
//! What it measures, against a baseline taken in the same run:
//!
//! 1. **decoder**: `firehose::decode` over a synthesized capture of `--ops` ops (staging
//!    synth, fixed seed), single-threaded, in this process: ops/s.
//! 2. **ceiling**: a plain async-nats JetStream publisher sends exactly the messages the
//!    decoder made (same subjects, payloads, `Nats-Msg-Id` and `Bsky-Seq` headers) into a
//!    stream configured like the ingestor's, with the same in-flight window and the acks
//!    awaited concurrently (`FuturesOrdered`), on a fresh nats-server: msgs/s. This is the
//!    best the publish end can do on this machine.
//! 3. **ingest**: the staging relay replays the capture at full speed in this process, and
//!    the real release `ingest` binary (a child process) catches up from the first frame
//!    into a fresh nats-server: ops/s from the first stored message to the last, the
//!    child's peak RSS (`VmHWM`, read just before SIGTERM) and periodic `VmRSS` samples.
//! 4. **pull consumer**: a durable pull consumer with explicit acks drains the ingestor's
//!    stream, acking every message: msgs/s.
//!
//! Stored rates use the server's own timestamps of the first and last stored message
//! (`first_ts`/`last_ts` in the stream state), the same clock for both publishers.
//! CPU seconds of each process (from `/proc/<pid>/stat`) are printed per phase: on a small
//! machine they say whether a phase is CPU-bound and who holds the CPU.
//!
//! Prints a table and, as its last line, `ratio=… ingest_ops_s=… ceiling_ops_s=…
//! ingest_peak_rss_mib=… consumer_msgs_s=… decoder_ops_s=…`.
//!
//! ```sh
//! cargo build --release -p ingest -p bench   # the ingest binary must sit next to bench
//! cargo run --release -p bench -- --ops 1000000 --window 2048
//! ```

use anyhow::{anyhow, bail, Context as _};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use clap::Parser;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use staging::capture::Capture;
use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::ChildGuard;

/// Stream of the ceiling phase (its own nats-server: subjects may be `bsky.>` too).
const CEILING_STREAM: &str = "CEILING";
/// How often the ingest phase polls the stream and samples the child's RSS.
const POLL: Duration = Duration::from_millis(100);
/// A phase with no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);
/// Linux `USER_HZ`: the unit of utime/stime in `/proc/<pid>/stat`.
const CLOCK_TICKS: f64 = 100.0;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "End-to-end benchmark: ingest vs a plain JetStream publisher, decoder, pull consumer"
)]
struct Args {
    /// Record ops in the synthesized capture (commit ops; a few identity/account/sync
    /// events come on top).
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// In-flight publish window, for the ceiling publisher and the ingestor alike.
    #[arg(long, default_value_t = ingest::config::Config::default().publish.window)]
    window: usize,
    /// Seed of the synthesized capture.
    #[arg(long, default_value_t = 20261126)]
    seed: u64,
    /// The `ingest` binary; default: `ingest` next to this executable
    /// (`cargo build --release -p ingest` first).
    #[arg(long)]
    ingest_bin: Option<PathBuf>,
    /// Pull consumer: messages per pull request.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Pull consumer: max_ack_pending.
    #[arg(long, default_value_t = 20_000)]
    max_ack_pending: i64,
}

/// One message to publish, as the decoder made it.
struct Msg {
    subject: async_nats::Subject,
    msg_id: String,
    payload: Bytes,
    seq: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ingest_bin = match &args.ingest_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .context("this executable has no directory")?
            .join("ingest"),
    };
    if !ingest_bin.is_file() {
        bail!(
            "{} not found: run `cargo build --release -p ingest` first (or pass --ingest-bin)",
            ingest_bin.display()
        );
    }
    let cpu = cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores, {cpu}");
    println!(
        "ingest binary: {} (built {})",
        ingest_bin.display(),
        modified(&ingest_bin)
    );

    // --- capture ---------------------------------------------------------------------
    let t = Instant::now();
    let capture = synth(args.ops, args.seed)?;
    println!(
        "capture: seed {}, {} frames, {:.1} MB, synthesized in {:.1} s",
        args.seed,
        capture.len(),
        capture.total_bytes() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    // --- decoder -----------------------------------------------------------------------
    let t = Instant::now();
    let mut decoded_ops = 0u64;
    for f in capture.frames() {
        if let firehose::Decoded::Event(e) = firehose::decode(&f.bytes) {
            decoded_ops += e.messages.len() as u64;
        }
    }
    let decode_secs = t.elapsed().as_secs_f64();
    let decoder_ops_s = decoded_ops as f64 / decode_secs;
    let mut msgs = Vec::with_capacity(usize::try_from(decoded_ops).unwrap_or(0));
    let mut skipped = 0u64;
    for f in capture.frames() {
        match firehose::decode(&f.bytes) {
            firehose::Decoded::Event(d) => {
                skipped += d.skipped.len() as u64;
                let seq = d.seq.to_string();
                for m in d.messages {
                    msgs.push(Msg {
                        subject: m.subject.into(),
                        msg_id: m.msg_id,
                        payload: Bytes::from(m.payload),
                        seq: seq.clone(),
                    });
                }
            }
            firehose::Decoded::Skipped { .. } => skipped += 1,
            firehose::Decoded::Control(_) => {}
        }
    }
    // The stream keeps one message per Nats-Msg-Id: a repeated id is dropped by the
    // server (duplicate window), by both publishers alike.
    let mut ids = std::collections::HashMap::new();
    for m in &msgs {
        *ids.entry(m.msg_id.as_str()).or_insert(0u32) += 1;
    }
    let repeated: Vec<(&str, u32)> = ids.into_iter().filter(|(_, c)| *c > 1).collect();
    let n = msgs.len() as u64 - repeated.iter().map(|(_, c)| u64::from(c - 1)).sum::<u64>();
    if !repeated.is_empty() {
        println!(
            "decoder: {} Nats-Msg-Id values repeat ({} extra messages, dropped by the server), e.g. {:?}",
            repeated.len(),
            msgs.len() as u64 - n,
            &repeated[..repeated.len().min(3)]
        );
    }
    let payload_bytes: u64 = msgs.iter().map(|m| m.payload.len() as u64).sum();
    println!(
        "decoder: {n} messages ({:.1} MB of JSON, {skipped} skipped) in {decode_secs:.2} s on one thread: {decoder_ops_s:.0} ops/s",
        payload_bytes as f64 / 1e6
    );

    // --- ceiling -----------------------------------------------------------------------
    let ceiling = ceiling(&msgs, n, args.window)
        .await
        .context("ceiling phase")?;
    println!(
        "ceiling: {} msgs stored in {:.2} s: {:.0} msgs/s (client wall {:.0} msgs/s)",
        n, ceiling.stored_secs, ceiling.rate, ceiling.client_rate
    );
    drop(msgs);

    // --- ingest + consumer -----------------------------------------------------------------
    let (ing, cons) = ingest_phase(&ingest_bin, capture, n, &args)
        .await
        .context("ingest phase")?;

    // --- report ------------------------------------------------------------------------
    let ratio = ing.rate / ceiling.rate;
    println!();
    println!("| measure | value | cpu s (bench / ingest / nats-server) |");
    println!("|---|---|---|");
    println!("| decoder, 1 thread | {decoder_ops_s:.0} ops/s ({n} msgs in {decode_secs:.2} s) | |");
    println!(
        "| ceiling: plain publisher, window {} | {:.0} msgs/s ({:.2} s) | {} |",
        args.window,
        ceiling.rate,
        ceiling.stored_secs,
        ceiling.cpu.fmt()
    );
    println!(
        "| ingest: relay → ingest → JetStream | {:.0} ops/s ({:.2} s) | {} |",
        ing.rate,
        ing.stored_secs,
        ing.cpu.fmt()
    );
    println!("| ingest / ceiling | {ratio:.2} | |");
    println!(
        "| ingest peak RSS (VmHWM) | {:.1} MiB (max sampled VmRSS {:.1} MiB, {} samples) | |",
        ing.hwm_kib as f64 / 1024.0,
        ing.max_rss_kib as f64 / 1024.0,
        ing.samples
    );
    println!(
        "| pull consumer, explicit acks | {:.0} msgs/s ({:.2} s, batch {}, max_ack_pending {}) | {} |",
        cons.rate,
        cons.secs,
        args.batch,
        args.max_ack_pending,
        cons.cpu.fmt()
    );
    println!();
    println!(
        "ratio={ratio:.2} ingest_ops_s={:.0} ceiling_ops_s={:.0} ingest_peak_rss_mib={:.1} consumer_msgs_s={:.0} decoder_ops_s={decoder_ops_s:.0}",
        ing.rate,
        ceiling.rate,
        ing.hwm_kib as f64 / 1024.0,
        cons.rate
    );
    Ok(())
}

/// The synthesized capture: the default network-like mix, deterministic from `seed`.
fn synth(ops: u64, seed: u64) -> anyhow::Result<Arc<Capture>> {
    use staging::synth::{synthesize, Source, SynthConfig};
    let path = staging::fixtures::calabro();
    let source = Source::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let cfg = SynthConfig {
        seed,
        ops,
        start_seq: 1_000_000,
        ..SynthConfig::default()
    };
    let mut w = staging::capture::CaptureWriter::new(Vec::new(), None)?;
    synthesize(&source, cfg, &mut w).context("synthesizing the capture")?;
    let bytes = w.finish()?;
    Ok(Arc::new(
        Capture::from_bytes(bytes).context("reading the capture")?,
    ))
}

struct Ceiling {
    rate: f64,
    stored_secs: f64,
    client_rate: f64,
    cpu: Cpu,
}

/// A plain JetStream publisher: same messages, same window, acks awaited in order.
async fn ceiling(msgs: &[Msg], expected: u64, window: usize) -> anyhow::Result<Ceiling> {
    let nats = testkit::NatsServer::start().context("starting nats-server")?;
    let nats_pid = nats_pid(&nats);
    let defaults = ingest::config::Config::default();
    let client = async_nats::connect(nats.url()).await?;
    // The ingestor's own context (ingest::run), so only the publishing code differs.
    let publish = ingest::config::Publish {
        window,
        ..defaults.publish.clone()
    };
    let js = ingest::publish::context(client.clone(), &publish);
    let mut cfg = ingest::stream::stream_config(&defaults.stream);
    cfg.name = CEILING_STREAM.into();
    let mut stream = js
        .create_stream(cfg)
        .await
        .map_err(|e| anyhow!("creating stream {CEILING_STREAM}: {e}"))?;

    let cpu0 = Cpu::now(None, nats_pid);
    let start = Instant::now();
    let mut inflight: FuturesOrdered<<PublishAckFuture as IntoFuture>::IntoFuture> =
        FuturesOrdered::new();
    for (i, m) in msgs.iter().enumerate() {
        while inflight.len() >= window {
            if let Some(ack) = inflight.next().await {
                ack.map_err(|e| anyhow!("ack: {e}"))?;
            }
        }
        let mut message =
            async_nats::jetstream::message::PublishMessage::build().payload(m.payload.clone());
        for (name, values) in ingest::publish::headers(i as u64, &m.seq).iter() {
            for v in values {
                message = message.header(name.clone(), v.clone());
            }
        }
        let ack = js
            .send_publish(m.subject.clone(), message)
            .await
            .map_err(|e| anyhow!("publish {}: {e}", m.msg_id))?;
        inflight.push_back(ack.into_future());
    }
    while let Some(ack) = inflight.next().await {
        ack.map_err(|e| anyhow!("ack: {e}"))?;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = Cpu::now(None, nats_pid).since(&cpu0);

    let state = holding(&mut stream, expected).await?;
    let stored_secs = (state.last_timestamp - state.first_timestamp).as_seconds_f64();
    Ok(Ceiling {
        rate: expected as f64 / stored_secs,
        stored_secs,
        client_rate: expected as f64 / wall,
        cpu,
    })
}

struct Ingested {
    rate: f64,
    stored_secs: f64,
    hwm_kib: u64,
    max_rss_kib: u64,
    samples: u64,
    cpu: Cpu,
}

struct Consumed {
    rate: f64,
    secs: f64,
    cpu: Cpu,
}

/// Relay → real `ingest` binary → fresh nats-server, then a pull consumer on its stream.
async fn ingest_phase(
    bin: &Path,
    capture: Arc<Capture>,
    n: u64,
    args: &Args,
) -> anyhow::Result<(Ingested, Consumed)> {
    let nats = testkit::NatsServer::start().context("starting nats-server")?;
    let nats_pid = nats_pid(&nats);
    let stream_name = ingest::config::Config::default().stream.name;
    let relay = staging::replay::spawn(capture, staging::replay::ReplayOptions::default())
        .await
        .context("starting the staging relay")?;
    let metrics_port = free_port()?;
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
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    let pid = child.0.id();
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
        if let Some(kib) = proc_status_kib(pid, "VmRSS") {
            max_rss_kib = max_rss_kib.max(kib);
            samples += 1;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            bail!("ingest exited ({status}) early; see {}", log.display());
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
    let hwm_kib = proc_status_kib(pid, "VmHWM").context("reading VmHWM of ingest")?;
    let stored_secs = (state.last_timestamp - state.first_timestamp).as_seconds_f64();
    child.terminate(Duration::from_secs(10));
    let _ = relay.shutdown().await;
    let ingested = Ingested {
        rate: n as f64 / stored_secs,
        stored_secs,
        hwm_kib,
        max_rss_kib,
        samples,
        cpu,
    };
    println!(
        "ingest: {n} msgs stored in {stored_secs:.2} s: {:.0} ops/s, VmHWM {:.1} MiB",
        ingested.rate,
        hwm_kib as f64 / 1024.0
    );

    // --- pull consumer -------------------------------------------------------------------
    let consumer: consumer::PullConsumer = stream
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
    // Done when the server has every ack, not when the last message arrived.
    let mut consumer = consumer;
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
    drop(nats);
    Ok((ingested, consumed))
}

/// Messages in the stream right now (0 if it does not exist yet).
async fn stream_count(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(testkit::free_port()?)
}

/// A `kB` field of `/proc/<pid>/status`, e.g. `VmRSS`, `VmHWM`.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&text)
}

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

/// CPU seconds used so far by this process, the ingest child and the nats-server.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    bench: f64,
    ingest: Option<f64>,
    nats: Option<f64>,
}

impl Cpu {
    fn now(ingest: Option<u32>, nats: Option<u32>) -> Cpu {
        Cpu {
            bench: cpu_secs("self").unwrap_or(0.0),
            ingest: ingest.and_then(|p| cpu_secs(&p.to_string())),
            nats: nats.and_then(|p| cpu_secs(&p.to_string())),
        }
    }

    /// Usage between `before` and `self`; the ingest child starts at zero.
    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            bench: self.bench - before.bench,
            ingest: self.ingest.map(|i| i - before.ingest.unwrap_or(0.0)),
            nats: self.nats.map(|n| n - before.nats.unwrap_or(0.0)),
        }
    }

    fn fmt(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "{:.1} / {} / {}",
            self.bench,
            opt(self.ingest),
            opt(self.nats)
        )
    }
}

/// The nats-server process of `nats`, found by its store directory on its command line.
fn nats_pid(nats: &testkit::NatsServer) -> Option<u32> {
    let store = nats.store_dir();
    let store = store.to_string_lossy();
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.split('\0').any(|a| a == store).then_some(pid)
    })
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn modified(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or("?".into(), |age| format!("{} s ago", age.as_secs()))
}

/// The stream's state, which must hold exactly `n` messages (each op exactly once).
async fn holding(
    stream: &mut jetstream::stream::Stream,
    n: u64,
) -> anyhow::Result<jetstream::stream::State> {
    let info = stream
        .info()
        .await
        .map_err(|e| anyhow!("stream info: {e}"))?;
    if info.state.messages != n {
        bail!(
            "stream {} holds {} messages, expected {n}",
            info.config.name,
            info.state.messages
        );
    }
    Ok(info.state.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let s = "Name:\tingest\nVmHWM:\t   41234 kB\nVmRSS:\t   30000 kB\n";
        assert_eq!(parse_status_kib(s, "VmHWM"), Some(41234));
        assert_eq!(parse_status_kib(s, "VmRSS"), Some(30000));
        assert_eq!(parse_status_kib(s, "VmSwap"), None);
    }

    #[test]
    fn stat_cpu_skips_a_command_name_with_spaces() {
        let s = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_stat_cpu(s), Some(3.0));
    }
}
