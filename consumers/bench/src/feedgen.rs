//! `consumer-bench feedgen`: the feed generator (real binary, real SQLite writes) against a
//! plain pull consumer on `bsky.app.bsky.feed.post`, while `getFeedSkeleton` is asked in a
//! loop; prints both rates, their ratio, the requests' p50/p99 and the peak RSS. The child
//! inherits this environment: `BSKY_FEEDGEN_STATE__SYNCHRONOUS=full` measures full syncs.

use anyhow::Context as _;
use consumer_bench as cb;
use consumer_bench::probe::Probe;
use std::process::Command;
use std::time::{Duration, Instant};

/// The feeds the benchmark serves: words, patterns, languages, media, replies; "en" takes
/// most posts (so most posts are written) and overflows its `max_posts` (so retention runs).
const FEEDS: &str = r#"
[service]
hostname = "feeds.example.com"

[[feeds]]
name = "code"
words = ["rust", "zig", "code", "compiler", "open source"]

[[feeds]]
name = "links"
has = ["link"]
replies = false

[[feeds]]
name = "media"
has = ["image", "video"]

[[feeds]]
name = "en"
langs = ["en"]
max_posts = 20000

[[feeds]]
name = "questions"
regex = ['\?\s*$']
replies = false

[[feeds]]
name = "github"
regex = ['(?i)github\.com/']
max_days = 7
"#;
const NAMES: [&str; 6] = ["code", "links", "media", "en", "questions", "github"];
const FILTER: &str = contract::subject::POSTS;

/// Runs the benchmark.
pub async fn run(ops: u64, seed: u64, batch: usize, qps: u32) -> anyhow::Result<()> {
    let bin = cb::sibling("feedgen")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores; feedgen binary {}", bin.display());
    let t = Instant::now();
    let capture = cb::synth(ops, seed)?;
    println!(
        "capture: {ops} ops, {} frames, synthesized in {:.1} s",
        capture.len(),
        t.elapsed().as_secs_f64()
    );
    let nats = testkit::NatsServer::start().context("nats-server")?;
    let t = Instant::now();
    let stored = cb::fill(&nats.url(), &capture, 2048).await?;
    drop(capture);
    println!(
        "stream: {stored} messages stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let plain = cb::plain_consumer(&nats.url(), FILTER, batch, 20_000).await?;
    println!(
        "plain pull consumer: {} msgs in {:.2} s: {:.0} msgs/s",
        plain.msgs,
        plain.secs,
        plain.per_s()
    );

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("feedgen.toml");
    std::fs::write(&config, FEEDS)?;
    let logs = testkit::workspace_root().join("target/bench-logs");
    std::fs::create_dir_all(&logs)?;
    let port = testkit::free_port()?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--nats",
        &nats.url(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .arg("--config")
    .arg(&config)
    .arg("--db")
    .arg(dir.path().join("feedgen.db"))
    .env("BSKY_FEEDGEN_CONSUMER__BATCH", batch.to_string())
    .env("RUST_LOG", "warn");

    // Readers while it writes: a first page of each feed in turn, then the page after it.
    let addr = format!("127.0.0.1:{port}").parse()?;
    let mut i = 0usize;
    let next = move |last: Option<&str>| {
        let cursor = last
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .and_then(|v| v["cursor"].as_str().map(str::to_string));
        i += 1;
        let feed = format!(
            "at%3A%2F%2Fdid%3Aweb%3Afeeds.example.com%2Fapp.bsky.feed.generator%2F{}",
            NAMES[(i / 2) % NAMES.len()]
        );
        match cursor {
            Some(c) if i % 2 == 1 => {
                format!("/xrpc/app.bsky.feed.getFeedSkeleton?feed={feed}&limit=50&cursor={c}")
            }
            _ => format!("/xrpc/app.bsky.feed.getFeedSkeleton?feed={feed}&limit=50"),
        }
    };
    let probe = Probe::start(addr, Duration::from_secs(1) / qps.max(1), next);
    let run = cb::run_consumer_then(
        &nats.url(),
        cmd,
        "feedgen",
        plain.msgs,
        nats.pid(),
        &logs.join("feedgen.log"),
        probe.stopper(),
    )
    .await;
    let lat = probe.stop().await;
    let run = run?;
    let ms = |q: f64| {
        lat.quantile(q)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let (p50, p99) = (ms(0.5), ms(0.99));
    let rss_mib = run.hwm_kib as f64 / 1024.0;
    let ratio = run.rate.per_s() / plain.per_s();
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| plain pull consumer, explicit acks, `{FILTER}` | {:.0} msgs/s ({} msgs, {:.2} s) |",
        plain.per_s(),
        plain.msgs,
        plain.secs
    );
    let sync = std::env::var("BSKY_FEEDGEN_STATE__SYNCHRONOUS").unwrap_or_else(|_| "normal".into());
    println!(
        "| feedgen (binary, {} feeds, SQLite synchronous={sync}), batch {batch} | {:.0} msgs/s ({:.2} s from start) |",
        NAMES.len(),
        run.rate.per_s(),
        run.rate.secs
    );
    println!("| feedgen / plain | {ratio:.2} (target 0.7) |");
    println!(
        "| getFeedSkeleton while it writes, ≤ {qps}/s | {} answers, p50 {p50:.2} ms, p99 {p99:.2} ms, {} not 200, {} failed |",
        lat.times.len(),
        lat.not_ok,
        lat.failed
    );
    println!("| feedgen peak RSS (VmHWM) | {rss_mib:.1} MiB |");
    println!(
        "| CPU s: feedgen / nats-server (feedgen phase) | {:.1} / {:.1} |",
        run.cpu.0, run.cpu.1
    );
    println!();
    println!(
        "feedgen_msgs_s={:.0} plain_msgs_s={:.0} ratio={ratio:.2} synchronous={sync} skeleton_p50_ms={p50:.2} skeleton_p99_ms={p99:.2} skeleton_requests={} feedgen_peak_rss_mib={rss_mib:.1} msgs={}",
        run.rate.per_s(),
        plain.per_s(),
        lat.times.len(),
        plain.msgs
    );
    Ok(())
}
