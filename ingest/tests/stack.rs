//! The README's main command, `bash deploy/run.sh`, as a person runs it on a machine
//! without internet: the live relay does not answer, so it says so and falls back to the
//! staging relay; nats-server, the ingestor and every consumer that was built come up and
//! answer (the archiver reads through its durable as its own user); Ctrl-C (SIGINT to the
//! script's process group) stops all of it and leaves no process behind.
//!
//! The binaries are the ones this test run built (`target/debug`), passed as
//! `BSKY_BIN_DIR`, so the script does not build the workspace again. Every port is a free
//! one outside the kernel's ephemeral range (`testkit::free_port`), so no outgoing
//! connection takes it between the test choosing it and run.sh's service binding it; the
//! "live relay" is a loopback port nothing listens on: no traffic leaves the machine.
//!
//! Ctrl-C is SIGINT, and a shell cannot trap a signal that was ignored when it started:
//! a suite started in the background (`nohup bash deploy/test.sh &`) inherits SIGINT as
//! ignored. So the script is started through `env --default-signal=INT`, which gives it
//! the default disposition back before bash starts, as a terminal's shell would have it
//! ([`sigint_reaches_a_script_even_when_the_suite_ignores_it`] proves the wrapper).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream;
use common::*;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The consumers `deploy/run.sh` starts when their binary exists: name, the path a person
/// opens, and the status that path must answer with.
const CONSUMERS: [(&str, &str, u16); 3] = [
    ("charts", "/", 200),
    ("feedgen", "/xrpc/app.bsky.feed.getFeedSkeleton", 400),
    ("gateway", "/subscribe", 400),
];

/// `deploy/run.sh` in its own process group, with a marker in its environment that every
/// process it starts inherits. Dropping it (a failed test) interrupts it like Ctrl-C, then
/// kills whatever still carries the marker.
struct Stack {
    child: testkit::ChildGuard,
    marker: String,
    log: PathBuf,
}

impl Stack {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ctrl-C: SIGINT to the script's whole process group, as a terminal sends it.
    fn ctrl_c(&self) {
        let status = Command::new("kill")
            .args(["-INT", "--", &format!("-{}", self.child.id())])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if self.child.alive() {
            self.ctrl_c();
            self.child.wait_timeout(Duration::from_secs(30));
        }
        for pid in marked_processes(&self.marker) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Live processes whose environment holds `BSKY_STACK_TEST_MARKER=<marker>`.
fn marked_processes(marker: &str) -> Vec<u32> {
    let needle = format!("BSKY_STACK_TEST_MARKER={marker}");
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue; // gone meanwhile, or a zombie
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// `bash`, with SIGINT at its default disposition whatever this process inherited, so the
/// script's `trap ... INT` takes effect (bash cannot trap a signal ignored at its start).
fn interruptible_bash() -> Command {
    let mut cmd = Command::new("env");
    cmd.args(["--default-signal=INT", "bash"]);
    cmd
}

/// A script that traps SIGINT and sends it to itself, started from a parent that ignores
/// SIGINT (as a background job's does): the trap fires only through
/// [`interruptible_bash`]; started plainly, the signal is lost and the script runs on.
#[test]
fn sigint_reaches_a_script_even_when_the_suite_ignores_it() {
    const SCRIPT: &str = "trap 'exit 42' INT; kill -INT $$; exit 0";
    let ignoring_parent = |args: &[&str]| {
        Command::new("bash")
            .args(["-c", "trap '' INT; exec \"$@\"", "_"])
            .args(args)
            .status()
            .expect("bash")
            .code()
    };
    assert_eq!(
        ignoring_parent(&["bash", "-c", SCRIPT]),
        Some(0),
        "plain bash under an ignored SIGINT cannot trap it"
    );
    let wrapped = interruptible_bash();
    let mut args: Vec<&str> = vec![wrapped.get_program().to_str().expect("utf-8")];
    args.extend(wrapped.get_args().map(|a| a.to_str().expect("utf-8")));
    args.extend(["-c", SCRIPT]);
    assert_eq!(
        ignoring_parent(&args),
        Some(42),
        "the wrapper restores SIGINT"
    );
}

/// The status code of `GET path` on 127.0.0.1:`port`.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).ok()?;
    let line = String::from_utf8_lossy(&head[..n]).into_owned();
    line.split_whitespace().nth(1)?.parse().ok()
}

fn http_body(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body
}

/// The directory of the binaries this test run built, if it holds what run.sh needs.
fn bin_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_BIN_EXE_ingest"))
        .parent()?
        .to_path_buf();
    if dir.join("staging").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{}/staging is missing: CI runs `cargo test --workspace` (deploy/test.sh), which builds it",
        dir.display()
    );
    eprintln!(
        "skipped: {}/staging is missing; run `cargo build -p staging` or the whole suite (bash deploy/test.sh)",
        dir.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_command_falls_back_to_staging_brings_up_the_stack_and_ctrl_c_leaves_nothing() {
    let Some(bins) = bin_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("stack");
    let log = tmp.path().join("run.log");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let marker = format!("{}-{nanos}", std::process::id());
    let nats_port = free_port();
    let monitor_port = free_port();
    let metrics_port = free_port();
    let nowhere = free_port(); // the "live relay": nothing listens there
    let consumer_ports: Vec<u16> = CONSUMERS.iter().map(|_| free_port()).collect();
    let archive_port = free_port();
    let file = std::fs::File::create(&log).expect("log");
    let mut cmd = interruptible_bash();
    cmd.arg(testkit::workspace_root().join("deploy/run.sh"))
        .env("BSKY_STACK_DIR", &state)
        .env("BSKY_BIN_DIR", &bins)
        .env("BSKY_LIVE_RELAY", format!("ws://127.0.0.1:{nowhere}"))
        .env("BSKY_PROBE_TIMEOUT", "3")
        .env("BSKY_STACK_NATS_PORT", nats_port.to_string())
        .env("BSKY_STACK_MONITOR_PORT", monitor_port.to_string())
        .env("BSKY_STACK_RELAY_PORT", free_port().to_string())
        .env("BSKY_STACK_METRICS_PORT", metrics_port.to_string())
        .env("BSKY_STACK_ARCHIVE_PORT", archive_port.to_string())
        .env("BSKY_STACK_TEST_MARKER", &marker)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .process_group(0);
    for ((name, _, _), port) in CONSUMERS.iter().zip(&consumer_ports) {
        cmd.env(
            format!("BSKY_STACK_{}_PORT", name.to_uppercase()),
            port.to_string(),
        );
    }
    let mut stack = Stack {
        child: testkit::ChildGuard(cmd.spawn().expect("bash deploy/run.sh")),
        marker,
        log,
    };

    // Up, and saying where to look.
    let start = Instant::now();
    while !stack.log().contains("run: ready") {
        assert!(stack.child.alive(), "run.sh exited:\n{}", stack.log());
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "not ready in 120 s:\n{}",
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = stack.log();
    assert!(
        out.contains("cannot be reached") && out.contains("falling back to the STAGING relay"),
        "the fallback is said plainly:\n{out}"
    );
    assert!(
        out.contains(&format!("nats://127.0.0.1:{nats_port}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("http://127.0.0.1:{metrics_port}/metrics")),
        "{out}"
    );

    // nats-server with the project's configuration: passwords required, JetStream on.
    assert_eq!(
        http_status(monitor_port, "/healthz?js-enabled-only=true"),
        Some(200)
    );
    assert!(
        async_nats::connect(format!("nats://127.0.0.1:{nats_port}"))
            .await
            .is_err(),
        "no anonymous access"
    );
    let operator_pw = std::fs::read_to_string(state.join("secrets/operator.password"))
        .expect("generated password");
    let client = async_nats::ConnectOptions::with_user_and_password(
        "operator".into(),
        operator_pw.trim().into(),
    )
    .custom_inbox_prefix("_INBOX_operator")
    .connect(format!("nats://127.0.0.1:{nats_port}"))
    .await
    .expect("operator connects");
    let js = jetstream::new(client);

    // The ingestor stores the staging relay's events: the whole bundled capture.
    let corpus_events = expected_messages(&corpus()).len() as u64;
    let start = Instant::now();
    while stream_count(&js, "BSKY").await < corpus_events {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "BSKY has {} of {corpus_events}\n{}",
            stream_count(&js, "BSKY").await,
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = http_body(metrics_port, "/metrics");
    assert!(metrics.contains("bsky_ingest_"), "{metrics}");

    // Every consumer that was built answers where run.sh said; the others are named as
    // skipped.
    for ((name, path, want), port) in CONSUMERS.iter().zip(&consumer_ports) {
        if bins.join(name).is_file() {
            assert!(
                out.contains(&format!("http://127.0.0.1:{port}{path}")),
                "{name} is listed:\n{out}"
            );
            assert_eq!(http_status(*port, path), Some(*want), "{name} {path}");
            if *name == "charts" {
                // run.sh passes BSKY_CHARTS_UPSTREAM__LABEL=staging on the staging relay.
                let page = http_body(*port, path);
                assert!(
                    page.to_lowercase().contains("staging"),
                    "the charts page marks staging data:\n{page}"
                );
            }
        } else {
            assert!(
                out.contains(&format!("{name}: not built")),
                "{name} is named as skipped:\n{out}"
            );
        }
    }

    // The archiver, as its own user `archive`: its durable exists and delivers (the
    // operator may read its info, not use it).
    if bins.join("archive").is_file() {
        assert!(
            out.contains(&format!("http://127.0.0.1:{archive_port}/metrics")),
            "the archiver is listed:\n{out}"
        );
        assert_eq!(http_status(archive_port, "/metrics"), Some(200));
        let start = Instant::now();
        loop {
            let delivered = match js.get_stream("BSKY").await {
                Ok(s) => s
                    .consumer_info("archive")
                    .await
                    .map(|c| c.delivered.stream_sequence)
                    .unwrap_or(0),
                Err(_) => 0,
            };
            if delivered > 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the archiver's durable delivers nothing:\n{}\n{}",
                std::fs::read_to_string(state.join("logs/archive.log")).unwrap_or_default(),
                stack.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        assert!(
            out.contains("archive: not built"),
            "archive is named as skipped:\n{out}"
        );
    }

    // Ctrl-C: everything stops, nothing is left.
    assert!(!marked_processes(&stack.marker).is_empty());
    stack.ctrl_c();
    let status = stack
        .child
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("run.sh still running 60 s after Ctrl-C:\n{}", stack.log()));
    assert_eq!(status.code(), Some(130), "{}", stack.log());
    let left = marked_processes(&stack.marker);
    assert!(left.is_empty(), "left behind: {left:?}\n{}", stack.log());
    assert!(http_status(monitor_port, "/healthz").is_none());
    assert!(std::net::TcpStream::connect(("127.0.0.1", nats_port)).is_err());
    // The archiver sealed what it held at its stop (segment, manifest entry, ack), and its
    // user was allowed everything it did.
    if bins.join("archive").is_file() {
        let log = std::fs::read_to_string(state.join("logs/archive.log")).unwrap_or_default();
        assert!(!log.contains("Permissions Violation"), "{log}");
        let sealed = std::fs::read_dir(state.join("archive/manifest"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(sealed > 0, "no segment sealed at the stop:\n{log}");
    }
}
