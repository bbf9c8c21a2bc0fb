//! A three-node JetStream cluster keeps the data when a server dies: the stream and the
//! cursor bucket are replicated three times, the stream's leader is SIGKILLed mid-run
//! (mid-batch: the ingestor publishes in fast-ingest batches, and a paced relay keeps a
//! batch open), the ingestor rides through the election, and a consumer on a surviving
//! node reads every op exactly once and in relay order. The nodes run the shipped users and permissions (`deploy/accounts.conf`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream;
use common::*;
use staging::replay::{ReplayOptions, Speed};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_stream_leader_mid_run_loses_and_repeats_nothing() {
    let accounts = testkit::workspace_root().join("deploy/accounts.conf");
    let mut cluster =
        testkit::Cluster::start_with(3, &[accounts.as_path()], &server_env()).expect("cluster");
    let capture = synth(20_000, 31);
    let expected = expected_messages(&capture);
    assert!(expected.len() >= 20_000, "{}", expected.len());
    // Paced (2x of a synthetic 1,000 events/s: ~9 s in all), so the kill lands mid-run.
    let relay = relay(
        capture.clone(),
        ReplayOptions {
            speed: Speed::Factor(2.0),
            ..Default::default()
        },
    )
    .await;
    let secrets = tempfile::tempdir().expect("tmp");
    let pw = password_file(secrets.path(), "ingest");
    let mut ingest = Ingest::spawn(
        &relay_base(&relay),
        &cluster.urls(),
        "cluster-ingest",
        &[
            ("BSKY_INGEST_NATS__USER", "ingest"),
            ("BSKY_INGEST_NATS__PASSWORD_FILE", pw.to_str().unwrap()),
            ("BSKY_INGEST_STREAM__REPLICAS", "3"),
        ],
        &[],
    );

    // Mid-run: a third of the ops stored.
    let (operator, _) = connect_as(&cluster.url(0), "operator").await;
    let js = jetstream::new(operator);
    let third = expected.len() as u64 / 3;
    let start = Instant::now();
    while stream_count(&js, "BSKY").await < third {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not a third stored in 60 s\n{}",
            ingest.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = js
        .get_stream("BSKY")
        .await
        .expect("BSKY")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(info.config.num_replicas, 3, "the stream has 3 replicas");
    let kv = js
        .get_stream("KV_BSKY_INGEST")
        .await
        .expect("cursor bucket")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(
        kv.config.num_replicas, 3,
        "the cursor bucket has 3 replicas"
    );
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let dead = cluster.index_of(&leader).expect("the leader is a node");
    let stored_at_kill = stream_count(&js, "BSKY").await;
    cluster.kill(dead);
    eprintln!("killed the stream leader {leader} with {stored_at_kill} messages stored");
    assert!(
        (stored_at_kill as usize) < expected.len(),
        "the kill landed mid-run"
    );

    // The rest arrives through the new leader; read it from a surviving node.
    let survivor = (0..cluster.len()).find(|i| *i != dead).expect("a survivor");
    let (operator, _) = connect_as(&cluster.url(survivor), "operator").await;
    let js = jetstream::new(operator);
    wait_count(
        &js,
        "BSKY",
        expected.len() as u64,
        Duration::from_secs(120),
        &ingest,
    )
    .await;
    assert!(
        ingest.alive(),
        "the ingestor rode through the election\n{}",
        ingest.log_tail()
    );
    let new_leader = js
        .get_stream("BSKY")
        .await
        .expect("BSKY")
        .info()
        .await
        .expect("info")
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a new leader");
    assert_ne!(new_leader, leader, "a surviving node leads the stream");
    let retries = ingest
        .metric("bsky_ingest_publish_retries_total")
        .await
        .unwrap_or(0.0);
    eprintln!("new leader {new_leader}; the ingestor retried {retries} publishes");

    let (charts, _) = connect_as(&cluster.url(survivor), "charts").await;
    let stored = read_durable(&jetstream::new(charts), "BSKY", "charts").await;
    assert_exact_stored(&stored, &expected);
    assert_order_stored(&stored, &capture);
    PublishPath::Batched.assert_taken(&js, &ingest).await;
}
