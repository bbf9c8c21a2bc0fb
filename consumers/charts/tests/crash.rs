//! The real `charts` binary killed with SIGKILL mid-stream, twice, and restarted: its
//! final tables equal those of an uninterrupted run. Then a `--from-time` rebuild over the
//! uninterrupted database changes nothing either. The capture spans six UTC days, so days
//! close (their members move to the keyed table) between the kills, and a restarted process
//! closes days the killed one left open.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::ChildGuard;

fn spawn(nats: &str, db: &Path, port: u16, log: &str) -> ChildGuard {
    let dir = testkit::workspace_root().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .unwrap();
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_charts"))
            .args(["--nats", nats, "--listen", &format!("127.0.0.1:{port}")])
            .arg("--db")
            .arg(db)
            // Small batches: more commits, so a kill lands between many of them.
            .env("BSKY_CHARTS_CONSUMER__BATCH", "100")
            .env("BSKY_CHARTS_CONSUMER__STATUS_INTERVAL", "200ms")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    )
}

/// The committed position, read from the database (0 before the first commit).
fn position(db: &Path) -> u64 {
    kit::state::open_reader(db)
        .ok()
        .and_then(|c| kit::state::load(&c).ok().flatten())
        .map_or(0, |p| p.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_gives_the_same_tables() {
    // 50,000 ops at one every ten seconds of event time: about 5.8 days from 20:00Z.
    let (capture, report) =
        kit::testing::synth(50_000, 20261128, 1_783_195_200_000_000, 0.1).unwrap();
    let pipeline = ingest::testing::Pipeline::start(capture, Default::default())
        .await
        .unwrap();
    let url = pipeline.nats.url();
    let last = common::settled(&url).await;
    let dir = tempfile::tempdir().unwrap();

    let reference = dir.path().join("reference.db");
    let charts = common::InProcess::start(
        common::config(&url, &reference, "reference"),
        kit::Start::Resume,
    );
    common::wait_caught_up(charts.addr, last, common::WAIT).await;
    charts.stop().await;
    let want = common::tables(&reference);
    assert!(want.hours.len() >= 12);
    assert!(
        want.days.len() >= 6,
        "{} days: too few to close any",
        want.days.len()
    );

    let db = dir.path().join("crashed.db");
    let port = testkit::free_port().unwrap();
    for (round, share) in [(1, 0.3), (2, 0.6)] {
        let mut child = spawn(&url, &db, port, "charts-crash.log");
        let target = (last as f64 * share) as u64;
        let start = Instant::now();
        while position(&db) < target {
            assert!(child.alive(), "charts exited early (round {round})");
            assert!(start.elapsed() < common::WAIT, "no progress to {target}");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.signal("KILL").unwrap();
        child.wait_timeout(Duration::from_secs(10)).unwrap();
        let at = position(&db);
        eprintln!("round {round}: killed at position {at} of {last}");
        assert!(at < last, "killed mid-stream");
    }
    let mut child = spawn(&url, &db, port, "charts-crash.log");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_caught_up(addr, last, common::WAIT).await;
    child.terminate(Duration::from_secs(10));
    let got = common::tables(&db);
    assert_eq!(
        got, want,
        "tables after two kill -9 equal the uninterrupted run's"
    );

    // Rebuild the second day from its 03:00 (charts widens to the day): same tables.
    let (_, t1) = report.time_range.unwrap();
    let t = t1 / 86_400_000_000 * 86_400_000_000 + 3 * 3_600_000_000;
    let charts = common::InProcess::start(
        common::config(&url, &reference, "reference"),
        kit::Start::FromTime(t),
    );
    common::wait_caught_up(charts.addr, last, common::WAIT).await;
    charts.stop().await;
    assert_eq!(common::tables(&reference), want, "--from-time rebuild");
    pipeline.stop().await.unwrap();
}
