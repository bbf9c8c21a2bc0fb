//! NATS stalls, dropped connections, signals during an outage, a second writer, a stale
//! writer that wakes up mid-batch, a relay that answers FutureCursor: every op still
//! stored exactly once, in the documented order, or the ingestor stops with the reason.
//! The stall, the dropped connection and the lease takeover run on both publish paths
//! (fast-ingest batches and one ack per message); the others on the default (batches).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::*;
use staging::replay::{ReplayOptions, Speed};
use std::time::{Duration, Instant};

/// SIGSTOP or SIGCONT for the test's nats-server.
fn signal_server(nats: &testkit::NatsServer, sig: &str) {
    let pid = nats.pid().expect("server running");
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_longer_than_ack_timeout_and_duplicate_window() {
    stall(PublishPath::Batched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_longer_than_ack_timeout_and_duplicate_window_per_message() {
    stall(PublishPath::PerMessage).await;
}

async fn stall(path: PublishPath) {
    let nats = testkit::NatsServer::start().expect("nats-server");
    let capture = synth(30_000, 31);
    let expected = expected_messages(&capture);
    let relay = relay(capture.clone(), ReplayOptions::default()).await; // full speed: catch-up
    let env = path.with(&[
        ("BSKY_INGEST_PUBLISH__ACK_TIMEOUT", "1s"),
        ("BSKY_INGEST_STREAM__DUPLICATE_WINDOW", "1s"),
    ]);
    let ingest = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        &path.name("stall"),
        &env,
        &[],
    );
    ingest
        .wait_metric("bsky_ingest_acked_total", 3000.0, Duration::from_secs(60))
        .await;
    signal_server(&nats, "STOP");
    tokio::time::sleep(Duration::from_secs(4)).await; // > ack_timeout + duplicate_window
                                                      // While stalled the window is full and the lag keeps growing at scrape time.
    let lag = ingest.metric("bsky_ingest_lag_seconds").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let later = ingest.metric("bsky_ingest_lag_seconds").await.unwrap();
    assert!(later >= lag + 1.0, "lag {lag} then {later}");
    signal_server(&nats, "CONT");
    let js = jetstream(&nats.url()).await;
    wait_exact(&js, &expected, Duration::from_secs(120), &ingest).await;
    assert_order(&js, &capture).await;
    path.assert_taken(&js, &ingest).await;
    assert!(
        ingest
            .metric("bsky_ingest_publish_recoveries_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_loses_buffered_publishes_but_not_ops() {
    dropped_connection(PublishPath::Batched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_loses_buffered_publishes_but_not_ops_per_message() {
    dropped_connection(PublishPath::PerMessage).await;
}

async fn dropped_connection(path: PublishPath) {
    let mut nats = testkit::NatsServer::start().expect("nats-server");
    let capture = synth(30_000, 32);
    let expected = expected_messages(&capture);
    let relay = relay(capture.clone(), ReplayOptions::default()).await;
    let ingest = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        &path.name("drop"),
        &path.with(&[("BSKY_INGEST_PUBLISH__ACK_TIMEOUT", "1s")]),
        &[],
    );
    for round in 1..=2 {
        ingest
            .wait_metric(
                "bsky_ingest_acked_total",
                5000.0 * f64::from(round),
                Duration::from_secs(60),
            )
            .await;
        nats.kill(); // SIGKILL: the connection drops with publishes in flight and buffered
        nats.restart().expect("restart nats-server");
    }
    let js = jetstream(&nats.url()).await;
    wait_exact(&js, &expected, Duration::from_secs(120), &ingest).await;
    assert_order(&js, &capture).await;
    path.assert_taken(&js, &ingest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_nats_is_stalled_exits_within_5s_and_resumes_exactly() {
    let nats = testkit::NatsServer::start().expect("nats-server");
    let capture = synth(20_000, 33);
    let expected = expected_messages(&capture);
    let relay = relay(
        capture.clone(),
        ReplayOptions {
            speed: Speed::Factor(8.0),
            ..Default::default()
        },
    )
    .await;
    let mut ingest = Ingest::spawn(&relay_base(&relay), &nats.url(), "term-stalled", &[], &[]);
    ingest
        .wait_metric("bsky_ingest_acked_total", 2000.0, Duration::from_secs(60))
        .await;
    signal_server(&nats, "STOP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    ingest.child.signal("TERM").unwrap();
    let status = ingest.exit_within(Duration::from_secs(5));
    assert!(status.success(), "{status:?}\n{}", ingest.log_tail());
    assert!(t.elapsed() < Duration::from_secs(5));

    // A second signal exits at once.
    let mut again = Ingest::spawn(&relay_base(&relay), &nats.url(), "term-twice", &[], &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await; // stuck connecting to a stalled server
    again.child.signal("TERM").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    again.child.signal("INT").unwrap();
    again.exit_within(Duration::from_secs(2));
    assert!(t.elapsed() < Duration::from_secs(2));

    signal_server(&nats, "CONT");
    let resumed = Ingest::spawn(&relay_base(&relay), &nats.url(), "term-resumed", &[], &[]);
    let js = jetstream(&nats.url()).await;
    wait_exact(&js, &expected, Duration::from_secs(120), &resumed).await;
    assert_order(&js, &capture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ingestor_refuses_and_a_successor_takes_over() {
    lease_takeover(PublishPath::Batched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ingestor_refuses_and_a_successor_takes_over_per_message() {
    lease_takeover(PublishPath::PerMessage).await;
}

async fn lease_takeover(path: PublishPath) {
    let nats = testkit::NatsServer::start().expect("nats-server");
    let capture = synth(20_000, 34);
    let expected = expected_messages(&capture);
    let relay = relay(
        capture.clone(),
        ReplayOptions {
            speed: Speed::Factor(2.0),
            ..Default::default()
        },
    )
    .await;
    let env = path.with(&[("BSKY_INGEST_LEASE__TTL", "2s")]);
    let mut first = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        &path.name("lease-first"),
        &env,
        &[],
    );
    first
        .wait_metric("bsky_ingest_acked_total", 1000.0, Duration::from_secs(60))
        .await;

    let mut second = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        &path.name("lease-second"),
        &env,
        &[],
    );
    let status = second.exit_within(Duration::from_secs(10));
    assert!(!status.success());
    let log = second.log_text();
    assert!(log.contains("holds the lease"), "{log}");
    assert!(first.alive(), "the first one runs on\n{}", first.log_tail());

    first.kill();
    let t = Instant::now();
    let successor = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        &path.name("lease-successor"),
        &env,
        &[],
    );
    successor
        .wait_metric(
            "bsky_ingest_events_total{kind=\"commit\"}",
            1.0,
            Duration::from_secs(10),
        )
        .await;
    // Taken over within the lease time (plus start-up and polling).
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(successor.log_text().contains("took over the lease"));
    let js = jetstream(&nats.url()).await;
    wait_exact(&js, &expected, Duration::from_secs(120), &successor).await;
    assert_order(&js, &capture).await;
    path.assert_taken(&js, &successor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_that_wakes_up_mid_batch_lands_nothing() {
    // Writer A catches up on capture X in fast-ingest batches and is frozen (SIGSTOP)
    // mid-batch. Writer B takes the lease over and stores capture Y from another relay.
    // A wakes up (within the server's 10 s batch timeout, so its batch is still open) and
    // goes on with the batch: not one more message of X may land, and A must stop.
    let nats = testkit::NatsServer::start().expect("nats-server");
    let (x, y) = (synth(20_000, 41), synth(5_000, 42));
    let (expected_x, expected_y) = (expected_messages(&x), expected_messages(&y));
    assert!(expected_x.keys().all(|k| !expected_y.contains_key(k)));
    let relay_x = relay(
        x.clone(),
        ReplayOptions {
            speed: Speed::Factor(2.0),
            ..Default::default()
        },
    )
    .await;
    let relay_y = relay(y.clone(), ReplayOptions::default()).await;
    let env = [("BSKY_INGEST_LEASE__TTL", "1s")];
    let mut a = Ingest::spawn(&relay_base(&relay_x), &nats.url(), "stale-a", &env, &[]);
    a.wait_metric("bsky_ingest_acked_total", 2000.0, Duration::from_secs(60))
        .await;
    a.child.signal("STOP").unwrap();
    // What A sent before it froze is stored within this second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let js = jetstream(&nats.url()).await;
    let at_stop = stream_count(&js, "BSKY").await;
    assert!((at_stop as usize) < expected_x.len(), "A froze mid-run");

    let b = Ingest::spawn(&relay_base(&relay_y), &nats.url(), "stale-b", &env, &[]);
    wait_count(&js, "BSKY", at_stop + 1000, Duration::from_secs(30), &b).await;
    a.child.signal("CONT").unwrap();
    let status = a.exit_within(Duration::from_secs(20));
    assert!(!status.success(), "the stale writer must stop");
    let log = a.log_text();
    assert!(
        log.contains("another writer") || log.contains("lost the lease"),
        "{}",
        a.log_tail()
    );
    // Its first publish after waking was refused by the stream: the fence, not the lease,
    // kept it out.
    assert!(log.contains("wrong last sequence"), "{}", a.log_tail());

    wait_count(
        &js,
        "BSKY",
        at_stop + expected_y.len() as u64,
        Duration::from_secs(60),
        &b,
    )
    .await;
    let stored = read_all(&js, "BSKY").await;
    let (from_x, from_y): (Vec<_>, Vec<_>) = stored
        .into_iter()
        .partition(|m| expected_x.contains_key(&m.msg_id));
    assert_eq!(
        from_x.len() as u64,
        at_stop,
        "A landed nothing after it froze"
    );
    let ids: std::collections::HashSet<&str> = from_x.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(ids.len(), from_x.len(), "X stored once");
    assert!(
        from_x.last().map(|m| m.stream_seq) < from_y.first().map(|m| m.stream_seq),
        "X before Y"
    );
    assert_exact_stored(&from_y, &expected_y);
    assert_order_stored(&from_y, &y);
    PublishPath::Batched.assert_taken(&js, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_answers_future_cursor_every_time_stops_the_ingestor() {
    // Relay A serves the real corpus; then relay B, with lower seq numbers, answers at the
    // same address (a reset relay, or another one behind the same URL).
    let nats = testkit::NatsServer::start().expect("nats-server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop_a = tokio_util::sync::CancellationToken::new();
    let a = {
        let stop = stop_a.clone();
        tokio::spawn(staging::replay::serve(
            listener,
            corpus(),
            ReplayOptions::default(),
            async move { stop.cancelled().await },
        ))
    };
    let base = format!("ws://{addr}");
    let mut ingest = Ingest::spawn(&base, &nats.url(), "future-a", &[], &[]);
    ingest
        .wait_metric(
            "bsky_ingest_cursor_seq",
            (CORPUS_FIRST_SEQ + 149) as f64,
            Duration::from_secs(30),
        )
        .await;
    assert!(ingest.child.terminate(Duration::from_secs(5)).is_some());
    stop_a.cancel();
    let _ = a.await;

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let b = tokio::spawn(staging::replay::serve(
        listener,
        synth(2_000, 35),
        ReplayOptions::default(),
        std::future::pending(),
    ));
    let mut reset = Ingest::spawn(&base, &nats.url(), "future-b", &[], &[]);
    let status = reset.exit_within(Duration::from_secs(20));
    assert!(!status.success());
    let log = reset.log_text();
    assert!(
        log.contains("FutureCursor") && log.contains("relay.start_cursor"),
        "{log}"
    );
    assert!(log.contains("on 3 connections in a row"), "{log}");
    b.abort();
}
