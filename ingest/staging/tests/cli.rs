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
