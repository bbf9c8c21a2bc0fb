//! Least privilege that holds under use: with the gateway and the operator doing whatever
//! their permissions let them try, charts and feedgen end with the same figures and feeds
//! as in an undisturbed run.
//!
//! Each run starts nats-server from the shipped configuration (`deploy/nats-server.conf`,
//! users and permissions from `deploy/accounts.conf`), replays the corpus through the real
//! ingestor, and runs charts and feedgen in this process through the `run` functions their
//! `main`s call. In the disturbed run, meanwhile, the gateway runs with its mirror and a
//! WebSocket client (which must receive every event), and the operator and the gateway's
//! own NATS user perform, round after round until charts and feedgen are done, every
//! operation of the permissions table of
//! `deploy/README.md` (the one `ingest/tests/permissions_matrix.rs` checks cell by cell)
//! with bodies meant to do harm: pull from the services' durables and ack what comes,
//! redefine them with a filter that matches nothing, delete them, purge the stream, publish
//! into `bsky.>`, write the cursor. Afterwards the operator replays the whole stream
//! through its own consumer. Compared: charts' `/api/hourly?range=2d` and
//! `/api/{daily,dau,langs}?range=all` (their windows end at the newest event, not at the
//! wall clock) and every page of feedgen's `getFeedSkeleton`.
//!
//! The ingestor's `/metrics` is also checked for the figures the "store near its limit"
//! and "lease flapping" alerts read (`deploy/monitoring/alerts.yml`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream::{self, consumer};
use async_nats::Client;
use futures_util::StreamExt;
use serde_json::Value;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common::{connect, get};

const PATIENCE: Duration = Duration::from_secs(120);

async fn until<F: Future<Output = bool>>(what: &str, check: impl FnMut() -> F) {
    common::until(what, PATIENCE, check).await
}
/// Messages the corpus puts into the stream (as in `any_order.rs`).
const CORPUS_MESSAGES: u64 = 152;
/// The ingestor's `stream.max_bytes` in these runs, checked in its `/metrics`.
const MAX_BYTES: i64 = 64 << 20;

/// The rows of the README's permissions table: (operation, subject).
fn table() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(testkit::workspace_root().join("deploy/README.md"))
        .expect("deploy/README.md");
    let start = text
        .find("<!-- permissions-matrix")
        .expect("the permissions table's marker in deploy/README.md");
    text[start..]
        .lines()
        .skip(3) // marker, header, |---|
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cols: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            (cols[0].to_string(), cols[1].trim_matches('`').to_string())
        })
        .collect()
}

/// One round of every operation of the table, as `user`, with a harmful body. Replies come
/// to `inbox`, whose reader acks any message a pull delivered.
async fn trespass(client: &Client, user: &str, inbox: &str, rows: &[(String, String)]) {
    let harm = |name: &str| {
        format!(
            r#"{{"stream_name":"BSKY","config":{{"name":"{name}","durable_name":"{name}","filter_subjects":["nothing.matches"],"ack_policy":"all","deliver_policy":"last"}}}}"#
        )
    };
    for (operation, subject) in rows {
        if subject.contains('<') {
            continue; // its own inbox: what every client does anyway
        }
        if user == "gateway"
            && (operation.starts_with("stream update") || operation.contains("gateway consumer"))
        {
            // Allowed on its own mirror, in its own account: an update with subjects turns
            // the mirror into a plain stream, and redefining `gateway_1` takes its first
            // client's consumer; its client would see nothing. The gateway can break
            // itself, not the services.
            continue;
        }
        let body = if operation.starts_with("redefine") {
            harm("charts")
        } else if operation.contains("replay") || operation.contains("gateway consumer") {
            let name = subject.rsplit('.').next().unwrap_or("replay");
            harm(name)
        } else if operation.starts_with("pull") {
            r#"{"batch":10,"no_wait":true}"#.to_string()
        } else if operation.starts_with("stream update") {
            r#"{"name":"BSKY","subjects":["nothing.>"],"storage":"file"}"#.to_string()
        } else if operation.contains("message") {
            r#"{"seq":1}"#.to_string()
        } else if operation.starts_with("publish an event") {
            r#"{"did":"did:plc:intruder","kind":"commit"}"#.to_string()
        } else {
            "{}".to_string()
        };
        if operation.starts_with("subscribe") {
            if let Ok(mut sub) = client.subscribe(subject.clone()).await {
                let _ = sub.unsubscribe().await;
            }
        } else if let Some(durable) = subject
            .strip_prefix("$JS.ACK.BSKY.")
            .and_then(|s| s.strip_suffix(".>"))
        {
            // With ack_policy all, an ack of a late sequence acks everything before it.
            let ack = format!("$JS.ACK.BSKY.{durable}.1.100000.100000.0.0");
            let _ = client.publish(ack, "+ACK".into()).await;
        } else if subject.starts_with("$JS.") || subject.starts_with("$SYS.") {
            let _ = client
                .publish_with_reply(subject.clone(), inbox.to_string(), body.into())
                .await;
        } else {
            let _ = client.publish(subject.clone(), body.into()).await;
        }
    }
    let _ = client.flush().await;
}

/// Acks every pulled message that reaches `user`'s inbox; counts them.
fn ack_what_comes(client: Client, inbox: String, taken: Arc<AtomicU64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut sub) = client.subscribe(inbox).await else {
            return;
        };
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply.filter(|r| r.starts_with("$JS.ACK.")) {
                taken.fetch_add(1, Ordering::Relaxed);
                let _ = client.publish(reply, "+ACK".into()).await;
            }
        }
    })
}

/// What charts and feedgen show at the end of a run.
#[derive(Debug, PartialEq)]
struct Figures {
    charts: Vec<Value>,
    feed: Vec<Value>,
}

async fn charts_figures(port: u16) -> Vec<Value> {
    let mut all = Vec::new();
    // Hours exist in the 2-day range only; every range ends at the newest event's day.
    for what in [
        "hourly?range=2d",
        "daily?range=all",
        "dau?range=all",
        "langs?range=all",
    ] {
        let (code, body) = get(port, &format!("/api/{what}")).await;
        assert_eq!(code, 200, "charts /api/{what}: {body}");
        all.push(serde_json::from_str(&body).expect("charts JSON"));
    }
    all
}

async fn feed_pages(port: u16, uri: &str) -> Vec<Value> {
    let feed: String = url_encode(uri);
    let mut pages = Vec::new();
    let mut cursor = String::new();
    loop {
        let path = format!("/xrpc/app.bsky.feed.getFeedSkeleton?feed={feed}&limit=100{cursor}");
        let (code, body) = get(port, &path).await;
        assert_eq!(code, 200, "feedgen {path}: {body}");
        let page: Value = serde_json::from_str(&body).expect("feedgen JSON");
        let next = page["cursor"].as_str().map(url_encode);
        pages.push(page);
        match next {
            Some(c) if pages.len() < 100 => cursor = format!("&cursor={c}"),
            _ => return pages,
        }
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A line `name value` of a `/metrics` text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn run(disturbed: bool) -> Figures {
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    let nats = testkit::NatsServer::start_with_config(conf, &testkit::deploy::server_env())
        .expect("deploy config");
    let url = nats.url();
    let dir = tempfile::tempdir().expect("tmp");
    let relay = staging::replay::spawn(
        Arc::new(staging::fixtures::corpus().expect("corpus")),
        Default::default(),
    )
    .await
    .expect("relay");
    let shutdown = CancellationToken::new();
    let mut stack = common::Stack::start(&relay, &url, Some(MAX_BYTES), dir.path(), &shutdown);
    let (ingest_port, charts_port, feedgen_port) =
        (stack.ingest_port, stack.charts_port, stack.feedgen_port);
    let feed_uri = stack.feed_uri.clone();

    // The disturbance: the gateway with a WebSocket client, and both users' rounds.
    let rounds_done = CancellationToken::new();
    let taken = Arc::new(AtomicU64::new(0));
    let ws_events = Arc::new(AtomicU64::new(0));
    let mut helpers: Vec<JoinHandle<()>> = Vec::new();
    let mut rounds: Option<JoinHandle<u64>> = None;
    if disturbed {
        let gateway_port = stack.start_gateway(&url, &shutdown);
        let events = ws_events.clone();
        let stop = shutdown.clone();
        helpers.push(tokio::spawn(async move {
            let ws = format!("ws://127.0.0.1:{gateway_port}/subscribe?cursor=1");
            let mut socket = loop {
                if let Ok((s, _)) = tokio_tungstenite::connect_async(ws.as_str()).await {
                    break s;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            };
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    m = socket.next() => match m {
                        Some(Ok(m)) if m.is_text() => { events.fetch_add(1, Ordering::Relaxed); }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                }
            }
        }));

        let rows = table();
        let mut users = Vec::new();
        for user in ["operator", "gateway"] {
            let client = connect(&url, user).await;
            let inbox = format!("_INBOX_{user}.trespass");
            helpers.push(ack_what_comes(client.clone(), inbox.clone(), taken.clone()));
            users.push((client, user, inbox));
        }
        let done = rounds_done.clone();
        rounds = Some(tokio::spawn(async move {
            let mut n = 0;
            while !done.is_cancelled() {
                for (client, user, inbox) in &users {
                    trespass(client, user, inbox, &rows).await;
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            n
        }));
    }

    let operator = connect(&url, "operator").await;
    let js = jetstream::new(operator);
    let last_seq = || async {
        match js.get_stream("BSKY").await {
            Ok(mut s) => s.info().await.map(|i| i.state.last_sequence).unwrap_or(0),
            Err(_) => 0,
        }
    };
    until("ingest stores the corpus", || async {
        last_seq().await >= CORPUS_MESSAGES
    })
    .await;
    let stored = last_seq().await;
    for durable in ["charts", "feedgen"] {
        common::until_consumed(&js, durable, PATIENCE).await;
    }
    if let Some(rounds) = rounds {
        // One full round more after both were done, then stop.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rounds_done.cancel();
        let n = rounds.await.expect("rounds");
        assert!(n >= 2, "the disturbance ran {n} rounds");
        // The gateway's own client, reading its mirror while its user trespasses, gets
        // every event production Jetstream served for the corpus.
        let want = staging::fixtures::expected()
            .expect("expected_v1.jsonl")
            .len() as u64;
        until("the gateway's WebSocket client has every event", || async {
            ws_events.load(Ordering::Relaxed) >= want
        })
        .await;
        assert_eq!(ws_events.load(Ordering::Relaxed), want, "no event twice");
        assert_eq!(
            taken.load(Ordering::Relaxed),
            0,
            "the operator or the gateway pulled messages from a service's durable"
        );
        // The operator replays the whole stream through its own consumer.
        let stream = js.get_stream("BSKY").await.expect("BSKY");
        let _ = stream.delete_consumer("replay").await;
        let replay = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("replay".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("the operator's replay consumer");
        let mut messages = replay.messages().await.expect("replay messages");
        let mut read = 0;
        while read < stored {
            let msg = tokio::time::timeout(PATIENCE, messages.next())
                .await
                .expect("the operator's replay")
                .expect("a message")
                .expect("no error");
            msg.ack().await.expect("ack");
            read += 1;
        }
        assert_eq!(last_seq().await, stored, "the stream changed");
    }

    let figures = Figures {
        charts: charts_figures(charts_port).await,
        feed: feed_pages(feedgen_port, &feed_uri).await,
    };

    // The gauges the monitoring reads, from the ingestor's own stream info.
    until("ingest's /metrics shows the stream's size", || async {
        let text = get(ingest_port, "/metrics").await.1;
        metric(&text, "bsky_ingest_stream_max_bytes") == Some(MAX_BYTES as f64)
            && metric(&text, "bsky_ingest_stream_bytes").is_some_and(|b| b > 0.0)
    })
    .await;
    let text = get(ingest_port, "/metrics").await.1;
    assert_eq!(
        metric(&text, "bsky_ingest_lease_acquisitions_total"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "bsky_ingest_lease_losses_total"), Some(0.0));
    assert!(metric(&text, "bsky_ingest_lease_acquired_time_seconds").is_some_and(|t| t > 1e9));

    shutdown.cancel();
    for (name, task) in stack.tasks {
        task.await
            .expect("task")
            .unwrap_or_else(|e| panic!("{name}: {}", service::telemetry::Chain(&*e)));
    }
    for h in helpers {
        h.abort();
    }
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_operator_leave_charts_and_feedgen_undisturbed() {
    let calm = run(false).await;
    assert!(
        calm.feed
            .iter()
            .any(|p| p["feed"].as_array().is_some_and(|posts| !posts.is_empty())),
        "the undisturbed feed is empty: {:?}",
        calm.feed
    );
    assert!(
        calm.charts[0]["hours"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "charts has no hourly figures: {:?}",
        calm.charts[0]
    );
    let disturbed = run(true).await;
    assert_eq!(disturbed.charts, calm.charts, "charts' figures differ");
    assert_eq!(disturbed.feed, calm.feed, "feedgen's feed differs");
}
