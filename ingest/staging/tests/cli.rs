//! The `staging` binary end to end: synth then info, and info on the real corpus.
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
    let bad = Command::new(env!("CARGO_BIN_EXE_staging"))
        .args(["synth", "-o", "/dev/null", "--mix", "1,2"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--mix"));
}
