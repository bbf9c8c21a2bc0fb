//! A replay at full speed stores exactly what a replay at live speed (1x) stores: nothing
//! in a payload depends on the wall clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::*;
use staging::replay::{ReplayOptions, Speed};
use std::sync::Arc;
use std::time::Duration;

async fn run(
    capture: Arc<staging::capture::Capture>,
    speed: Speed,
    name: &str,
) -> Vec<(String, String, i64, serde_json::Value)> {
    let nats = testkit::NatsServer::start().expect("nats-server");
    let relay = relay(
        capture.clone(),
        ReplayOptions {
            speed,
            ..Default::default()
        },
    )
    .await;
    let ingest = Ingest::spawn(&relay_base(&relay), &nats.url(), name, &[], &[]);
    let js = jetstream(&nats.url()).await;
    let n = expected_messages(&capture).len() as u64;
    wait_count(&js, "BSKY", n, Duration::from_secs(60), &ingest).await;
    read_all(&js, "BSKY")
        .await
        .into_iter()
        .map(|m| (m.subject, m.msg_id, m.relay_seq, m.json))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_speed_and_full_speed_store_the_same() {
    // ~3 s of event time at 1x (synthetic 1,000 events/s), real record bytes.
    let capture = synth(3_000, 21);
    let (first, last) = capture.time_range().expect("times");
    assert!(
        last - first > 1_000_000,
        "the capture spans more than a second of event time"
    );
    let live = run(capture.clone(), Speed::Factor(1.0), "speed-1x").await;
    let fast = run(capture.clone(), Speed::Max, "speed-max").await;
    assert_eq!(live.len(), expected_messages(&capture).len());
    assert_eq!(live, fast);
}
