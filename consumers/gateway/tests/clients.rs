//! Real Jetstream client libraries from the npm registry (@skyware/jetstream,
//! @atcute/jetstream, and the `ws` package for the wire) against the gateway, with the
//! real-frame corpus in the stream. Each compares what the library hands over with the
//! stream's own payloads, read back with direct gets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{corpus_pipeline, filtered, keys, stream_events, Gateway, NodeClient};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfiltered_clients_receive_exactly_the_152_events() {
    if !common::node_ready() {
        return;
    }
    let pipeline = corpus_pipeline().await;
    let all = stream_events(&pipeline.nats.url()).await;
    let want = filtered(&all, |_| true);
    assert_eq!(want.len(), 152);
    let expected = staging::fixtures::expected().unwrap();
    let gw = Gateway::start(common::config(&pipeline.nats.url())).await;
    // skyware sends a cursor only when it is non-zero; atcute always sends requireHello.
    for (lib, cursor) in [("skyware", 1), ("atcute", 0)] {
        let mut c = NodeClient::start(json!({
            "lib": lib, "url": gw.url(), "cursor": cursor, "validateEvents": false,
        }))
        .await;
        let got = c.events(152).await;
        assert_eq!(got.len(), 152, "{lib}");
        assert!(got == want, "{lib}: not the stream's payloads, in order");
        assert_eq!(
            keys(&got),
            keys(&expected),
            "{lib}: not expected_v1's events"
        );
        c.finish().await;
    }
    // atcute's own validation (on by default) refuses one production event: the #identity
    // without a handle, which production Jetstream sends exactly so (expected_v1.jsonl).
    let mut c = NodeClient::start(json!({"lib": "atcute", "url": gw.url(), "cursor": 0})).await;
    let got = c.events(151).await;
    assert!(got == filtered(&all, |v| v["kind"] != "identity"));
    assert_eq!(c.finish().await["rejected"], 1);
    gw.stop().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_and_did_filters() {
    if !common::node_ready() {
        return;
    }
    let pipeline = corpus_pipeline().await;
    let all = stream_events(&pipeline.nats.url()).await;
    let gw = Gateway::start(common::config(&pipeline.nats.url())).await;

    // Posts: every post commit, plus #identity and #account, which Jetstream sends
    // whatever the collections.
    let kind = |v: &Value| v["kind"].as_str().unwrap_or("").to_string();
    let posts = filtered(&all, |v| {
        v["commit"]["collection"] == "app.bsky.feed.post" || kind(v) != "commit"
    });
    let post_commits = posts.iter().filter(|v| kind(v) == "commit").count();
    assert!(post_commits > 5, "{post_commits}");
    for lib in ["skyware", "atcute"] {
        let mut c = NodeClient::start(json!({
            "lib": lib, "url": gw.url(), "cursor": 1,
            "wantedCollections": ["app.bsky.feed.post"], "validateEvents": false,
        }))
        .await;
        let got = c.events(posts.len()).await;
        assert!(
            got == posts,
            "{lib}: {} events, want {}",
            got.len(),
            posts.len()
        );
        c.finish().await;
    }

    // One DID: all its events, commits and others alike. Take the DID of the #identity
    // event when it also has commits, so the DID filter is seen on both kinds.
    let mut by_did = std::collections::HashMap::<String, usize>::new();
    for (_, v) in &all {
        *by_did
            .entry(v["did"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let (did, n) = by_did
        .iter()
        .max_by_key(|(d, n)| (**n, (*d).clone()))
        .unwrap();
    assert!(*n > 1);
    let mine = filtered(&all, |v| v["did"] == did.as_str());
    for lib in ["atcute", "skyware"] {
        let mut c = NodeClient::start(json!({
            "lib": lib, "url": gw.url(), "cursor": 1, "wantedDids": [did], "validateEvents": false,
        }))
        .await;
        let got = c.events(mine.len()).await;
        assert!(
            got == mine,
            "{lib}: {} events, want {}",
            got.len(),
            mine.len()
        );
        c.finish().await;
    }
    let identity = all.iter().find(|(_, v)| v["kind"] == "identity").unwrap();
    let did = identity.1["did"].as_str().unwrap();
    let mine = filtered(&all, |v| v["did"] == did);
    let mut c = NodeClient::start(json!({
        "lib": "skyware", "url": gw.url(), "cursor": 1, "wantedDids": [did],
        "wantedCollections": ["app.bsky.nothing.here"],
    }))
    .await;
    let got = c
        .events(mine.iter().filter(|v| kind(v) != "commit").count())
        .await;
    assert!(
        got.iter().all(|v| v["did"] == did && kind(v) != "commit"),
        "{got:?}"
    );
    c.finish().await;
    gw.stop().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_a_cursor_from_the_middle() {
    if !common::node_ready() {
        return;
    }
    let pipeline = corpus_pipeline().await;
    let all = stream_events(&pipeline.nats.url()).await;
    let gw = Gateway::start(common::config(&pipeline.nats.url())).await;
    // The cursor a client saved after reading the first 76 events: the largest event
    // time it saw (what both libraries keep). Event times are our stream's, as read back.
    let cursor = all[..76]
        .iter()
        .map(|(_, v)| v["time_us"].as_i64().unwrap())
        .max()
        .unwrap();
    let want = filtered(&all, |v| v["time_us"].as_i64().unwrap() >= cursor);
    assert!(want.len() > 30 && want.len() < 120, "{}", want.len());
    for lib in ["skyware", "atcute"] {
        let mut c = NodeClient::start(json!({
            "lib": lib, "url": gw.url(), "cursor": cursor, "validateEvents": false,
        }))
        .await;
        let got = c.events(want.len()).await;
        assert!(
            got == want,
            "{lib}: {} events, want {}",
            got.len(),
            want.len()
        );
        c.finish().await;
    }
    gw.stop().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_is_negotiated_and_compresses() {
    if !common::node_ready() {
        return;
    }
    let pipeline = corpus_pipeline().await;
    let gw = Gateway::start(common::config(&pipeline.nats.url())).await;
    let mut c = NodeClient::start(json!({"lib": "ws", "url": gw.url(), "cursor": 1})).await;
    assert_eq!(c.events(152).await.len(), 152);
    let s = c.finish().await;
    let ext = s["extensions"].as_str().unwrap_or("");
    assert!(ext.starts_with("permessage-deflate"), "{s}");
    let (wire, payload) = (
        s["wireBytes"].as_f64().unwrap(),
        s["payloadBytes"].as_f64().unwrap(),
    );
    assert!(wire < payload / 2.0, "wire {wire} payload {payload}");
    gw.stop().await;

    // Off in the configuration: the same client gets plain frames.
    let mut config = common::config(&pipeline.nats.url());
    config.http.deflate = false;
    let gw = Gateway::start(config).await;
    let mut c = NodeClient::start(json!({"lib": "ws", "url": gw.url(), "cursor": 1})).await;
    assert_eq!(c.events(152).await.len(), 152);
    let s = c.finish().await;
    assert_eq!(s["extensions"], "", "{s}");
    assert!(s["wireBytes"].as_f64().unwrap() > s["payloadBytes"].as_f64().unwrap());
    gw.stop().await;
    pipeline.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skyware_resumes_through_a_reconnect_without_a_gap() {
    if !common::node_ready() {
        return;
    }
    let pipeline = corpus_pipeline().await;
    let url = pipeline.nats.url();
    let first = filtered(&stream_events(&url).await, |_| true);
    let gw = Gateway::start(common::config(&url)).await;
    let addr = gw.addr;
    let mut c = NodeClient::start(json!({
        "lib": "skyware", "url": gw.url(), "cursor": 1,
    }))
    .await;
    assert!(c.events(first.len()).await == first);
    // The gateway goes away (1001), the corpus is stored again meanwhile, and a gateway
    // comes back on the same address: skyware reconnects by itself with the largest
    // `time_us` it saw.
    gw.stop().await;
    let raw = common::payloads(&url).await;
    common::publish(&url, &raw).await;
    let all = filtered(&stream_events(&url).await, |_| true);
    let gw = Gateway::start_at(common::config(&url), addr).await;
    let resume = first.last().unwrap()["time_us"].as_i64().unwrap();
    let again = all.len() - first.len();
    let got = c.events(again).await;
    // Everything stored after the last event it had, and before it only that event's
    // microsecond (at least the last event itself: a time cursor is inclusive).
    let k = all.len() - got.len();
    assert!(got[..] == all[k..], "not the stream from some point on");
    assert!(
        k < first.len(),
        "nothing repeated: the resume point was not inclusive"
    );
    assert!(
        all[k..first.len()]
            .iter()
            .all(|v| v["time_us"].as_i64() == Some(resume)),
        "repeats events stored before the resume point's microsecond"
    );
    c.finish().await;
    gw.stop().await;
    pipeline.stop().await.unwrap();
}
