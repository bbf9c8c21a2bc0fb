//! What `any_order.rs` and `undisturbed.rs` share: the shipped configuration's users, and
//! the whole stack started in this process through the `run` functions the `main`s call.
#![allow(dead_code)] // each test file uses a part
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use async_nats::Client;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a service's `run` ended with.
pub type Ended = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub fn password(user: &str) -> String {
    testkit::deploy::password(user).expect(user).to_string()
}

/// A service's `[nats]` table for a user of `deploy/accounts.conf`.
pub fn nats_settings(url: &str, user: &str) -> service::nats::Settings {
    service::nats::Settings {
        url: url.into(),
        user: Some(user.into()),
        password: Some(password(user)),
        name: user.into(),
        ..Default::default()
    }
}

/// A client of `user` with its own inbox prefix, as the shipped permissions require.
pub async fn connect(url: &str, user: &str) -> Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
        .custom_inbox_prefix(format!("_INBOX_{user}"))
        .connect(url)
        .await
        .expect(user)
}

/// Waits until `check` holds; fails the test after `patience`.
pub async fn until<F: Future<Output = bool>>(
    what: &str,
    patience: Duration,
    mut check: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < patience, "{what}: not after {patience:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `durable` on stream BSKY has delivered something and has nothing pending or
/// unacked (its filter may end before the stream's last message).
pub async fn until_consumed(
    js: &async_nats::jetstream::Context,
    durable: &str,
    patience: Duration,
) {
    until(&format!("{durable} reads everything"), patience, || async {
        let Ok(stream) = js.get_stream("BSKY").await else {
            return false;
        };
        match stream.consumer_info(durable).await {
            Ok(c) => {
                c.delivered.stream_sequence > 0 && c.num_pending == 0 && c.num_ack_pending == 0
            }
            Err(_) => false,
        }
    })
    .await
}

/// `GET path` on a loopback port: (status, body); status 0 when nothing answers.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    testkit::http::get(addr, path)
        .await
        .unwrap_or((0, String::new()))
}

/// The services of one stack, running as tasks of this process.
pub struct Stack {
    pub tasks: Vec<(&'static str, JoinHandle<Ended>)>,
    pub ingest_port: u16,
    pub charts_port: u16,
    pub feedgen_port: u16,
    /// feedgen's one feed, which holds every post.
    pub feed_uri: String,
}

fn spawn<E>(run: impl Future<Output = Result<(), E>> + Send + 'static) -> JoinHandle<Ended>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::spawn(async move { run.await.map_err(Into::into) })
}

fn free() -> u16 {
    testkit::free_port().expect("port")
}

impl Stack {
    /// ingest (from `relay`; `stream.max_bytes` when given), charts and feedgen (states under
    /// `dir`), each as its own user of the shipped configuration.
    pub fn start(
        relay: &staging::replay::RelayHandle,
        url: &str,
        max_bytes: Option<i64>,
        dir: &Path,
        shutdown: &CancellationToken,
    ) -> Stack {
        let mut ingest = ingest::testing::config(relay, url);
        ingest.nats = nats_settings(url, "ingest");
        if let Some(max) = max_bytes {
            ingest.stream.max_bytes = max;
        }
        let ingest_port = free();
        ingest.metrics.listen = format!("127.0.0.1:{ingest_port}");

        let mut charts = charts::config::Config {
            nats: nats_settings(url, "charts"),
            ..Default::default()
        };
        charts.state.path = dir.join("charts.db");
        let charts_port = free();
        charts.http.listen = format!("127.0.0.1:{charts_port}");

        let mut feedgen = feedgen::config::Config {
            nats: nats_settings(url, "feedgen"),
            ..Default::default()
        };
        feedgen.state.path = dir.join("feedgen.db");
        let feedgen_port = free();
        feedgen.http.listen = format!("127.0.0.1:{feedgen_port}");
        feedgen.feeds = vec![feedgen::config::Feed {
            name: "all".into(),
            ..Default::default()
        }];
        let feed_uri = feedgen.feed_uri(&feedgen.feeds[0]);

        let resume = kit::Start::Resume;
        let tasks = vec![
            ("ingest", spawn(ingest::run(ingest, shutdown.clone()))),
            (
                "charts",
                spawn(charts::run(charts, resume, shutdown.clone())),
            ),
            (
                "feedgen",
                spawn(feedgen::run(feedgen, resume, shutdown.clone())),
            ),
        ];
        Stack {
            tasks,
            ingest_port,
            charts_port,
            feedgen_port,
            feed_uri,
        }
    }

    /// The gateway with its own mirror, as its user; returns its port.
    pub fn start_gateway(&mut self, url: &str, shutdown: &CancellationToken) -> u16 {
        let mut gw = gateway::config::Config {
            nats: nats_settings(url, "gateway"),
            ..Default::default()
        };
        gw.stream.mirror = Some(gateway::config::Mirror::default());
        let port = free();
        gw.http.listen = format!("127.0.0.1:{port}");
        self.tasks
            .push(("gateway", spawn(gateway::run(gw, shutdown.clone()))));
        port
    }
}
