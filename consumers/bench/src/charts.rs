//! `consumer-bench charts`: the real `charts` binary (kit, SQLite writes) against a plain
//! pull consumer on the same filter (`bsky.*.*.>`, every commit op), in one run.

use consumer_bench as cb;
use std::process::Command;

pub async fn charts(ops: u64, seed: u64, batch: usize) -> anyhow::Result<()> {
    let bin = cb::sibling("charts")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores; charts binary {}", bin.display());
    let (nats, _stored) = cb::filled(ops, seed).await?;

    let filter = "bsky.*.*.>"; // charts' default: every commit op
    let plain = cb::plain_consumer(&nats.url(), filter, batch, 20_000).await?;
    println!(
        "plain pull consumer: {} msgs in {:.2} s: {:.0} msgs/s",
        plain.msgs,
        plain.secs,
        plain.per_s()
    );

    let dir = tempfile::tempdir()?;
    let logs = cb::logs_dir()?;
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
