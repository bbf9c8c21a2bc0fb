//! Shared by the charts tests: running charts (in-process or the real binary), asking its
//! status over HTTP, reading its tables.
#![allow(dead_code)] // each test binary uses a part of this module
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use charts::config::Config;
use charts::query::{self, Window};
use kit::Start;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(180);

/// A charts configuration for a test: this server, this database, a free port.
pub fn config(nats_url: &str, db: &Path, durable: &str) -> Config {
    let mut c = Config::default();
    c.nats.url = nats_url.into();
    c.state.path = db.to_path_buf();
    c.state.synchronous = kit::config::Synchronous::Normal;
    c.consumer.durable = durable.into();
    c.consumer.status_interval = Duration::from_millis(200);
    c.http.listen = format!("127.0.0.1:{}", testkit::free_port().unwrap());
    c
}

/// charts running in this process.
pub struct InProcess {
    pub addr: SocketAddr,
    pub db: PathBuf,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), kit::ServiceError>>,
}

impl InProcess {
    pub fn start(config: Config, start: Start) -> InProcess {
        let shutdown = CancellationToken::new();
        let addr = config.http.listen.parse().unwrap();
        let db = config.state.path.clone();
        let task = tokio::spawn(charts::run(config, start, shutdown.clone()));
        InProcess {
            addr,
            db,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

pub use testkit::http::get;

/// Waits until charts at `addr` reports nothing pending with the stream at `last_seq`.
pub async fn wait_caught_up(
    addr: SocketAddr,
    last_seq: u64,
    timeout: Duration,
) -> serde_json::Value {
    let start = Instant::now();
    let mut last = serde_json::Value::Null;
    while start.elapsed() < timeout {
        if let Ok((200, body)) = get(addr, "/api/status").await {
            last = serde_json::from_str(&body).unwrap();
            let p = &last["progress"];
            if p["known"] == true
                && p["pending"] == 0
                && p["stream_last_seq"].as_u64() >= Some(last_seq)
            {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("charts at {addr} not caught up with {last_seq} after {timeout:?}: {last}");
}

/// Every figure in the database.
pub fn tables(db: &Path) -> Window {
    let conn = kit::state::open_reader(db).unwrap();
    query::between(&conn, 0, 4_000_000_000, true).unwrap()
}

/// Waits until the ingestor stopped adding to the stream; its last sequence.
pub async fn settled(nats_url: &str) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let now = kit::testing::stream_last_seq(&js, "BSKY")
            .await
            .unwrap_or(0);
        if now > 0 && now == last {
            return now;
        }
        last = now;
    }
}

/// The capture of the live-versus-burst and crash tests: 50,000 ops, event times from
/// 2026-07-04T20:00Z at one event per second, so they span two UTC days.
pub fn two_days() -> (
    std::sync::Arc<staging::capture::Capture>,
    staging::synth::SynthReport,
) {
    kit::testing::synth(50_000, 20261128, 1_783_195_200_000_000, 1.0).unwrap()
}

/// A stream like the ingestor's on `nats`, to publish contract payloads into by hand.
pub async fn own_stream(nats: &testkit::NatsServer) -> async_nats::jetstream::Context {
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(ingest::stream::stream_config(
        &ingest::config::Config::default().stream,
    ))
    .await
    .unwrap();
    js
}

/// One commit create to publish by hand.
pub struct Op {
    pub did: String,
    pub time_us: i64,
    pub collection: &'static str,
    /// The post's `langs`, for posts.
    pub langs: Vec<&'static str>,
}

/// Publishes `ops` in order (acks awaited together); the stream's last sequence.
pub async fn publish(js: &async_nats::jetstream::Context, ops: &[Op]) -> u64 {
    let mut acks = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let body = kit::testing::commit_json(
            &op.did,
            op.time_us,
            op.collection,
            "create",
            &format!("k{i}"),
        );
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if !op.langs.is_empty() {
            v["commit"]["record"]["langs"] = op.langs.clone().into();
        }
        let subject = contract::subject::collection(contract::Nsid::parse(op.collection).unwrap());
        acks.push(js.publish(subject, v.to_string().into()).await.unwrap());
    }
    let mut last = 0;
    for a in acks {
        last = a.await.unwrap().sequence;
    }
    last
}

/// Midnight UTC (µs) `days` days before today's.
pub fn days_ago(days: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now / 86_400 - days) * 86_400_000_000
}
