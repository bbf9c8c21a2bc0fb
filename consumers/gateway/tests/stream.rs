//! The gateway against a stream the real ingestor filled: cursors in event time after a
//! burst, the live tail, `options_update` mid-stream, and requests refused with 400.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{filtered, raw_client, raw_events, stream_events, Gateway, NodeClient};
use serde_json::{json, Value};
use std::time::Duration;

/// 3,000 ops whose event times span five minutes, stored by the ingestor in one burst.
fn burst_capture() -> staging::capture::Capture {
    use staging::synth::{synthesize, Source, SynthConfig};
    let source = Source::load(staging::fixtures::calabro()).unwrap();
    let cfg = SynthConfig {
        ops: 3_000,
        seed: 11,
        repos: 200,
        big_every: 0,
        max_ops_every: 0,
        multi_op_share: 0.0,
        events_per_second: 10.0,
        ..SynthConfig::default()
    };
    let mut w = staging::capture::CaptureWriter::new(Vec::new(), None).unwrap();
    synthesize(&source, cfg, &mut w).unwrap();
    staging::capture::Capture::from_bytes(w.finish().unwrap()).unwrap()
}

/// Publishes payloads to their contract subjects, as the ingestor would.
async fn publish(nats_url: &str, events: &[Value]) {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    for v in events {
        let subject = match v["kind"].as_str().unwrap() {
            "commit" => format!("bsky.{}", v["commit"]["collection"].as_str().unwrap()),
            kind => format!("bsky.{kind}"),
        };
        let body = serde_json::to_vec(v).unwrap();
        js.publish(subject, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_in_event_time_starts_at_the_right_event_after_a_burst() {
    let pipeline = common::pipeline(burst_capture()).await;
    let url = pipeline.nats.url();
    let all = stream_events(&url).await;
    let times: Vec<i64> = all
        .iter()
        .map(|(_, v)| v["time_us"].as_i64().unwrap())
        .collect();
    // The test means something only if storage times are far from event times.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    let first = stream.direct_get(1).await.unwrap().time;
    let last = stream.direct_get(all.len() as u64).await.unwrap().time;
    let stored_span = (last - first).whole_seconds();
    let event_span = (times[times.len() - 1] - times[0]) / 1_000_000;
    assert!(
        event_span >= 240 && stored_span * 4 < event_span,
        "{stored_span}s {event_span}s"
    );

    let gw = Gateway::start(common::config(&url)).await;
    for at in [1usize, 1234, all.len() - 3] {
        let cursor = times[at];
        let want = filtered(&all, |v| v["time_us"].as_i64().unwrap() >= cursor);
        let mut ws = raw_client(&gw, &format!("cursor={cursor}")).await;
        let got = raw_events(&mut ws, want.len()).await;
        assert_eq!(got.len(), want.len(), "cursor at event {at}");
        assert!(got == want, "cursor at event {at}: other events");
    }
    // Older than the stream: from its first message.
    let mut ws = raw_client(&gw, "cursor=0").await;
    let every = filtered(&all, |_| true);
    assert!(raw_events(&mut ws, every.len()).await == every);
    gw.stop().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cursor_or_a_future_one_is_the_live_tail() {
    let pipeline = common::corpus_pipeline().await;
    let url = pipeline.nats.url();
    let all = stream_events(&url).await;
    let gw = Gateway::start(common::config(&url)).await;
    let future = (std::time::SystemTime::now() + Duration::from_secs(3600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let mut live = raw_client(&gw, "").await;
    let mut ahead = raw_client(&gw, &format!("cursor={future}")).await;
    // Both have started once the clients gauge counts them; let their pumps reach the tail.
    while gw.metric("bsky_gateway_clients").await < 2.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new: Vec<Value> = all[..3].iter().map(|(_, v)| v.clone()).collect();
    publish(&url, &new).await;
    assert!(raw_events(&mut live, 3).await == new);
    assert!(raw_events(&mut ahead, 3).await == new);
    gw.stop().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_update_mid_stream_changes_what_the_client_gets() {
    if !common::node_ready() {
        return;
    }
    let pipeline = common::corpus_pipeline().await;
    let url = pipeline.nats.url();
    let all = stream_events(&url).await;
    let corpus: Vec<Value> = all.iter().map(|(_, v)| v.clone()).collect();
    let gw = Gateway::start(common::config(&url)).await;
    let commit = |v: &Value, c: &str| v["kind"] != "commit" || v["commit"]["collection"] == c;
    let mut c = NodeClient::start(json!({
        "lib": "skyware", "url": gw.url(), "cursor": 1,
        "wantedCollections": ["app.bsky.feed.like"],
    }))
    .await;
    let likes = filtered(&all, |v| commit(v, "app.bsky.feed.like"));
    assert!(c.events(likes.len()).await == likes);

    // Posts instead of likes, without reconnecting; then the same events again.
    c.update(json!({"wantedCollections": ["app.bsky.feed.post"]}))
        .await;
    while gw.metric("bsky_gateway_options_updates_total").await < 1.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&url, &corpus).await;
    let posts = filtered(&all, |v| commit(v, "app.bsky.feed.post"));
    assert!(c.events(posts.len()).await == posts);

    // One DID, every collection (an absent list means all).
    let did = posts[0]["did"].as_str().unwrap().to_string();
    c.update(json!({"wantedDids": [did]})).await;
    while gw.metric("bsky_gateway_options_updates_total").await < 2.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish(&url, &corpus).await;
    let mine = filtered(&all, |v| v["did"] == did.as_str());
    assert!(c.events(mine.len()).await == mine);
    c.finish().await;
    gw.stop().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_400_with_a_reason_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::Error;
    let nats = testkit::NatsServer::start().unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "BSKY".into(),
        subjects: vec!["bsky.>".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut config = common::config(&nats.url());
    config.http.max_clients = 1;
    let gw = Gateway::start(config).await;
    for (query, reason) in [
        ("wantedCollections=not-an-nsid", "invalid collection"),
        ("wantedCollections=app.bsky.*.post", "invalid collection"),
        ("wantedDids=bob", "invalid DID"),
        ("cursor=soon", "invalid cursor"),
        ("maxMessageSizeBytes=-1", "maxMessageSizeBytes"),
        ("requireHello=perhaps", "requireHello"),
        ("compress=true", "zstd dictionary"),
    ] {
        let url = format!("{}/subscribe?{query}", gw.url());
        match tokio_tungstenite::connect_async(url).await {
            Err(Error::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{query}");
                let body = String::from_utf8(resp.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains(reason), "{query}: {body}");
            }
            other => panic!("{query}: {:?}", other.map(|r| r.1)),
        }
    }
    let many: String = (0..101)
        .map(|i| format!("wantedCollections=a.b.c{i}&"))
        .collect();
    let url = format!("{}/subscribe?{many}", gw.url());
    assert!(
        matches!(tokio_tungstenite::connect_async(url).await, Err(Error::Http(r)) if r.status() == 400)
    );
    // Not a WebSocket request.
    let (status, body) = common::http_get(gw.addr, "/subscribe").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("WebSocket"), "{body}");
    // Valid, but above http.max_clients.
    let _first = raw_client(&gw, "").await;
    match tokio_tungstenite::connect_async(format!("{}/subscribe", gw.url())).await {
        Err(Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("{:?}", other.map(|r| r.1)),
    }
    assert_eq!(
        gw.metric("bsky_gateway_requests_rejected_total").await,
        10.0
    );
    // Every close reason is there before any client closed.
    let (_, metrics) = common::http_get(gw.addr, "/metrics").await;
    for reason in gateway::metrics::CloseReason::ALL {
        let line = format!(
            "bsky_gateway_clients_closed_total{{reason=\"{}\"}}",
            reason.as_str()
        );
        assert!(metrics.contains(&line), "{line}");
    }
    gw.stop().await;
}
