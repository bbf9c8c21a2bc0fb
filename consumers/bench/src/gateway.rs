//! `consumer-bench gateway`: the real `gateway` binary serving 1, 10, 100 … concurrent
//! WebSocket clients that replay the stream from its start, against two baselines in the
//! same run: a plain pull consumer on the whole stream (`bsky.>`), and one on the filter
//! subjects the gateway gives its own consumer for such a client ([`GATEWAY_FILTERS`]:
//! the server serves several filters by a slower path than one).
//!
//! Where it sits: synthesized stream `BSKY` (fresh nats-server) → **gateway** (child
//! process, a fresh one per client count so its peak RSS belongs to that round) →
//! [`fleet`] (the clients, in this process). Figures: messages delivered per second summed
//! over the clients (first connect to last client done), the gateway's peak RSS (`VmHWM`)
//! and the CPU seconds of the gateway (also per message), the nats-server and this process
//! (the clients). `--encodings plain,zstd,deflate` repeats each round with clients asking
//! for Jetstream's zstd (`compress=true`) or for permessage-deflate.

mod fleet;
pub mod latency;

use anyhow::{anyhow, bail, Context as _};
use consumer_bench as cb;
use contract::subject;
use futures_util::TryStreamExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::process::status_kib;
use testkit::ChildGuard;

/// How long the gateway may take to listen.
const READY: Duration = Duration::from_secs(10);

/// A consumer with several filters covering the same messages the gateway sends: what the
/// gateway used for a client wanting every collection until it switched to the single
/// `bsky.>` (the server's multi-filter path cost twice the CPU per message); kept as a
/// second baseline, the cost of a client that names its collections.
const GATEWAY_FILTERS: [&str; 3] = [subject::ALL_COMMITS, subject::IDENTITY, subject::ACCOUNT];

/// What the clients ask the gateway for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    /// Text frames, uncompressed.
    Plain,
    /// `compress=true`: one zstd frame per message, Jetstream's dictionary.
    Zstd,
    /// permessage-deflate (RFC 7692), as browsers ask.
    Deflate,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Plain => "plain",
            Encoding::Zstd => "zstd",
            Encoding::Deflate => "deflate",
        }
    }
}

/// What the subcommand is asked to do.
#[derive(Debug)]
pub struct Options {
    /// Record ops in the synthesized stream.
    pub ops: u64,
    pub seed: u64,
    /// Concurrent clients, one round each.
    pub clients: Vec<usize>,
    /// Most messages delivered in one round: each of `n` clients reads the first
    /// `min(all, round_cap / n)` messages.
    pub round_cap: u64,
    /// One round per encoding and client count.
    pub encodings: Vec<Encoding>,
}

/// A baseline pull consumer's rate and the nats-server's CPU seconds while it ran.
struct Baseline {
    filters: String,
    rate: cb::Rate,
    nats_cpu: f64,
}

async fn baseline(
    nats: &testkit::NatsServer,
    durable: &str,
    filters: &[&str],
) -> anyhow::Result<Baseline> {
    let cpu0 = nats.pid().and_then(cb::cpu).unwrap_or(0.0);
    let rate = cb::pull_consumer(&nats.url(), durable, filters, 1000, 20_000).await?;
    let b = Baseline {
        filters: filters.join(" "),
        rate,
        nats_cpu: nats.pid().and_then(cb::cpu).unwrap_or(0.0) - cpu0,
    };
    println!("{}", b.line());
    Ok(b)
}

impl Baseline {
    fn line(&self) -> String {
        format!(
            "pull consumer, explicit acks, batch 1000, `{}`: {} msgs in {:.2} s: {:.0} msgs/s; nats-server CPU {:.1} s",
            self.filters,
            self.rate.msgs,
            self.rate.secs,
            self.rate.per_s(),
            self.nats_cpu
        )
    }
}

/// One round's figures.
struct Round {
    encoding: Encoding,
    clients: usize,
    per_client: u64,
    fleet: fleet::Fleet,
    idle_kib: u64,
    hwm_kib: u64,
    /// CPU seconds in the round: gateway, nats-server, this process.
    cpu: (f64, f64, f64),
}

pub async fn gateway(o: Options) -> anyhow::Result<()> {
    let bin = cb::sibling("gateway")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cores} cores, {}; gateway binary {}",
        testkit::process::cpu_model(),
        bin.display()
    );
    let (nats, stored) = cb::filled(o.ops, o.seed).await?;
    let all = sendable(&nats.url(), stored).await?;

    let plain = baseline(&nats, "plain", &[subject::ALL]).await?;
    let multi = baseline(&nats, "multi", &GATEWAY_FILTERS).await?;
    if multi.rate.msgs != all {
        bail!(
            "a consumer on the gateway's filters sees {} messages, the subject counts say {all}",
            multi.rate.msgs
        );
    }

    let logs = cb::logs_dir()?;
    let mut rounds = Vec::new();
    for (&encoding, &n) in o
        .encodings
        .iter()
        .flat_map(|e| o.clients.iter().map(move |n| (e, n)))
    {
        let per_client = all.min(o.round_cap / n as u64).max(1);
        println!("{n} clients × {per_client} messages, {}:", encoding.name());
        let log = logs.join(format!("gateway-{}-{n}.log", encoding.name()));
        let r = round(&bin, &nats, encoding, n, per_client, &log).await?;
        let (fast, slow) = r.fleet.spread();
        println!(
            "  {n} clients: {} msgs in {:.2} s: {:.0} msgs/s; clients done between {fast:.2} and {slow:.2} s",
            r.fleet.msgs(),
            r.fleet.secs,
            r.fleet.per_s()
        );
        rounds.push(r);
    }
    report(&plain, &multi, all, stored, &rounds);
    Ok(())
}

/// Messages the gateway sends an unfiltered client: the stream's `stored` messages but
/// the `#sync` ones (`bsky.sync`), which Jetstream v1 clients do not know.
async fn sendable(url: &str, stored: u64) -> anyhow::Result<u64> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let stream = js
        .get_stream(cb::STREAM)
        .await
        .map_err(|e| anyhow!("stream: {e}"))?;
    let mut subjects = stream
        .info_with_subjects(subject::ALL)
        .await
        .map_err(|e| anyhow!("stream subjects: {e}"))?;
    let (mut commits, mut identity, mut account, mut sync) = (0u64, 0u64, 0u64, 0u64);
    while let Some((subject, count)) = subjects
        .try_next()
        .await
        .map_err(|e| anyhow!("stream subjects: {e}"))?
    {
        let count = count as u64;
        match subject.as_str() {
            subject::IDENTITY => identity += count,
            subject::ACCOUNT => account += count,
            subject::SYNC => sync += count,
            _ => commits += count,
        }
    }
    let total = commits + identity + account + sync;
    if total != stored {
        bail!("the stream's subjects hold {total} messages, its state says {stored}");
    }
    println!(
        "stream: {commits} commit ops, {identity} #identity, {account} #account, {sync} #sync: \
         {} sent by the gateway",
        total - sync
    );
    Ok(total - sync)
}

/// A fresh gateway, `n` clients each reading `want` messages from the start.
async fn round(
    bin: &std::path::Path,
    nats: &testkit::NatsServer,
    encoding: Encoding,
    n: usize,
    want: u64,
    log: &std::path::Path,
) -> anyhow::Result<Round> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let addr = format!("127.0.0.1:{}", testkit::free_port()?);
    let mut child = ChildGuard(
        Command::new(bin)
            .args(["--nats", &nats.url(), "--listen", &addr])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("spawning the gateway")?,
    );
    let pid = child.id();
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        if let Ok(Some(status)) = child.0.try_wait() {
            bail!("the gateway exited ({status}); see {}", log.display());
        }
        if started.elapsed() > READY {
            bail!(
                "the gateway is not listening after {READY:?}; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle_kib = status_kib(pid, "VmRSS").context("VmRSS")?;
    let cpu0 = cpus(pid, nats.pid());
    let url = match encoding {
        Encoding::Zstd => format!("ws://{addr}/subscribe?cursor=0&compress=true"),
        Encoding::Plain | Encoding::Deflate => format!("ws://{addr}/subscribe?cursor=0"),
    };
    let sample = || {
        let mib = |f| status_kib(pid, f).map_or(0.0, |k| k as f64 / 1024.0);
        format!(
            "gateway RSS {:.1} MiB (peak {:.1})",
            mib("VmRSS"),
            mib("VmHWM")
        )
    };
    let fleet = fleet::run(&url, encoding, n, want, sample).await;
    if let Ok(Some(status)) = child.0.try_wait() {
        bail!("the gateway exited ({status}); see {}", log.display());
    }
    let fleet = fleet.with_context(|| format!("gateway log: {}", log.display()))?;
    let hwm_kib = status_kib(pid, "VmHWM").context("VmHWM")?;
    let cpu1 = cpus(pid, nats.pid());
    child.terminate(Duration::from_secs(10));
    let bytes = fleet.clients.first().map_or(0, |c| c.bytes);
    if fleet.clients.iter().any(|c| c.bytes != bytes) {
        bail!("the clients read the same prefix of the stream but got different byte counts");
    }
    Ok(Round {
        encoding,
        clients: n,
        per_client: want,
        fleet,
        idle_kib,
        hwm_kib,
        cpu: (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1, cpu1.2 - cpu0.2),
    })
}

/// CPU seconds so far of the gateway, the nats-server and this process.
fn cpus(gateway: u32, nats: Option<u32>) -> (f64, f64, f64) {
    (
        cb::cpu(gateway).unwrap_or(0.0),
        nats.and_then(cb::cpu).unwrap_or(0.0),
        testkit::process::cpu_secs("self").unwrap_or(0.0),
    )
}

fn report(plain: &Baseline, multi: &Baseline, all: u64, stored: u64, rounds: &[Round]) {
    let mib = |k: u64| k as f64 / 1024.0;
    println!();
    println!("{}", plain.line());
    println!("{}", multi.line());
    println!();
    println!("| encoding | clients | msgs each | delivered | wall s | msgs/s, all clients | / plain | gateway peak RSS (idle) | CPU s: gateway / nats-server / clients | gateway CPU µs/msg | MB/s received |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut line = format!(
        "plain_msgs_s={:.0} multi_filter_msgs_s={:.0} stream_msgs={stored} sent_msgs={all}",
        plain.rate.per_s(),
        multi.rate.per_s()
    );
    for r in rounds {
        let f = &r.fleet;
        let bytes: u64 = f.clients.iter().map(|c| c.bytes).sum();
        let ratio = f.per_s() / plain.rate.per_s();
        let cpu_us = r.cpu.0 * 1e6 / f.msgs().max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | {ratio:.2} | {:.1} MiB ({:.1}) | {:.1} / {:.1} / {:.1} | {cpu_us:.1} | {:.0} |",
            r.encoding.name(),
            r.clients,
            r.per_client,
            f.msgs(),
            f.secs,
            f.per_s(),
            mib(r.hwm_kib),
            mib(r.idle_kib),
            r.cpu.0,
            r.cpu.1,
            r.cpu.2,
            bytes as f64 / 1e6 / f.secs.max(1e-9)
        );
        let n = format!("{}_c{}", r.encoding.name(), r.clients);
        line += &format!(
            " {n}_msgs_s={:.0} {n}_ratio={ratio:.2} {n}_cpu_us_msg={cpu_us:.1} {n}_peak_rss_mib={:.1} {n}_msgs_each={}",
            f.per_s(),
            mib(r.hwm_kib),
            r.per_client
        );
    }
    println!();
    println!("{line}");
}
