//! `consumer-bench archive`: the real `archive` binary against a plain pull consumer on
//! `bsky.>`, in one run; the archive's bytes per op against the stream's; and replay from
//! the archive (the `archive` crate's reader) against replay from the stream (the plain
//! consumer).

use anyhow::{bail, ensure, Context as _};
use consumer_bench as cb;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::ChildGuard;

pub async fn archive(ops: u64, seed: u64, batch: usize) -> anyhow::Result<()> {
    let bin = cb::sibling("archive")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores; archive binary {}", bin.display());
    let (nats, stored) = cb::filled(ops, seed).await?;
    let url = nats.url();
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let mut stream = js
        .get_stream(cb::STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("stream: {e}"))?;
    let stream_bytes = stream
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("stream info: {e}"))?
        .state
        .bytes;

    let plain = cb::plain_consumer(&url, contract::subject::ALL, batch, 20_000).await?;
    println!(
        "plain pull consumer: {} msgs in {:.2} s: {:.0} msgs/s",
        plain.msgs,
        plain.secs,
        plain.per_s()
    );

    // The archiver, until its durable has delivered everything; then SIGTERM, which seals
    // the last segment: the time runs from spawn to exit.
    let dir = tempfile::tempdir()?;
    let store = dir.path().join("archive");
    let log = cb::logs_dir()?.join("archive.log");
    let file = std::fs::File::create(&log)?;
    let nats_cpu0 = nats.pid().and_then(cb::cpu).unwrap_or(0.0);
    let start = Instant::now();
    let mut child = ChildGuard(
        Command::new(&bin)
            .args(["--nats", &url, "--listen", ""])
            .arg("--store")
            .arg(&store)
            .env("BSKY_ARCHIVE_CONSUMER__BATCH", batch.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("spawning the archiver")?,
    );
    let pid = child.id();
    let mut last = (Instant::now(), 0u64);
    loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            bail!("the archiver exited ({status}); see {}", log.display());
        }
        if let Ok(info) = stream.consumer_info("archive").await {
            let delivered = info.delivered.stream_sequence;
            if delivered >= stored && info.num_pending == 0 {
                break;
            }
            if delivered > last.1 {
                last = (Instant::now(), delivered);
            }
        }
        if last.0.elapsed() > cb::STALL {
            bail!(
                "no progress for {:?} at {}; see {}",
                cb::STALL,
                last.1,
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hwm_kib = testkit::process::status_kib(pid, "VmHWM").unwrap_or(0);
    let cpu = cb::cpu(pid).unwrap_or(0.0);
    let status = child.terminate(Duration::from_secs(60));
    let secs = start.elapsed().as_secs_f64();
    let nats_cpu = nats.pid().and_then(cb::cpu).unwrap_or(0.0) - nats_cpu0;
    ensure!(
        status.is_some_and(|s| s.success()),
        "the archiver did not stop cleanly; see {}",
        log.display()
    );
    let archiver = cb::Rate { msgs: stored, secs };

    // What it wrote, and replay from it.
    let reader =
        archive::reader::Archive::new(archive::store::Store::open(&archive::store::StoreConfig {
            url: store.display().to_string(),
            ..Default::default()
        })?);
    let manifest = reader.manifest().await?;
    let archive_bytes: u64 = manifest
        .iter()
        .map(|e| match e {
            archive::format::Entry::Segment(s) => s.bytes,
            archive::format::Entry::Gap(_) => 0,
        })
        .sum();
    let t = Instant::now();
    let mut replay = reader.replay(archive::reader::From::Seq(1)).await?;
    let mut n = 0u64;
    let mut payload_bytes = 0u64;
    while let Some(r) = replay.next().await? {
        n += 1;
        payload_bytes += r.payload.len() as u64;
    }
    let replayed = cb::Rate {
        msgs: n,
        secs: t.elapsed().as_secs_f64(),
    };
    ensure!(
        n == stored,
        "the archive holds {n} messages, the stream {stored}"
    );

    let per_op = archive_bytes as f64 / stored as f64;
    let stream_per_op = stream_bytes as f64 / stored as f64;
    let ratio = archiver.per_s() / plain.per_s();
    let replay_ratio = replayed.per_s() / plain.per_s();
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| plain pull consumer, explicit acks, `bsky.>` (= replay from the stream) | {:.0} msgs/s ({} msgs, {:.2} s) |",
        plain.per_s(),
        plain.msgs,
        plain.secs
    );
    println!(
        "| archiver (binary, local directory, zstd 3), batch {batch} | {:.0} msgs/s ({:.2} s from spawn to sealed exit) |",
        archiver.per_s(),
        archiver.secs
    );
    println!("| archiver / plain | {ratio:.2} |");
    println!(
        "| archive size | {archive_bytes} bytes in {} segments: {per_op:.1} bytes/op (stream: {stream_per_op:.1}, payloads: {:.1}) |",
        manifest.len(),
        payload_bytes as f64 / stored as f64
    );
    println!(
        "| replay from the archive (reader, checksums, in-process) | {:.0} msgs/s ({:.2} s) |",
        replayed.per_s(),
        replayed.secs
    );
    println!("| replay archive / stream | {replay_ratio:.2} |");
    println!(
        "| archiver peak RSS (VmHWM); CPU s archiver / nats-server | {:.1} MiB; {cpu:.1} / {nats_cpu:.1} |",
        hwm_kib as f64 / 1024.0
    );
    println!();
    println!(
        "archive_msgs_s={:.0} plain_msgs_s={:.0} ratio={ratio:.2} bytes_per_op={per_op:.1} stream_bytes_per_op={stream_per_op:.1} replay_archive_msgs_s={:.0} replay_ratio={replay_ratio:.2} msgs={stored}",
        archiver.per_s(),
        plain.per_s(),
        replayed.per_s()
    );
    Ok(())
}
