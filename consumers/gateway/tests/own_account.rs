//! The gateway as deployed: its own user in its own NATS account (`deploy/accounts.conf`),
//! reading its own mirror of the stream, which it creates at start (`stream.mirror`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The real ingestor fills BSKY as user ingest; the gateway, as user gateway with the
/// defaults of `[stream.mirror]`, creates its mirror in account GATEWAY and serves a client
/// every event of the corpus from it, in the stream's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_its_own_mirror_under_the_shipped_permissions() {
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    let nats = testkit::NatsServer::start_with_config(conf, &testkit::deploy::server_env())
        .expect("deploy config");
    let url = nats.url();
    let capture = Arc::new(staging::fixtures::corpus().expect("corpus"));
    let pipeline = ingest::testing::Pipeline::start_on(nats, capture, Default::default(), |c| {
        c.nats.user = Some("ingest".into());
        c.nats.password = Some(testkit::deploy::password("ingest").unwrap().into());
    })
    .await
    .expect("pipeline");

    let mut config = common::config(&url);
    config.nats.user = Some("gateway".into());
    config.nats.password = Some(testkit::deploy::password("gateway").unwrap().into());
    config.stream.mirror = Some(gateway::config::Mirror::default());
    let gw = Gateway::start(config).await;

    // The mirror, seen by the gateway user: the whole corpus.
    let client = async_nats::ConnectOptions::with_user_and_password(
        "gateway".into(),
        testkit::deploy::password("gateway").unwrap().into(),
    )
    .custom_inbox_prefix("_INBOX_gateway")
    .connect(&url)
    .await
    .expect("connect as gateway");
    let js = async_nats::jetstream::new(client);
    let mut mirror = js.get_stream("BSKY").await.expect("the gateway's mirror");
    let start = Instant::now();
    let held = loop {
        let info = mirror.info().await.expect("mirror info");
        if info.state.messages >= 152 && start.elapsed() > Duration::from_millis(500) {
            break info.state.messages;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "mirror holds {}",
            info.state.messages
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        mirror.cached_info().config.mirror.is_some(),
        "BSKY in account GATEWAY is a mirror"
    );

    // The origin, read as the operator: each message's sequence and storage time, which
    // the gateway's `cursor` and `time_us` must carry although it reads the mirror.
    let operator = async_nats::ConnectOptions::with_user_and_password(
        "operator".into(),
        testkit::deploy::password("operator").unwrap().into(),
    )
    .custom_inbox_prefix("_INBOX_operator")
    .connect(&url)
    .await
    .expect("connect as operator");
    let origin = async_nats::jetstream::new(operator)
        .get_stream("BSKY")
        .await
        .expect("the stream BSKY");
    let mut want = Vec::new();
    let mut stored = std::collections::HashMap::new();
    for seq in 1..=held {
        let m = origin.direct_get(seq).await.expect("direct get");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if v["kind"] != "sync" {
            let us = i64::try_from(m.time.unix_timestamp_nanos() / 1000).unwrap();
            stored.insert(seq, us);
            want.push(v);
        }
    }

    let mut ws = raw_client(&gw, "cursor=0").await;
    let got = raw_events(&mut ws, want.len()).await;
    assert_eq!(keys(&got), keys(&want), "every event, from the mirror");
    for e in &got {
        let seq = e["cursor"].as_u64().expect("cursor");
        assert_eq!(
            e["time_us"].as_i64(),
            stored.get(&seq).copied(),
            "the mirror keeps the stream's sequence {seq} and its storage time"
        );
    }
    gw.stop().await;
    pipeline.stop().await.expect("stop");
}
