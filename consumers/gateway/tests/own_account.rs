//! The gateway as deployed: its own user in its own NATS account (`deploy/accounts.conf`),
//! reading its own mirror of the stream, which it creates at start (`stream.mirror`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The passwords `deploy/accounts.conf` reads from the server's environment.
const ENV: [(&str, &str); 6] = [
    ("BSKY_NATS_INGEST_PASSWORD", "pIngestTest1"),
    ("BSKY_NATS_CHARTS_PASSWORD", "pChartsTest1"),
    ("BSKY_NATS_FEEDGEN_PASSWORD", "pFeedgenTest1"),
    ("BSKY_NATS_GATEWAY_PASSWORD", "pGatewayTest1"),
    ("BSKY_NATS_OPERATOR_PASSWORD", "pOperatorTest1"),
    ("BSKY_NATS_SYS_PASSWORD", "pSysTest1"),
];

/// The real ingestor fills BSKY as user ingest; the gateway, as user gateway with the
/// defaults of `[stream.mirror]`, creates its mirror in account GATEWAY and serves a client
/// every event of the corpus from it, in the stream's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_its_own_mirror_under_the_shipped_permissions() {
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    let nats = testkit::NatsServer::start_with_config(conf, &ENV).expect("deploy config");
    let url = nats.url();
    let capture = Arc::new(staging::fixtures::corpus().expect("corpus"));
    let pipeline = ingest::testing::Pipeline::start_on(nats, capture, Default::default(), |c| {
        c.nats.user = Some("ingest".into());
        c.nats.password = Some("pIngestTest1".into());
    })
    .await
    .expect("pipeline");

    let mut config = common::config(&url);
    config.nats.user = Some("gateway".into());
    config.nats.password = Some("pGatewayTest1".into());
    config.stream.mirror = Some(gateway::config::Mirror::default());
    let gw = Gateway::start(config).await;

    // The mirror, read as the gateway: the whole corpus, the same sequences as BSKY.
    let client = async_nats::ConnectOptions::with_user_and_password(
        "gateway".into(),
        "pGatewayTest1".into(),
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
    let mut stored = Vec::new();
    for seq in 1..=held {
        let m = mirror.direct_get(seq).await.expect("direct get");
        stored.push(serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap());
    }
    let want: Vec<_> = stored
        .iter()
        .filter(|v| v["kind"] != "sync")
        .cloned()
        .collect();

    let mut ws = raw_client(&gw, "cursor=0").await;
    let got = raw_events(&mut ws, want.len()).await;
    assert_eq!(keys(&got), keys(&want), "every event, from the mirror");
    gw.stop().await;
    pipeline.stop().await.expect("stop");
}
