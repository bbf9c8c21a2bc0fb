//! kit consumers read past the stream's start through the archive and continue from the
//! stream without a seam: a capture of 200,000 ops (`ARCHIVE_SEAM_OPS` to change it)
//! ingested into a stream that keeps about its last third, the archiver running from the
//! start. A consumer running from the start but slower than the ingest falls behind the
//! stream's retention and goes back to the archive; consumers started afterwards with
//! `--from-seq 1` and `--from-time` before the first event; each reads every message
//! exactly once, in order, equal to the capture; one filtered to posts reads exactly the
//! capture's posts.

mod common;

use anyhow::{ensure, Context as _};
use archive::history::ArchiveHistory;
use common::{Archiver, LocalDir, StoreUnderTest};
use kit::rusqlite::{self, Transaction};
use kit::{HandleError, Handler, Msg, Rebuild, Start};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Records every message it is given; keeps nothing in SQLite. While `slow` is set, each
/// message takes a millisecond.
struct Recorder {
    applied: Applied,
    slow: Arc<AtomicBool>,
}

impl Handler for Recorder {
    fn init(&mut self, _: &Transaction<'_>) -> rusqlite::Result<()> {
        Ok(())
    }
    fn rebuild(&mut self, _: &Transaction<'_>, _: Rebuild) -> rusqlite::Result<()> {
        self.applied
            .lock()
            .map_err(|_| rusqlite::Error::InvalidQuery)?
            .clear();
        Ok(())
    }
    fn handle(&mut self, _: &Transaction<'_>, msg: &Msg<'_>) -> Result<(), HandleError> {
        if self.slow.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.applied
            .lock()
            .map_err(|_| HandleError::Poison("poisoned lock"))?
            .push((msg.seq, digest(msg.subject, msg.payload)));
        Ok(())
    }
}

/// A kit consumer with the archive as its history, running.
struct Consumer {
    durable: String,
    applied: Applied,
    metrics: kit::metrics::Metrics,
    progress: tokio::sync::watch::Receiver<kit::Progress>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kit::RunError>>,
}

impl Consumer {
    async fn start(
        url: &str,
        dir: &std::path::Path,
        durable: &str,
        subjects: &[&str],
        start: Start,
        history: &ArchiveHistory,
        slow: Arc<AtomicBool>,
    ) -> anyhow::Result<Consumer> {
        let mut opts = kit::Options::new(durable, subjects);
        opts.state.path = dir.join(format!("{durable}.db"));
        opts.consumer.status_interval = Duration::from_millis(500);
        opts.consumer.retry_max = Duration::from_secs(5);
        opts.start = start;
        opts.history = Some(Arc::new(history.clone()));
        let applied = Applied::default();
        let js = async_nats::jetstream::new(async_nats::connect(url).await?);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = kit::metrics::Metrics::register(&mut registry, &[]);
        let (progress, rx) = tokio::sync::watch::channel(kit::Progress::default());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handler = Recorder {
            applied: applied.clone(),
            slow,
        };
        let task = tokio::spawn(kit::run(
            js,
            opts,
            handler,
            metrics.clone(),
            progress,
            shutdown.clone(),
        ));
        Ok(Consumer {
            durable: durable.into(),
            applied,
            metrics,
            progress: rx,
            shutdown,
            task,
        })
    }

    /// Waits until it has applied everything up to `last`, stops it, and returns what it
    /// applied; it must have read from the archive and counted nothing lost.
    async fn finish(mut self, last: u64) -> anyhow::Result<Vec<(u64, u64)>> {
        let caught_up =
            kit::testing::wait_caught_up(&mut self.progress, last, Duration::from_secs(300)).await;
        self.shutdown.cancel();
        let durable = &self.durable;
        self.task
            .await?
            .with_context(|| format!("{durable} stopped"))?;
        let p = caught_up.map_err(anyhow::Error::msg)?;
        ensure!(p.lost == 0, "{durable}: {} counted lost", p.lost);
        ensure!(
            self.metrics.history.get() > 0,
            "{durable} read nothing from the archive"
        );
        let v = self
            .applied
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .clone();
        Ok(v)
    }
}

/// `got` is `want`, or where it first differs.
fn same(durable: &str, got: &[(u64, u64)], want: &[(u64, u64)], seam: u64) -> anyhow::Result<()> {
    if let Some(i) = (0..want.len().min(got.len())).find(|&i| got[i] != want[i]) {
        anyhow::bail!(
            "{durable}: message {i} is seq {} where the capture has seq {} (the seam is at {seam})",
            got[i].0,
            want[i].0
        );
    }
    ensure!(
        got.len() == want.len(),
        "{durable}: {} messages of {}",
        got.len(),
        want.len()
    );
    Ok(())
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
    let history = ArchiveHistory::open(
        "archive",
        &archive::store::StoreConfig {
            url: store.dir.path().join("archive").display().to_string(),
            ..Default::default()
        },
    )?;
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
    // Running from the start, slower than the ingest: the stream drops what it has not
    // read yet, so it must go back to the archive while it runs.
    let slow = Arc::new(AtomicBool::new(true));
    let running = Consumer::start(
        &url,
        work.path(),
        "running",
        &[contract::subject::ALL],
        Start::Resume,
        &history,
        slow.clone(),
    )
    .await?;
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
    slow.store(false, Ordering::Relaxed);
    let (first, last) = common::stream_range(&js).await?;
    ensure!(
        first > n / 2 && last == n,
        "the stream should keep only its last part: {first}..={last} of {n}"
    );
    println!("{n} messages; the stream keeps {first}..={last}, the archive 1..={n}");

    let want: Vec<(u64, u64)> = msgs
        .iter()
        .zip(1u64..)
        .map(|(m, seq)| (seq, digest(m.subject.as_str(), &m.payload)))
        .collect();
    let behind = running
        .metrics
        .rewinds
        .get_or_create(&kit::metrics::ReasonLabel { reason: "behind" })
        .clone();
    let got = running.finish(n).await?;
    same("running", &got, &want, first)?;
    ensure!(
        behind.get() > 0,
        "the running consumer never went back to the archive"
    );
    println!(
        "running: fell behind the stream {} time(s), read the archive, 1..={n} exactly once",
        behind.get()
    );

    let first_event = kit::event::time_us(&msgs[0].payload)?;
    let fast = Arc::new(AtomicBool::new(false));
    for (durable, start) in [
        ("from_seq", Start::FromSeq(1)),
        ("from_time", Start::FromTime(first_event - 1_000_000)),
    ] {
        let c = Consumer::start(
            &url,
            work.path(),
            durable,
            &[contract::subject::ALL],
            start,
            &history,
            fast.clone(),
        )
        .await?;
        same(durable, &c.finish(n).await?, &want, first)?;
        println!("{durable}: 1..={n} exactly once, in order, equal to the capture");
    }

    // Filtered: the position passes over other subjects read from the archive.
    let posts: Vec<(u64, u64)> = want
        .iter()
        .zip(&msgs)
        .filter(|(_, m)| m.subject.as_str() == contract::subject::POSTS)
        .map(|(w, _)| *w)
        .collect();
    ensure!(!posts.is_empty(), "the capture has no posts");
    let c = Consumer::start(
        &url,
        work.path(),
        "posts",
        &[contract::subject::POSTS],
        Start::FromSeq(1),
        &history,
        fast,
    )
    .await?;
    same("posts", &c.finish(n).await?, &posts, first)?;
    println!("posts: the capture's {} posts exactly", posts.len());

    archiver.child.terminate(Duration::from_secs(10));
    let (_nats, relay) = pipeline.stop_ingest().await?;
    relay.shutdown().await?;
    Ok(())
}
