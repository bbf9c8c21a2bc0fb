//! `consumer-bench`: one subcommand per consumer, each measured against a plain pull
//! consumer on the same stream and filter, in the same run.
//!
//! ```sh
//! cargo build --release -p charts -p feedgen -p consumer-bench
//! target/release/consumer-bench charts --ops 500000
//! target/release/consumer-bench feedgen --ops 500000
//! ```
//!
//! Prints a table and, as its last line, `key=value …`.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use consumer_bench as cb;
use std::process::Command;
use std::time::Instant;

mod feedgen;

#[derive(Debug, Parser)]
#[command(
    name = "consumer-bench",
    about = "Consumer throughput against a plain pull consumer, in one run"
)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// The charts consumer (real binary, real SQLite writes) on every commit op.
    Charts {
        /// Record ops in the synthesized stream.
        #[arg(long, default_value_t = 500_000)]
        ops: u64,
        /// Seed of the synthesized capture.
        #[arg(long, default_value_t = 20261128)]
        seed: u64,
        /// Messages per pull / per SQLite transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// The feed generator (real binary, real SQLite writes) on the post subject, with
    /// getFeedSkeleton asked in a loop meanwhile.
    Feedgen {
        /// Record ops in the synthesized stream (posts are about 12 % of them).
        #[arg(long, default_value_t = 500_000)]
        ops: u64,
        /// Seed of the synthesized capture.
        #[arg(long, default_value_t = 20261128)]
        seed: u64,
        /// Messages per pull / per SQLite transaction (feedgen's default batch).
        #[arg(long, default_value_t = 4000)]
        batch: usize,
        /// Most getFeedSkeleton requests per second while it runs.
        #[arg(long, default_value_t = 200)]
        qps: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().what {
        What::Charts { ops, seed, batch } => charts(ops, seed, batch).await,
        What::Feedgen {
            ops,
            seed,
            batch,
            qps,
        } => feedgen::run(ops, seed, batch, qps).await,
    }
}

async fn charts(ops: u64, seed: u64, batch: usize) -> anyhow::Result<()> {
    let bin = cb::sibling("charts")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores; charts binary {}", bin.display());
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

    let filter = "bsky.*.*.>"; // charts' default: every commit op
    let plain = cb::plain_consumer(&nats.url(), filter, batch, 20_000).await?;
    println!(
        "plain pull consumer: {} msgs in {:.2} s: {:.0} msgs/s",
        plain.msgs,
        plain.secs,
        plain.per_s()
    );

    let dir = tempfile::tempdir()?;
    let logs = testkit::workspace_root().join("target/bench-logs");
    std::fs::create_dir_all(&logs)?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--nats",
        &nats.url(),
        "--listen",
        &format!("127.0.0.1:{}", testkit::free_port()?),
    ])
    .arg("--db")
    .arg(dir.path().join("charts.db"))
    .env("BSKY_CHARTS_CONSUMER__BATCH", batch.to_string())
    .env("RUST_LOG", "warn");
    let run = cb::run_consumer(
        &nats.url(),
        cmd,
        "charts",
        plain.msgs,
        nats.pid(),
        &logs.join("charts.log"),
    )
    .await?;
    let rss_mib = run.hwm_kib as f64 / 1024.0;
    let ratio = run.rate.per_s() / plain.per_s();
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| plain pull consumer, explicit acks, `{filter}` | {:.0} msgs/s ({} msgs, {:.2} s) |",
        plain.per_s(),
        plain.msgs,
        plain.secs
    );
    println!("| charts (binary, SQLite, synchronous=full), batch {batch} | {:.0} msgs/s ({:.2} s from start) |", run.rate.per_s(), run.rate.secs);
    println!("| charts / plain | {ratio:.2} |");
    println!("| charts peak RSS (VmHWM) | {rss_mib:.1} MiB |");
    println!(
        "| CPU s: charts / nats-server (charts phase) | {:.1} / {:.1} |",
        run.cpu.0, run.cpu.1
    );
    println!();
    println!(
        "charts_msgs_s={:.0} plain_msgs_s={:.0} ratio={ratio:.2} charts_peak_rss_mib={rss_mib:.1} msgs={}",
        run.rate.per_s(),
        plain.per_s(),
        plain.msgs
    );
    Ok(())
}
