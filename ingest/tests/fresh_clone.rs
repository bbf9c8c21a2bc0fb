//! A fresh clone is enough: a copy of the repository with nothing beside it (no
//! `../shared`, no `.tools`) passes the README's test command. To stay quick it runs a part
//! of the suite there, the crates that read the bundled fixtures and start nats-servers:
//! `bash deploy/test.sh -p testkit -p staging`. The clone is of this checkout's HEAD commit;
//! it builds in `target/fresh-clone` (kept between runs) and uses the nats-server named by
//! `$NATS_SERVER_BIN` when set, the one explicit way in from outside.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::Command;

fn git(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_clone_with_nothing_beside_it_passes_the_test_command() {
    let root = testkit::workspace_root();
    if !root.join(".git").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs in a git clone; {} is not one",
            root.display()
        );
        eprintln!("skipped: {} is not a git checkout", root.display());
        return;
    }
    let head = git(&["rev-parse", "HEAD"], &root);
    let tmp = tempfile::tempdir().expect("tmp");
    let clone = tmp.path().join("repo");
    git(
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            root.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
        tmp.path(),
    );
    git(&["checkout", "--quiet", &head], &clone);
    let beside: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(beside.len(), 1, "nothing beside the clone");
    assert!(!clone.join(".tools").exists() && !clone.join("target").exists());

    let out = Command::new("bash")
        .arg("deploy/test.sh")
        .args(["-p", "testkit", "-p", "staging"])
        .current_dir(&clone)
        .env("CARGO_TARGET_DIR", root.join("target/fresh-clone"))
        .env_remove("BSKY_FIXTURES")
        .env_remove("STAGING_REPO_CAR")
        .output()
        .expect("bash deploy/test.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let passed: usize = text
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(
        passed >= 20,
        "the clone ran its tests ({passed} passed):\n{text}"
    );
    assert!(!text.contains("FAILED"), "{text}");
    assert!(
        !text.contains("/shared/"),
        "nothing is read from beside the checkout:\n{text}"
    );
}
