//! The gateway against a stream the real ingestor filled: time cursors land where the
//! storage times say after a burst and on the live tail, sequence cursors, the live tail,
//! `options_update` mid-stream, and requests refused with 400.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{
    filtered, payloads, publish, raw_client, raw_events, stream_events, Gateway, NodeClient,
};
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

fn time_us(v: &Value) -> i64 {
    v["time_us"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_cursors_land_where_the_storage_times_say_after_a_burst_and_live() {
    let pipeline = common::pipeline(burst_capture()).await;
    let url = pipeline.nats.url();
    let burst = payloads(&url).await;
    // The test means something only if storage times are far from event times.
    let event_times = common::event_times(&url).await;
    let event_span = (event_times[event_times.len() - 1] - event_times[0]) / 1_000_000;
    let stored = stream_events(&url).await;
    let stored_span = (time_us(&stored[stored.len() - 1].1) - time_us(&stored[0].1)) / 1_000_000;
    assert!(
        event_span >= 240 && stored_span * 4 < event_span,
        "{stored_span}s {event_span}s"
    );
    // Then a live tail: 40 more, one at a time.
    for v in &burst[..40] {
        publish(&url, std::slice::from_ref(v)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = stream_events(&url).await;
    let n = all.len();
    let gw = Gateway::start(common::config(&url)).await;
    let last = all[n - 1].0;
    // At a message's own time (inclusive), one microsecond after it, in the burst and in
    // the tail; and by sequence.
    for at in [1usize, 1234, n - 30, n - 3] {
        for cursor in [time_us(&all[at].1), time_us(&all[at].1) + 1] {
            let want = filtered(&all, |v| time_us(v) >= cursor);
            assert!(!want.is_empty() && want.len() < n);
            let got = common::read_until(&gw, &format!("cursor={cursor}"), last).await;
            assert!(
                got == want,
                "time cursor at {at}: {} events, want {}",
                got.len(),
                want.len()
            );
        }
        let seq = all[at].0;
        let want = filtered(&all, |v| v["cursor"].as_u64().unwrap() >= seq);
        let got = common::read_until(&gw, &format!("cursor={seq}"), last).await;
        assert!(got == want, "sequence cursor {seq}");
    }
    // Older than the stream, in both forms: from its first message. The stream still
    // holds sequence 1, so nothing was lost and nothing is counted as clamped (a stream
    // that lost its start is `archive.rs`).
    let every = filtered(&all, |_| true);
    for old in ["0", "1000000000000000"] {
        let got = common::read_until(&gw, &format!("cursor={old}"), last).await;
        assert!(got == every, "cursor={old}");
    }
    assert_eq!(gw.metric("bsky_gateway_cursor_clamped_total").await, 0.0);
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
    let corpus = payloads(&url).await;
    publish(&url, &corpus[..3]).await;
    let new: Vec<Value> = stream_events(&url).await[all.len()..]
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(new.len(), 3);
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
    let corpus = payloads(&url).await;
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
    let again = stream_events(&url).await.split_off(all.len());
    let posts = filtered(&again, |v| commit(v, "app.bsky.feed.post"));
    assert!(c.events(posts.len()).await == posts);

    // One DID, every collection (an absent list means all).
    let did = posts[0]["did"].as_str().unwrap().to_string();
    c.update(json!({"wantedDids": [did]})).await;
    while gw.metric("bsky_gateway_options_updates_total").await < 2.0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = stream_events(&url).await.len();
    publish(&url, &corpus).await;
    let again = stream_events(&url).await.split_off(before);
    let mine = filtered(&again, |v| v["did"] == did.as_str());
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
        ("cursor=1.5", "invalid cursor"),
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
    assert_eq!(gw.metric("bsky_gateway_requests_rejected_total").await, 8.0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_wanted_dids_a_414_with_a_reason_then_through_options_update() {
    use futures_util::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    let pipeline = common::corpus_pipeline().await;
    let url = pipeline.nats.url();
    let all = stream_events(&url).await;
    let gw = Gateway::start(common::config(&url)).await;
    // Three DIDs of the corpus among 10,000.
    let mut dids: Vec<String> = all
        .iter()
        .map(|(_, v)| v["did"].as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .take(3)
        .collect();
    dids.extend((dids.len()..10_000).map(|i| format!("did:plc:{i:0>24}")));
    let query: String = dids
        .iter()
        .map(|d| format!("wantedDids={d}"))
        .collect::<Vec<_>>()
        .join("&");
    assert!(query.len() > 65_534);
    // A WebSocket upgrade by hand: the `http` crate of Rust clients refuses such a URI
    // itself; node's `ws` and browsers send it.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let request = format!(
        "GET /subscribe?cursor=1&{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        gw.addr
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 414 "), "{answer}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    assert!(
        body.contains("65534") && body.contains("options_update"),
        "{body}"
    );
    assert_eq!(gw.metric("bsky_gateway_requests_rejected_total").await, 1.0);
    // The same list in an options_update, before anything is sent (requireHello).
    let mut ws = raw_client(&gw, "cursor=1&requireHello=true").await;
    let update = json!({"type": "options_update", "payload": {"wantedDids": dids}});
    ws.send(Message::text(update.to_string())).await.unwrap();
    let wanted: std::collections::HashSet<&str> = dids.iter().map(String::as_str).collect();
    let want = filtered(&all, |v| wanted.contains(v["did"].as_str().unwrap()));
    assert!(!want.is_empty());
    assert!(raw_events(&mut ws, want.len()).await == want);
    // A list that fits the URI still goes through the query.
    let fits = dids[..1_000]
        .iter()
        .map(|d| format!("wantedDids={d}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut ws = raw_client(&gw, &format!("cursor=1&{fits}")).await;
    assert!(raw_events(&mut ws, want.len()).await == want);
    gw.stop().await;
    pipeline.stop().await.unwrap();
}
