//! The real `feedgen` binary killed with SIGKILL mid-stream, twice, and restarted: every
//! feed equals that of an uninterrupted run (retention included). Then rebuilds of the
//! uninterrupted index: `--from-seq 1` gives the same feeds, and so does `--from-time`
//! for the feeds whose retention removed nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::ChildGuard;

/// The feeds, as an operator writes them; the synthesized posts are a developer's real
/// posts (createdAt 2023–2025), replayed in 2026.
const FEEDS: &str = r#"
[[feeds]]
name = "all"
max_posts = 700

[[feeds]]
name = "code"
words = ["rust", "zig", "code", "github"]
replies = false

[[feeds]]
name = "media"
has = ["link", "image"]

[[feeds]]
name = "recent"
regex = ["(?i)th"]
max_days = 600
"#;
const NAMES: [&str; 4] = ["all", "code", "media", "recent"];

fn spawn(nats: &str, db: &Path, config: &Path, port: u16) -> ChildGuard {
    let dir = testkit::workspace_root().join("target/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("feedgen-crash.log"))
        .unwrap();
    ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_feedgen"))
            .args(["--nats", nats, "--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(config)
            .arg("--db")
            .arg(db)
            // Small batches: more commits, so a kill lands between many of them.
            .env("BSKY_FEEDGEN_CONSUMER__BATCH", "50")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap(),
    )
}

fn feeds(db: &Path) -> Vec<Vec<String>> {
    NAMES
        .iter()
        .map(|n| feedgen::feed_contents(db, n).unwrap())
        .collect()
}

/// The FEEDS above, read as the binary reads them.
fn config_with_feeds() -> feedgen::config::Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feeds.toml");
    std::fs::write(&path, FEEDS).unwrap();
    let flags = feedgen::config::Flags {
        common: kit::config::ConsumerFlags {
            config: Some(path),
            ..Default::default()
        },
    };
    feedgen::config::Config::load(&flags).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_gives_the_same_feeds() {
    let (capture, report) = kit::testing::synth(50_000, 20261128, T_START, 1.0).unwrap();
    let pipeline = ingest::testing::Pipeline::start(capture, Default::default())
        .await
        .unwrap();
    let url = pipeline.nats.url();
    common::settled(&url).await;
    let last = common::last_post_seq(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("feedgen.toml");
    std::fs::write(&config_file, FEEDS).unwrap();

    let with = |db: &Path, durable: &str| {
        let mut c = common::config(&url, db, durable, vec![]);
        c.feeds = config_with_feeds().feeds;
        c
    };
    let reference = dir.path().join("reference.db");
    let fg = common::InProcess::start(with(&reference, "reference"), kit::Start::Resume).await;
    common::wait_indexed(&url, fg.addr).await;
    fg.stop().await;
    let want = feeds(&reference);
    assert_eq!(want[0].len(), 700, "max_posts applied");
    assert!(want.iter().all(|f| !f.is_empty()), "every feed holds posts");

    let db = dir.path().join("crashed.db");
    let port = testkit::free_port().unwrap();
    for (round, share) in [(1, 0.3), (2, 0.6)] {
        let mut child = spawn(&url, &db, &config_file, port);
        let target = (last as f64 * share) as u64;
        let start = Instant::now();
        while common::position(&db) < target {
            assert!(child.alive(), "feedgen exited early (round {round})");
            assert!(start.elapsed() < common::WAIT, "no progress to {target}");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.signal("KILL").unwrap();
        child.wait_timeout(Duration::from_secs(10)).unwrap();
        let at = common::position(&db);
        eprintln!("round {round}: killed at position {at} of {last}");
        assert!(at < last, "killed mid-stream");
    }
    let mut child = spawn(&url, &db, &config_file, port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    common::wait_indexed(&url, addr).await;
    let (code, _) = common::get(addr, "/xrpc/app.bsky.feed.describeFeedGenerator")
        .await
        .unwrap();
    assert_eq!(code, 200);
    child.terminate(Duration::from_secs(10));
    assert_eq!(
        feeds(&db),
        want,
        "feeds after two kill -9 equal the uninterrupted run's"
    );

    // Rebuild everything from the first sequence: the same feeds.
    let fg = common::InProcess::start(with(&reference, "reference"), kit::Start::FromSeq(1)).await;
    common::wait_indexed(&url, fg.addr).await;
    fg.stop().await;
    assert_eq!(feeds(&reference), want, "--from-seq 1 rebuild");

    // Rebuild from the middle of the stream's event time: the feeds retention did not cut
    // are the same ("all" lost posts to max_posts that a partial rebuild cannot bring back).
    let (t0, t1) = report.time_range.unwrap();
    let fg = common::InProcess::start(
        with(&reference, "reference"),
        kit::Start::FromTime((t0 + t1) / 2),
    )
    .await;
    common::wait_indexed(&url, fg.addr).await;
    fg.stop().await;
    let got = feeds(&reference);
    for (i, name) in NAMES.iter().enumerate().skip(1) {
        let extra: Vec<&String> = got[i].iter().filter(|u| !want[i].contains(u)).collect();
        let missing: Vec<&String> = want[i].iter().filter(|u| !got[i].contains(u)).collect();
        assert!(
            got[i] == want[i],
            "--from-time rebuild, feed {name}: {} vs {} posts; extra {extra:?}, missing {missing:?}",
            got[i].len(),
            want[i].len()
        );
    }
    pipeline.stop().await.unwrap();
}

/// 2026-07-04T20:00Z; the capture spans about 14 hours of event time.
const T_START: i64 = 1_783_195_200_000_000;
