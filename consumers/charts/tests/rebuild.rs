//! Exact rebuilds whatever the events' clocks: a 3-day capture in which one event in 16
//! comes from a host whose clock runs 10 minutes to a day ahead, so events dated inside
//! the middle day sit in the stream among those of the first. Rebuilt `--from-time` the
//! middle day, and then from a time inside the stream's first UTC day, the figures equal
//! those of the uninterrupted run. Then the storage-time seek itself, on messages stored
//! a second apart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream;
use std::time::Duration;

const T0: i64 = 1_783_123_200_000_000; // 2026-07-04T00:00:00Z
const DAY_US: i64 = 86_400_000_000;
const EVENTS: i64 = 3_000;
const COLLECTIONS: [&str; 5] = [
    "app.bsky.feed.like",
    "app.bsky.feed.post",
    "app.bsky.feed.repost",
    "app.bsky.graph.follow",
    "app.bsky.actor.profile",
];

/// Event `i` of the capture, in relay order: (time, did, collection).
fn event(i: i64) -> (i64, String, &'static str) {
    let mut t = T0 + i * (3 * DAY_US / EVENTS);
    if i % 16 == 7 {
        // This host's clock runs ahead: 10 min to a day.
        t += 600_000_000 + (i * 7_919_000_000) % (DAY_US - 600_000_000);
    }
    let did = format!("did:plc:host{}", i % 97);
    (t, did, COLLECTIONS[(i % 5) as usize])
}

async fn own_stream(nats: &testkit::NatsServer) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(ingest::stream::stream_config(
        &ingest::config::Config::default().stream,
    ))
    .await
    .unwrap();
    js
}

async fn publish(js: &jetstream::Context, range: std::ops::Range<i64>) {
    let mut acks = Vec::new();
    for i in range {
        let (t, did, coll) = event(i);
        let body = kit::testing::commit_json(&did, t, coll, "create", &format!("k{i}"));
        acks.push(
            js.publish(
                contract::subject::collection(contract::Nsid::parse(coll).unwrap()),
                body.into(),
            )
            .await
            .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_time_rebuilds_equal_the_uninterrupted_run_whatever_the_clocks() {
    // What the old event-time seek (5 min margin) missed: events dated in the middle day
    // stored before the stream's in-order events reach its start minus the margin.
    let middle = T0 + DAY_US;
    let seek = (0..EVENTS)
        .find(|i| i % 16 != 7 && event(*i).0 >= middle - 300_000_000)
        .unwrap();
    let early = (0..seek)
        .filter(|i| (middle..middle + DAY_US).contains(&event(*i).0))
        .count();
    assert!(early >= 10, "{early} events of the middle day stored early");

    let mut nats = testkit::NatsServer::start().unwrap();
    let js = own_stream(&nats).await;
    publish(&js, 0..EVENTS).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("charts.db");
    let url = nats.url();
    let run = |start| common::InProcess::start(common::config(&url, &db, "charts"), start);

    let charts = run(kit::Start::Resume);
    common::wait_caught_up(charts.addr, EVENTS as u64, common::WAIT).await;
    charts.stop().await;
    let want = common::tables(&db);
    assert!(want.days.len() >= 3, "{} days", want.days.len());
    assert!(want.hours.len() > 60);

    for (what, from) in [
        ("the middle day", middle + 3 * 3_600_000_000),
        ("inside the stream's first UTC day", T0 + 3_600_000_000),
    ] {
        let charts = run(kit::Start::FromTime(from));
        common::wait_caught_up(charts.addr, EVENTS as u64, common::WAIT).await;
        charts.stop().await;
        let got = common::tables(&db);
        assert_eq!(got.hours, want.hours, "hourly figures, rebuilt from {what}");
        assert_eq!(got.days, want.days, "daily figures, rebuilt from {what}");
        assert_eq!(got.langs, want.langs, "languages, rebuilt from {what}");
    }
    nats.stop();
}

#[tokio::test]
async fn seek_by_storage_time_finds_the_first_message_stored_at_or_after() {
    let mut nats = testkit::NatsServer::start().unwrap();
    let js = own_stream(&nats).await;
    publish(&js, 0..5).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(&js, 5..10).await;
    let stream = js.get_stream("BSKY").await.unwrap();
    let sixth = stream.direct_get(6).await.unwrap().time;
    let fifth = stream.direct_get(5).await.unwrap().time;
    let us = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1000) as i64;
    let at = |t| kit::seek::seq_at_stored_time(&stream, t);
    assert_eq!(at(us(sixth)).await.unwrap(), Some(6));
    assert_eq!(at((us(fifth) + us(sixth)) / 2).await.unwrap(), Some(6));
    assert_eq!(at(us(fifth)).await.unwrap(), Some(5));
    assert_eq!(at(0).await.unwrap(), Some(1));
    assert_eq!(at(us(sixth) + 10_000_000).await.unwrap(), None);
    nats.stop();
}

#[tokio::test]
async fn a_rebuild_the_stream_can_no_longer_serve_is_refused_in_rfc3339() {
    let mut nats = testkit::NatsServer::start().unwrap();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut cfg = ingest::stream::stream_config(&ingest::config::Config::default().stream);
    cfg.max_messages = 100; // retention drops the first 200
    js.create_stream(cfg).await.unwrap();
    publish(&js, 0..300).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(&nats.url(), &dir.path().join("charts.db"), "charts");
    let from = T0 + DAY_US + 3_600_000_000; // widened to the day: 2026-07-05T00:00:00Z
    let e = charts::run(
        cfg,
        kit::Start::FromTime(from),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect_err("refused");
    let text = format!("{e:#}");
    assert!(
        text.contains("from 2026-07-05T00:00:00Z") && text.contains("from 2026-07-04T23:50:00Z on"),
        "{text}"
    );
    assert!(!text.contains("µs"), "{text}");
    nats.stop();
}
