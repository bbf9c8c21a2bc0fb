//! kit consumers read past the stream's start through the archive and continue from the
//! stream without a seam: a capture of 200,000 ops (`ARCHIVE_SEAM_OPS` to change it)
//! ingested into a stream that keeps about its last third, the archiver running from the
//! start; consumers started with `--from-seq 1` and `--from-time` before the first event
//! read every message exactly once, in order, equal to the capture; one filtered to posts
//! reads exactly the capture's posts.

mod common;

use anyhow::{ensure, Context as _};
use archive::history::ArchiveHistory;
use common::{Archiver, LocalDir, StoreUnderTest};
use kit::rusqlite::{self, Transaction};
use kit::{HandleError, Handler, Msg, Rebuild, Start};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a consumer applied: (stream sequence, hash of subject and payload), in order.
type Applied = Arc<Mutex<Vec<(u64, u64)>>>;

fn digest(subject: &str, payload: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    subject.hash(&mut h);
    payload.hash(&mut h);
    h.finish()
}

/// Records every message it is given; keeps nothing in SQLite.
struct Recorder(Applied);

impl Handler for Recorder {
    fn init(&mut self, _: &Transaction<'_>) -> rusqlite::Result<()> {
        Ok(())
    }
    fn rebuild(&mut self, _: &Transaction<'_>, _: Rebuild) -> rusqlite::Result<()> {
        self.0
            .lock()
            .map_err(|_| rusqlite::Error::InvalidQuery)?
            .clear();
        Ok(())
    }
    fn handle(&mut self, _: &Transaction<'_>, msg: &Msg<'_>) -> Result<(), HandleError> {
        self.0
            .lock()
            .map_err(|_| HandleError::Poison("poisoned lock"))?
            .push((msg.seq, digest(msg.subject, msg.payload)));
        Ok(())
    }
}

/// A kit consumer with the archive as its history, run until it has applied up to `last`.
async fn consume(
    url: &str,
    dir: &std::path::Path,
    durable: &str,
    subjects: &[&str],
    start: Start,
    history: &ArchiveHistory,
    last: u64,
) -> anyhow::Result<(Vec<(u64, u64)>, kit::Progress)> {
    let mut opts = kit::Options::new(durable, subjects);
    opts.state.path = dir.join(format!("{durable}.db"));
    opts.consumer.status_interval = Duration::from_millis(500);
    opts.start = start;
    opts.history = Some(Arc::new(history.clone()));
    let applied = Applied::default();
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = kit::metrics::Metrics::register(&mut registry, &[]);
    let (progress, mut rx) = tokio::sync::watch::channel(kit::Progress::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(kit::run(
        js,
        opts,
        Recorder(applied.clone()),
        metrics.clone(),
        progress,
        shutdown.clone(),
    ));
    let caught_up = kit::testing::wait_caught_up(&mut rx, last, Duration::from_secs(300)).await;
    shutdown.cancel();
    task.await?.with_context(|| format!("{durable} stopped"))?;
    let p = caught_up.map_err(anyhow::Error::msg)?;
    ensure!(
        metrics.history.get() > 0,
        "{durable} read nothing from the archive"
    );
    let v = applied.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
    Ok((v, p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_the_archive_then_the_stream_without_a_seam() -> anyhow::Result<()> {
    let ops = std::env::var("ARCHIVE_SEAM_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (capture, msgs) = common::capture(ops, 33)?;
    let n = msgs.len() as u64;
    let total_bytes: usize = msgs
        .iter()
        .map(|m| m.payload.len() + m.subject.len() + 100)
        .sum();
    let store = LocalDir::new()?;
    let nats = testkit::NatsServer::start()?;
    let url = nats.url();
    let work = tempfile::tempdir()?;
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", testkit::free_port()?).parse()?;
    let toml = common::archiver_toml(&url, &store, metrics)
        .replace(
            "max_bytes = 65536\nmax_messages = 2000",
            "max_bytes = 4194304\nmax_messages = 20000",
        )
        .replace("max_ack_pending = 3000", "max_ack_pending = 25000");
    let mut archiver = Archiver::start(work.path(), &toml)?;
    let pipeline = ingest::testing::Pipeline::start_on(
        nats,
        capture,
        staging::replay::ReplayOptions::default(),
        |c| c.stream.max_bytes = i64::try_from(total_bytes / 3).unwrap_or(i64::MAX),
    )
    .await?;
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    common::wait_last_seq(&js, n, Duration::from_secs(300)).await?;
    let archive = archive::reader::Archive::new(store.open()?);
    common::wait_archived(&archive, &mut archiver, n, Duration::from_secs(300)).await?;
    let (first, last) = common::stream_range(&js).await?;
    ensure!(
        first > n / 2 && last == n,
        "the stream should keep only its last part: {first}..={last} of {n}"
    );
    println!("{n} messages; the stream keeps {first}..={last}, the archive 1..={n}");
    let history = ArchiveHistory::open(
        "archive",
        &archive::store::StoreConfig {
            url: store.dir.path().join("archive").display().to_string(),
            ..Default::default()
        },
    )?;

    let want: Vec<(u64, u64)> = msgs
        .iter()
        .zip(1u64..)
        .map(|(m, seq)| (seq, digest(m.subject.as_str(), &m.payload)))
        .collect();
    let first_event = kit::event::time_us(&msgs[0].payload)?;
    for (durable, start) in [
        ("from_seq", Start::FromSeq(1)),
        ("from_time", Start::FromTime(first_event - 1_000_000)),
    ] {
        let (got, progress) = consume(
            &url,
            work.path(),
            durable,
            &[contract::subject::ALL],
            start,
            &history,
            n,
        )
        .await?;
        ensure!(
            progress.lost == 0,
            "{durable}: {} counted lost",
            progress.lost
        );
        ensure!(
            got.len() == want.len(),
            "{durable}: {} messages of {n}",
            got.len()
        );
        if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
            anyhow::bail!(
                "{durable}: message {i} is seq {} where the capture has seq {} (the seam is at {first})",
                got[i].0,
                want[i].0
            );
        }
        println!("{durable}: 1..={n} exactly once, in order, equal to the capture");
    }

    // Filtered: the position passes over other subjects read from the archive.
    let posts: Vec<(u64, u64)> = want
        .iter()
        .zip(&msgs)
        .filter(|(_, m)| m.subject.as_str() == contract::subject::POSTS)
        .map(|(w, _)| *w)
        .collect();
    let (got, progress) = consume(
        &url,
        work.path(),
        "posts",
        &[contract::subject::POSTS],
        Start::FromSeq(1),
        &history,
        n,
    )
    .await?;
    ensure!(progress.lost == 0, "posts: {} counted lost", progress.lost);
    ensure!(
        !posts.is_empty() && got == posts,
        "posts: {} applied, the capture has {}",
        got.len(),
        posts.len()
    );
    println!("posts: the capture's {} posts exactly", posts.len());

    archiver.child.terminate(Duration::from_secs(10));
    let (_nats, relay) = pipeline.stop_ingest().await?;
    relay.shutdown().await?;
    Ok(())
}
