//! The `staging` binary end to end: synth then info, info on the real corpus, and its flags:
//! comma-separated lists reach the right fields, bad ones are usage errors (exit code 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

fn staging(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_staging"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn info_describes_the_real_corpus() {
    let out = staging(&["info", common::corpus_path().to_str().unwrap()]);
    assert!(out.contains("frames: 150"), "{out}");
    assert!(
        out.contains("seq: 31527015322..=31527015471 (strictly increasing)"),
        "{out}"
    );
    assert!(out.contains("#commit      148"), "{out}");
}

#[test]
fn synth_writes_a_capture_that_info_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.bin.zst");
    let out = staging(&[
        "synth",
        "-o",
        path.to_str().unwrap(),
        "--repo",
        common::calabro_path().to_str().unwrap(),
        "--ops",
        "2000",
        "--seed",
        "3",
        "--start-seq",
        "500",
    ]);
    assert!(out.contains("ops: 2000"), "{out}");
    let info = staging(&["info", path.to_str().unwrap()]);
    assert!(info.contains("seq: 500..="), "{info}");
}

/// A usage error: exit code 2 and stderr, which must say what is wrong.
fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_staging"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(out.stdout.is_empty(), "{args:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn comma_lists_reach_the_right_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("posts.bin");
    let out = staging(&[
        "synth",
        "-o",
        path.to_str().unwrap(),
        "--repo",
        common::calabro_path().to_str().unwrap(),
        "--ops",
        "300",
        "--mix",
        "0,1,0,0,0",
        "--actions",
        "1,0,0",
        "--kinds",
        "0,0,0",
        "--mst-nodes",
        "2,4",
    ]);
    assert!(out.contains("create       300"), "{out}");
    assert!(out.contains("       300  app.bsky.feed.post\n"), "{out}");
    assert!(!out.contains("like") && !out.contains("#identity"), "{out}");
}

#[test]
fn bad_lists_are_usage_errors() {
    let synth = |flag: &str, value: &str| refused(&["synth", "-o", "/dev/null", flag, value]);
    let err = synth("--mix", "1,2");
    assert!(
        err.contains("--mix takes 5 comma-separated values, got 2"),
        "{err}"
    );
    let err = synth("--actions", "1,0,0,0");
    assert!(
        err.contains("--actions takes 3 comma-separated values, got 4"),
        "{err}"
    );
    let err = synth("--kinds", "0.1,x,0");
    assert!(
        err.contains("invalid value 'x' for '--kinds") && err.contains("a number >= 0"),
        "{err}"
    );
    let err = synth("--mix", "0.7,-1,0,0,0");
    assert!(err.contains("invalid value '-1' for '--mix"), "{err}");
    let err = synth("--mst-nodes", "3");
    assert!(
        err.contains("--mst-nodes takes 2 comma-separated values, got 1"),
        "{err}"
    );
    let err = synth("--start-time", "yesterday");
    assert!(err.contains("RFC 3339"), "{err}");
    let err = refused(&["replay", "--drop-after", "100,x", "capture.bin"]);
    assert!(err.contains("invalid value 'x' for '--drop-after"), "{err}");
    let err = refused(&["replay", "--speed", "fast", "capture.bin"]);
    assert!(err.contains("\"max\" or a positive number"), "{err}");
}

/// `staging probe` says a relay answers when it does, and fails with the reason, quickly,
/// when nothing listens (deploy/run.sh falls back to the staging relay on that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_tells_a_live_relay_from_a_dead_one() {
    let capture = common::corpus();
    let relay = staging::replay::spawn(capture, Default::default())
        .await
        .unwrap();
    let url = format!("ws://{}", relay.addr());
    let probe = |url: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_staging"))
                .args(["probe", "--url", &url, "--timeout", "3"])
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    let up = probe(url.clone()).await.unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(String::from_utf8_lossy(&up.stdout).contains("answers"));

    let closed = free_port();
    let started = std::time::Instant::now();
    let down = probe(format!("ws://127.0.0.1:{closed}")).await.unwrap();
    assert_eq!(down.status.code(), Some(1));
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(err.contains(&format!("127.0.0.1:{closed}")), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "a refused connection is reported at once"
    );
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    testkit::free_port().unwrap()
}
