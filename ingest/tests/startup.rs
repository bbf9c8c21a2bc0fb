//! What stops the binary at start, with a message naming the problem.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::io::Write;
use std::process::{Command, Output};

fn ingest(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingest"));
    cmd.args(args).env("BSKY_INGEST_METRICS__LISTEN", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ingest")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn unknown_key_in_the_config_file_is_named() {
    let mut f = tempfile::NamedTempFile::new().expect("tmp");
    writeln!(
        f,
        "[nats]\nurl = \"nats://127.0.0.1:1\"\nreconect_wait = \"1s\""
    )
    .expect("write");
    let out = ingest(&["--config", &f.path().to_string_lossy()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("reconect_wait"), "{}", stderr(&out));
}

#[test]
fn unknown_environment_variable_is_named() {
    let out = ingest(&[], &[("BSKY_INGEST_RELAY__URLL", "ws://x")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("urll"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_values_are_named() {
    let out = ingest(&["--relay", "http://bsky.network"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("relay.url"), "{}", stderr(&out));
    let out = ingest(&["--config", "/nonexistent/ingest.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/ingest.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_documents_every_setting() {
    let out = ingest(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "--relay",
        "--nats",
        "--config",
        "BSKY_INGEST_",
        "max_frame_bytes",
        "idle_timeout",
        "creds_file",
        "nkey_seed",
        "tls_ca",
        "token",
        "password",
        "max_age",
        "max_bytes",
        "replicas",
        "duplicate_window",
        "compression",
        "window",
        "ack_timeout",
        "bucket",
        "save_interval",
        "listen",
        "progress_interval",
    ] {
        assert!(help.contains(key), "--help does not mention {key}");
    }
}

#[test]
fn nats_server_2_9_is_refused() {
    let Some(legacy) = testkit::legacy_server_or_skip("nats_server_2_9_is_refused") else {
        return;
    };
    let nats = testkit::NatsServer::start_with_binary(&legacy).expect("nats-server 2.9");
    assert!(nats.version().starts_with("2.9"), "{}", nats.version());
    let out = ingest(&["--nats", &nats.url(), "--relay", "ws://127.0.0.1:9"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&nats.version()) && err.contains("2.10"),
        "{err}"
    );
}
