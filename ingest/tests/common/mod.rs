//! Shared by the ingest end-to-end tests: a real nats-server (testkit), the staging relay
//! in-process, and the real `ingest` binary as a child process.
#![allow(dead_code, unused_imports)] // each test binary uses a part of this module
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::Value;
use staging::capture::Capture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use rand::{rngs::SmallRng, Rng, SeedableRng};
pub use staging::fixtures::{event_key, CORPUS_FIRST_SEQ};
pub use testkit::ChildGuard;

pub fn corpus() -> Arc<Capture> {
    Arc::new(staging::fixtures::corpus().expect("corpus"))
}

/// `expected_v1.jsonl`, keyed by [`event_key`].
pub fn expected() -> HashMap<String, Value> {
    staging::fixtures::expected_by_key().expect("expected_v1.jsonl")
}

pub fn free_port() -> u16 {
    testkit::free_port().expect("free port")
}

/// A seeded PRNG for a test's fault schedule; the seed is printed, so a failure can be
/// replayed.
pub fn schedule_rng() -> SmallRng {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    eprintln!("schedule seed: {seed}");
    SmallRng::seed_from_u64(seed)
}

/// The two publish paths a fault test can run on (see `ingest::publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishPath {
    /// Fast-ingest batches: the default on nats-server 2.14.
    Batched,
    /// One ack per message (`publish.batch = false`): the stream is left without
    /// `allow_batched`, as on a server or stream that does not allow batches.
    PerMessage,
}

impl PublishPath {
    /// The settings that choose this path.
    pub fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            PublishPath::Batched => vec![],
            PublishPath::PerMessage => vec![("BSKY_INGEST_PUBLISH__BATCH", "false")],
        }
    }

    /// `base` plus the settings that choose this path.
    pub fn with<'a>(self, base: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = base.to_vec();
        env.extend(self.env());
        env
    }

    /// A log file name for a test on this path.
    pub fn name(self, test: &str) -> String {
        match self {
            PublishPath::Batched => format!("{test}-batched"),
            PublishPath::PerMessage => format!("{test}-per-message"),
        }
    }

    /// Checks that the ingestor took this path: its log says so, and the stream allows
    /// batches exactly when it does.
    pub async fn assert_taken(self, js: &jetstream::Context, ingest: &Ingest) {
        let log = ingest.log_text();
        let said = match self {
            PublishPath::Batched => "publish path: fast-ingest batches",
            PublishPath::PerMessage => "publish path: one ack per message",
        };
        assert!(
            log.contains(said),
            "{said:?} not in the log\n{}",
            ingest.log_tail()
        );
        let allowed = js
            .get_stream("BSKY")
            .await
            .expect("BSKY")
            .info()
            .await
            .expect("info")
            .config
            .allow_batch_publish;
        assert_eq!(allowed, self == PublishPath::Batched, "allow_batched");
    }
}

/// The `ingest` binary as a child process; killed on drop.
pub struct Ingest {
    pub child: ChildGuard,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Ingest {
    pub fn spawn(
        relay: &str,
        nats: &str,
        name: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Ingest {
        let metrics_port = free_port();
        let dir = testkit::workspace_root().join("target/test-logs");
        let _ = std::fs::create_dir_all(&dir);
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ingest"));
        cmd.args(["--relay", relay, "--nats", nats])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(args)
            .env("BSKY_INGEST_LOG__PROGRESS_INTERVAL", "1s")
            .env("BSKY_INGEST_RELAY__RECONNECT_MIN", "50ms")
            .env("BSKY_INGEST_RELAY__RECONNECT_MAX", "500ms")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = ChildGuard(cmd.spawn().expect("spawn ingest"));
        Ingest {
            child,
            metrics_port,
            log,
        }
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child.alive()
    }

    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Everything this ingestor (this `name`) logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the exit; panics (with the log) when it runs past `timeout`.
    pub fn exit_within(&mut self, timeout: Duration) -> std::process::ExitStatus {
        match self.child.wait_timeout(timeout) {
            Some(s) => s,
            None => panic!("still running after {timeout:?}\n{}", self.log_tail()),
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The value of one metric line, e.g. `bsky_ingest_skipped_total{reason="bad_path"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.metrics_port));
        let (_, body) = testkit::http::get(addr, "/metrics").await.ok()?;
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l[series.len()..].trim().parse().ok())
    }

    /// Waits until a metric reaches at least `min`.
    pub async fn wait_metric(&self, series: &str, min: f64, timeout: Duration) -> f64 {
        let start = Instant::now();
        loop {
            let v = self.metric(series).await.unwrap_or(0.0);
            if v >= min {
                return v;
            }
            if start.elapsed() > timeout {
                panic!("{series} = {v}, wanted >= {min}\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn jetstream(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .expect("connect to test nats");
    jetstream::new(client)
}

/// Messages in the stream right now (0 if it does not exist yet).
pub async fn stream_count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until the stream holds `n` messages, then a little longer (500 ms), so that a
/// message too many would be there for the caller's assertions to see.
pub async fn wait_count(
    js: &jetstream::Context,
    stream: &str,
    n: u64,
    timeout: Duration,
    ingest: &Ingest,
) {
    let start = Instant::now();
    loop {
        let c = stream_count(js, stream).await;
        if c >= n {
            break;
        }
        if start.elapsed() > timeout {
            panic!(
                "stream {stream} has {c} messages, wanted {n}\n{}",
                ingest.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Waits until the stream `BSKY` holds as many messages as `expected`, then checks that it
/// holds each of them exactly once ([`assert_exact`]).
pub async fn wait_exact(
    js: &jetstream::Context,
    expected: &HashMap<String, (String, Value)>,
    timeout: Duration,
    ingest: &Ingest,
) {
    wait_count(js, "BSKY", expected.len() as u64, timeout, ingest).await;
    assert_exact(js, expected).await;
}

/// One stored message.
#[derive(Debug, Clone)]
pub struct Stored {
    pub stream_seq: u64,
    pub subject: String,
    pub msg_id: String,
    pub relay_seq: i64,
    pub json: Value,
}

/// Every message of the stream, read by a pull consumer with explicit acks.
pub async fn read_all(js: &jetstream::Context, stream: &str) -> Vec<Stored> {
    read_with(
        js,
        stream,
        consumer::pull::Config {
            filter_subject: "bsky.>".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        },
    )
    .await
}

/// Every message of the stream, read through the durable pull consumer `durable`
/// (created if missing) with explicit acks: what a service such as charts does.
pub async fn read_durable(js: &jetstream::Context, stream: &str, durable: &str) -> Vec<Stored> {
    read_with(
        js,
        stream,
        consumer::pull::Config {
            durable_name: Some(durable.to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        },
    )
    .await
}

async fn read_with(
    js: &jetstream::Context,
    stream: &str,
    config: consumer::pull::Config,
) -> Vec<Stored> {
    let mut s = js.get_stream(stream).await.expect("stream");
    let total = s.info().await.expect("info").state.messages;
    let c = s.create_consumer(config).await.expect("consumer");
    let mut out = Vec::new();
    let mut msgs = c.messages().await.expect("messages");
    while (out.len() as u64) < total {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("message in time")
            .expect("stream open")
            .expect("message");
        let info = m.info().expect("info");
        let headers = m.headers.clone().unwrap_or_default();
        let get = |h: &str| {
            headers
                .get(h)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default()
        };
        let json: Value = serde_json::from_slice(&m.payload).expect("payload JSON");
        out.push(Stored {
            stream_seq: info.stream_sequence,
            subject: m.subject.to_string(),
            msg_id: firehose::event_id(&m.payload).expect("a contract event"),
            relay_seq: get("Bsky-Seq").parse().expect("Bsky-Seq header"),
            json,
        });
        m.ack().await.expect("ack");
    }
    out
}

pub async fn relay(
    capture: Arc<Capture>,
    opts: staging::replay::ReplayOptions,
) -> staging::replay::RelayHandle {
    staging::replay::spawn(capture, opts)
        .await
        .expect("staging relay")
}

pub fn relay_base(h: &staging::replay::RelayHandle) -> String {
    format!("ws://{}", h.addr())
}

/// A synthesized capture of about `ops` record ops (deterministic from `seed`).
pub fn synth(ops: u64, seed: u64) -> Arc<Capture> {
    use staging::synth::{synthesize, Source, SynthConfig};
    let source = Source::load(staging::fixtures::calabro()).expect("calabro.car");
    let cfg = SynthConfig {
        seed,
        ops,
        start_seq: 1_000_000,
        repos: 2_000,
        big_every: ops / 2,
        ..SynthConfig::default()
    };
    let mut w = staging::capture::CaptureWriter::new(Vec::new(), None).expect("writer");
    synthesize(&source, cfg, &mut w).expect("synthesize");
    Arc::new(Capture::from_bytes(w.finish().expect("finish")).expect("capture"))
}

/// What the stream must hold for a capture: every message the decoder makes, by id.
pub fn expected_messages(c: &Capture) -> HashMap<String, (String, Value)> {
    let mut out = HashMap::new();
    for f in c.frames() {
        if let firehose::Decoded::Event(d) = firehose::decode(&f.bytes) {
            for m in d.messages {
                let v: Value = serde_json::from_slice(&m.payload).expect("json");
                assert!(
                    out.insert(m.id(), (m.subject, v)).is_none(),
                    "ids are unique"
                );
            }
        }
    }
    out
}

/// Where each message of a capture must sit: (relay seq, index in its frame), by id.
pub fn expected_order(c: &Capture) -> HashMap<String, (i64, usize)> {
    let mut out = HashMap::new();
    for f in c.frames() {
        if let firehose::Decoded::Event(d) = firehose::decode(&f.bytes) {
            for (i, m) in d.messages.into_iter().enumerate() {
                out.insert(m.id(), (d.seq, i));
            }
        }
    }
    out
}

/// The stream is in relay order, and a commit's ops in op order (subjects.md, "Order").
pub async fn assert_order(js: &jetstream::Context, c: &Capture) {
    assert_order_stored(&read_all(js, "BSKY").await, c);
}

/// `stored` is in relay order, and a commit's ops in op order (subjects.md, "Order").
pub fn assert_order_stored(stored: &[Stored], c: &Capture) {
    let order = expected_order(c);
    let places: Vec<(i64, usize)> = stored
        .iter()
        .map(|m| *order.get(&m.msg_id).expect("a message of the capture"))
        .collect();
    for (i, w) in places.windows(2).enumerate() {
        assert!(
            w[0] < w[1],
            "stream seq {}: {:?} then {:?}",
            stored[i + 1].stream_seq,
            w[0],
            w[1]
        );
    }
    for m in stored {
        assert_eq!(order[&m.msg_id].0, m.relay_seq, "Bsky-Seq of {}", m.msg_id);
    }
}

/// The stream holds each expected message exactly once, with the right subject and content.
pub async fn assert_exact(js: &jetstream::Context, expected: &HashMap<String, (String, Value)>) {
    assert_exact_stored(&read_all(js, "BSKY").await, expected);
}

/// `stored` holds each expected message exactly once, with the right subject and content.
pub fn assert_exact_stored(stored: &[Stored], expected: &HashMap<String, (String, Value)>) {
    let mut seen = std::collections::HashSet::new();
    for m in stored {
        assert!(
            seen.insert(m.msg_id.clone()),
            "duplicate in stream: {}",
            m.msg_id
        );
        let (subject, json) = expected
            .get(&m.msg_id)
            .unwrap_or_else(|| panic!("unexpected message {}", m.msg_id));
        assert_eq!(&m.subject, subject);
        assert_eq!(&m.json, json, "content of {}", m.msg_id);
    }
    assert_eq!(stored.len(), expected.len(), "every op exactly once");
}

pub use testkit::deploy::{server_env, USERS};

/// The test password of `user`.
pub fn password(user: &str) -> &'static str {
    testkit::deploy::password(user).expect("a user of deploy/accounts.conf")
}

/// `user`'s password in a file under `dir`, for `nats.password_file`.
pub fn password_file(dir: &std::path::Path, user: &str) -> PathBuf {
    let path = dir.join(format!("{user}.password"));
    std::fs::write(&path, format!("{}\n", password(user))).expect("password file");
    path
}

/// A client connected as `user` (with its test password and its own inbox prefix,
/// `_INBOX_<user>`, as `deploy/accounts.conf` requires); the server's asynchronous errors,
/// such as permission violations, arrive on the receiver.
pub async fn connect_as(
    url: &str,
    user: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password(
        user.to_string(),
        password(user).to_string(),
    )
    .custom_inbox_prefix(format!("_INBOX_{user}"))
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
        }
    })
    .connect(url)
    .await
    .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    (client, rx)
}

/// Waits up to `timeout` for a server error mentioning a permissions violation.
pub async fn permission_error(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
    timeout: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(async_nats::Event::ServerError(e))) => {
                let text = e.to_string();
                if text.to_lowercase().contains("permissions violation") {
                    return Some(text);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}
