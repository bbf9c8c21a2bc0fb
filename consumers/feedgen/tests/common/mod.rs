//! Shared by the feedgen tests: running feedgen in this process, a stream filled by hand,
//! asking its endpoints over HTTP, waiting until it has indexed everything.
#![allow(dead_code)] // each test binary uses a part of this module
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use feedgen::config::{Config, Feed};
use kit::Start;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(180);
pub const T0: i64 = 1_783_175_887_000_000; // 2026-07-04T14:38:07Z

/// A feedgen configuration for a test: this server, this database, a free port, `feeds`.
pub fn config(nats_url: &str, db: &Path, durable: &str, feeds: Vec<Feed>) -> Config {
    let mut c = Config::default();
    c.nats.url = nats_url.into();
    c.state.path = db.to_path_buf();
    c.state.synchronous = kit::config::Synchronous::Normal;
    c.consumer.durable = durable.into();
    c.consumer.status_interval = Duration::from_millis(200);
    c.consumer.linger = Duration::from_millis(10);
    c.http.listen = format!("127.0.0.1:{}", testkit::free_port().unwrap());
    c.feeds = feeds;
    c
}

pub fn feed(name: &str) -> Feed {
    Feed {
        name: name.into(),
        ..Feed::default()
    }
}

/// feedgen running in this process.
pub struct InProcess {
    pub addr: SocketAddr,
    pub db: PathBuf,
    pub config: Config,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), kit::ServiceError>>,
}

impl InProcess {
    pub async fn start(config: Config, start: Start) -> InProcess {
        let shutdown = CancellationToken::new();
        let addr: SocketAddr = config.http.listen.parse().unwrap();
        let db = config.state.path.clone();
        let task = tokio::spawn(feedgen::run(config.clone(), start, shutdown.clone()));
        // Serving once the index exists and the port is bound.
        let t = Instant::now();
        while get(addr, "/healthz").await.ok().map(|r| r.0) != Some(200) {
            assert!(t.elapsed() < WAIT, "feedgen did not start");
            assert!(!task.is_finished(), "feedgen stopped at start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        InProcess {
            addr,
            db,
            config,
            shutdown,
            task,
        }
    }

    /// The at-uri of the configured feed `name`.
    pub fn uri(&self, name: &str) -> String {
        let f = self.config.feeds.iter().find(|f| f.name == name).unwrap();
        self.config.feed_uri(f)
    }

    /// `getFeedSkeleton` of feed `name`: (status, body).
    pub async fn skeleton(&self, name: &str, extra: &str) -> (u16, serde_json::Value) {
        let feed: String =
            url::form_urlencoded::byte_serialize(self.uri(name).as_bytes()).collect();
        let (code, body) = get(
            self.addr,
            &format!("/xrpc/app.bsky.feed.getFeedSkeleton?feed={feed}{extra}"),
        )
        .await
        .unwrap();
        (
            code,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// The post at-uris of a `getFeedSkeleton` answer.
pub fn posts(body: &serde_json::Value) -> Vec<String> {
    body["feed"]
        .as_array()
        .unwrap_or_else(|| panic!("no feed in {body}"))
        .iter()
        .map(|p| p["post"].as_str().unwrap().to_string())
        .collect()
}

pub use testkit::http::get;

/// The stream sequence of the last post op in the stream (0: none).
pub async fn last_post_seq(nats_url: &str) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    stream
        .get_last_raw_message_by_subject(feedgen::SUBJECT)
        .await
        .map_or(0, |m| m.sequence)
}

/// The committed position in `db` (0 before the first commit).
pub fn position(db: &Path) -> u64 {
    kit::state::open_reader(db)
        .ok()
        .and_then(|c| kit::state::load(&c).ok().flatten())
        .map_or(0, |p| p.seq)
}

/// Waits until feedgen at `addr` reports nothing pending with the stream at its last
/// post op (its status is known only after a rebuild at start is done).
pub async fn wait_indexed(nats_url: &str, addr: SocketAddr) {
    let last = last_post_seq(nats_url).await;
    let t = Instant::now();
    let mut seen = serde_json::Value::Null;
    while t.elapsed() < WAIT {
        if let Ok((200, body)) = get(addr, "/status").await {
            seen = serde_json::from_str(&body).unwrap();
            let p = &seen["progress"];
            if p["known"] == true && p["pending"] == 0 && p["seq"].as_u64() >= Some(last) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("feedgen at {addr} has not indexed up to {last} after {WAIT:?}: {seen}");
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

/// A stream `BSKY` with the ingestor's settings, filled by hand.
pub struct HandStream {
    pub nats: testkit::NatsServer,
    js: async_nats::jetstream::Context,
}

impl HandStream {
    pub async fn start() -> HandStream {
        let nats = testkit::NatsServer::start().unwrap();
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        let cfg = ingest::stream::stream_config(&ingest::config::Config::default().stream);
        js.create_stream(cfg).await.unwrap();
        HandStream { nats, js }
    }

    /// Publishes one contract payload on the post subject; its stream sequence.
    pub async fn publish(&self, payload: String) -> u64 {
        self.js
            .publish(feedgen::SUBJECT, payload.into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence
    }
}

/// A post create at event time `t` whose record says it was created at `created`.
pub fn create(did: &str, rkey: &str, t: i64, created: i64, text: &str) -> String {
    let record = serde_json::json!({
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": staging::time::format_rfc3339_millis(created),
        "langs": ["en"],
    });
    serde_json::json!({
        "did": did, "time_us": t, "kind": "commit",
        "commit": {
            "rev": "3mptbypluud2a", "operation": "create", "collection": "app.bsky.feed.post",
            "rkey": rkey, "record": record,
            "cid": "bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5kpqcsgz7soqqru",
        },
    })
    .to_string()
}

/// A post delete.
pub fn delete(did: &str, rkey: &str, t: i64) -> String {
    kit::testing::commit_json(did, t, "app.bsky.feed.post", "delete", rkey)
}

pub fn uri(did: &str, rkey: &str) -> String {
    format!("at://{did}/app.bsky.feed.post/{rkey}")
}
