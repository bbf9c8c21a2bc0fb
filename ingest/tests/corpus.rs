//! The 150 real production frames, through the staging relay and the `ingest` binary,
//! into a real nats-server; compared with production Jetstream's output for them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::*;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_end_to_end() {
    let nats = testkit::NatsServer::start().expect("nats-server");
    let capture = corpus();
    let times: HashMap<i64, i64> = capture
        .frames()
        .iter()
        .map(|f| {
            let d = firehose::decode(&f.bytes)
                .into_event()
                .expect("corpus frame");
            (d.seq, d.time_us)
        })
        .collect();
    let relay = relay(capture, Default::default()).await;

    // Core NATS subscriptions, made before anything is published.
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let mut posts = client
        .subscribe("bsky.app.bsky.feed.post")
        .await
        .expect("sub");
    let mut feed = client.subscribe("bsky.app.bsky.feed.>").await.expect("sub");
    client.flush().await.expect("flush");

    let ingest = Ingest::spawn(&relay_base(&relay), &nats.url(), "corpus", &[], &[]);
    let js = jetstream(&nats.url()).await;
    wait_count(&js, "BSKY", 152, Duration::from_secs(60), &ingest).await;

    // Every event, through a pull consumer, equal to production Jetstream's but for time_us.
    let expected = expected();
    let stored = read_all(&js, "BSKY").await;
    assert_eq!(stored.len(), 152);
    let mut keys = std::collections::HashSet::new();
    let mut last_seq_by_did: HashMap<String, i64> = HashMap::new();
    for m in &stored {
        let mut got = m.json.clone();
        assert_eq!(
            got["time_us"].as_i64(),
            times.get(&m.relay_seq).copied(),
            "time_us is the frame's own time"
        );
        let key = event_key(&got);
        let want = expected
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected event {got}"));
        got["time_us"] = want["time_us"].clone();
        assert_eq!(&got, want);
        assert!(keys.insert(key), "event stored twice");
        let kind = got["kind"].as_str().expect("kind");
        let want_subject = match kind {
            "commit" => format!(
                "bsky.{}",
                got["commit"]["collection"].as_str().expect("collection")
            ),
            other => format!("bsky.{other}"),
        };
        assert_eq!(m.subject, want_subject);
        assert!(!m.msg_id.is_empty());
        // Per-DID order: relay order is kept within each repo.
        let did = got["did"].as_str().expect("did").to_string();
        if let Some(prev) = last_seq_by_did.insert(did.clone(), m.relay_seq) {
            assert!(prev <= m.relay_seq, "order broken for {did}");
        }
    }
    // And the stream as a whole is in relay order.
    assert!(stored.windows(2).all(|w| w[0].relay_seq <= w[1].relay_seq));

    // Core subscribers got exactly their subjects.
    let mut post_ops = HashMap::new();
    for _ in 0..18 {
        let m = tokio::time::timeout(Duration::from_secs(5), posts.next())
            .await
            .expect("post in time")
            .expect("subscription open");
        let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("json");
        *post_ops
            .entry(v["commit"]["operation"].as_str().expect("op").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(post_ops.get("create"), Some(&17));
    assert_eq!(post_ops.get("delete"), Some(&1));
    let mut feed_count = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), feed.next()).await {
        let collection = m.subject.as_str().strip_prefix("bsky.").expect("prefix");
        assert!(
            matches!(
                collection,
                "app.bsky.feed.post" | "app.bsky.feed.like" | "app.bsky.feed.repost"
            ),
            "unexpected subject {}",
            m.subject
        );
        feed_count += 1;
    }
    assert_eq!(feed_count, 138);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), posts.next())
            .await
            .is_err(),
        "more than 18 post operations"
    );
    // A clean stop releases the lease, so the next ingestor starts at once.
    let mut ingest = ingest;
    let status = ingest.child.terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");

    // The same capture asked for again with an explicit, older cursor: what the stream
    // holds is not stored twice (the stream's last message says how far it goes).
    let again = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        "corpus-again",
        &[],
        &["--cursor", &(CORPUS_FIRST_SEQ - 1).to_string()],
    );
    again
        .wait_metric(
            "bsky_ingest_cursor_seq",
            (CORPUS_FIRST_SEQ + 149) as f64,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(stream_count(&js, "BSKY").await, 152);
    assert_eq!(
        again.metric("bsky_ingest_already_stored_total").await,
        Some(152.0)
    );
}
