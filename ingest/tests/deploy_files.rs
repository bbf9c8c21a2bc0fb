//! The deployment files that cannot run here (compose, Dockerfile, systemd units, the
//! cluster's node files) are checked as far as this machine allows, so they stay
//! consistent with the configuration the other tests run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::server_env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    testkit::workspace_root()
}

/// Skips (printing why) outside CI; under CI a missing tool fails the test.
fn skip_unless_ci(test: &str, why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why}; CI must have it"
    );
    eprintln!("skipped {test}: {why}");
}

/// `docker-compose.yml` parses, has every service with a health check, and references only
/// files that exist (the generated secrets checked against what deploy/secrets.sh writes);
/// the Dockerfile's COPY sources exist.
#[test]
fn compose_file_parses_and_references_only_existing_files() {
    let secrets = tempfile::tempdir().unwrap();
    let made = Command::new("bash")
        .arg(root().join("deploy/secrets.sh"))
        .arg(secrets.path())
        .status()
        .expect("bash deploy/secrets.sh");
    assert!(made.success());
    let Ok(out) = Command::new("python3")
        .arg(root().join("deploy/check-compose.py"))
        .arg(secrets.path())
        .output()
    else {
        return skip_unless_ci("compose_file_parses…", "python3 is not installed");
    };
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(3) {
        return skip_unless_ci("compose_file_parses…", text.trim());
    }
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("check-compose: ok"), "{text}");
}

/// `deploy/secrets.sh` writes one private file per user and the server's view, and keeps
/// existing passwords on a second run.
#[test]
fn secrets_are_private_and_stable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let ok = Command::new("bash")
            .arg(root().join("deploy/secrets.sh"))
            .arg(dir.path().join("s"))
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    run();
    let first = std::fs::read_to_string(dir.path().join("s/ingest.password")).unwrap();
    run();
    let second = std::fs::read_to_string(dir.path().join("s/ingest.password")).unwrap();
    assert_eq!(first, second, "a second run keeps the password");
    let pw = first.trim();
    assert!(pw.len() >= 24 && pw.starts_with(|c: char| c.is_ascii_alphabetic()));
    let env = std::fs::read_to_string(dir.path().join("s/nats.env")).unwrap();
    for (user, var, _) in common::USERS {
        let line = env
            .lines()
            .find(|l| l.starts_with(&format!("{var}=")))
            .unwrap_or_else(|| panic!("{var} in nats.env"));
        let file = dir.path().join(format!("s/{user}.password"));
        let password = std::fs::read_to_string(&file).unwrap();
        assert_eq!(&line[var.len() + 1..], password.trim());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is private", file.display());
    }
}

/// Every unit passes `systemd-analyze verify`. The binaries are not installed here, so the
/// `/usr/local/bin/` paths point at stand-ins; everything else is verified as shipped.
#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip_unless_ci("systemd_units…", "systemd-analyze is not installed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in [
        "nats-server",
        "ingest",
        "charts",
        "feedgen",
        "gateway",
        "archive",
    ] {
        let stub = bin.join(name);
        std::fs::write(&stub, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut units = Vec::new();
    for entry in std::fs::read_dir(root().join("deploy/systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".service"), "unexpected file {name}");
        let text = std::fs::read_to_string(&path).unwrap();
        let copy = tmp.path().join(&name);
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin.display()));
        std::fs::write(&copy, text).unwrap();
        units.push(copy);
    }
    for service in ["ingest", "charts", "feedgen", "gateway", "archive", "nats"] {
        assert!(
            units
                .iter()
                .any(|u| u.ends_with(format!("bsky-{service}.service"))),
            "bsky-{service}.service"
        );
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    // verify exits 0 even for unknown keys; anything it prints is a finding.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// The cluster's node files are valid for nats-server (with the passwords set), and differ
/// where they must: server_name, every port, the store directory; each routes to all three.
#[test]
fn cluster_node_files_are_valid_and_distinct() {
    let binary = testkit::nats_server_binary().expect("nats-server");
    let mut seen: Vec<Vec<String>> = Vec::new();
    let mut route_ports = Vec::new();
    for i in 1..=3 {
        let file = root().join(format!("deploy/cluster/node-{i}.conf"));
        let out = Command::new(&binary)
            .args(["-t", "-c"])
            .arg(&file)
            .envs(server_env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let value = |key: &str| -> Vec<String> {
            text.lines()
                .map(str::trim)
                .filter(|l| l.starts_with(&format!("{key}:")))
                .map(|l| l[key.len() + 1..].trim().trim_matches('"').to_string())
                .collect()
        };
        let listens = value("listen");
        assert_eq!(listens.len(), 2, "client and cluster listen in node-{i}");
        route_ports.push(listens[1].rsplit(':').next().unwrap().to_string());
        let facts = vec![
            value("server_name").concat(),
            listens[0].clone(),
            listens[1].clone(),
            value("http").concat(),
            value("store_dir").concat(),
        ];
        assert!(facts.iter().all(|f| !f.is_empty()), "node-{i}: {facts:?}");
        for other in &seen {
            for (a, b) in facts.iter().zip(other) {
                assert_ne!(a, b, "node-{i} repeats another node's {a}");
            }
        }
        seen.push(facts);
        assert!(text.contains("include ../accounts.conf"), "node-{i}");
        assert!(text.contains("include ../jetstream.conf"), "node-{i}");
        assert!(text.contains("sync_interval"), "node-{i}");
    }
    for i in 1..=3 {
        let text =
            std::fs::read_to_string(root().join(format!("deploy/cluster/node-{i}.conf"))).unwrap();
        for port in &route_ports {
            assert!(
                text.contains(&format!("nats-route://127.0.0.1:{port}")),
                "node-{i} routes to {port}"
            );
        }
    }
    assert!(Path::new(&root().join("deploy/jetstream.conf")).is_file());
    let limits = std::fs::read_to_string(root().join("deploy/jetstream.conf")).unwrap();
    assert!(limits.contains("max_file_store"), "{limits}");
}
