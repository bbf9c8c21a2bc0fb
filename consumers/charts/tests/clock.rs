//! Clock sanity and status truth, on the real corpus through the real ingestor:
//!
//! 1. one like dated 2030 and one dated 2019 published after the corpus leave the page
//!    (every range) and the status as they were, and are counted under `future` and
//!    `too_old` (status and metric);
//! 2. a like dated days before the newest event, arriving last, leaves "Data up to" at
//!    the newest event time, not at the last applied one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use charts::query::Range;
use std::sync::Arc;

const LIKE: &str = "app.bsky.feed.like";

async fn publish(url: &str, time_us: i64, rkey: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let body = kit::testing::commit_json("did:plc:clocktest", time_us, LIKE, "create", rkey);
    js.publish(
        contract::subject::collection(contract::Nsid::parse(LIKE).unwrap()),
        body.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// Every range's page, and the status.
async fn snapshot(addr: std::net::SocketAddr) -> (Vec<String>, serde_json::Value) {
    let mut pages = Vec::new();
    for r in Range::EVERY {
        let (code, body) = common::get(addr, &format!("/?range={}", r.as_str()))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        pages.push(body);
    }
    let (_, status) = common::get(addr, "/api/status").await.unwrap();
    (pages, serde_json::from_str(&status).unwrap())
}

#[tokio::test]
async fn future_and_too_old_events_are_counted_not_charted_and_status_names_the_newest() {
    let capture = Arc::new(staging::fixtures::corpus().unwrap());
    let pipeline = ingest::testing::Pipeline::start(capture, Default::default())
        .await
        .unwrap();
    pipeline.wait_stored(152, common::WAIT).await.unwrap();
    let url = pipeline.nats.url();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(&url, &dir.path().join("charts.db"), "charts");
    let charts = common::InProcess::start(cfg, kit::Start::Resume);
    common::wait_caught_up(charts.addr, 152, common::WAIT).await;
    let (pages, status) = snapshot(charts.addr).await;
    assert_eq!(status["clock"]["skipped"]["future"], 0, "{status}");
    let newest = status["newest_event_us"].as_i64().unwrap();
    assert!(
        pages[0].contains("Likes per hour") && pages[3].contains("Likes per day"),
        "the pages are drawn"
    );

    publish(&url, 1_893_456_000_000_000, "future") // 2030-01-01
        .await;
    publish(&url, 1_546_300_800_000_000, "old") // 2019-01-01
        .await;
    common::wait_caught_up(charts.addr, 154, common::WAIT).await;
    let (after, status2) = snapshot(charts.addr).await;
    for (r, (a, b)) in Range::EVERY.iter().zip(pages.iter().zip(&after)) {
        assert_eq!(a, b, "the {} page is as it was", r.as_str());
    }
    for key in ["text", "data_up_to", "newest_event_us", "lag"] {
        assert_eq!(status[key], status2[key], "status {key}");
    }
    assert_eq!(status2["clock"]["skipped"]["future"], 1, "{status2}");
    assert_eq!(status2["clock"]["skipped"]["too_old"], 1, "{status2}");
    let (_, metrics) = common::get(charts.addr, "/metrics").await.unwrap();
    for reason in ["future", "too_old"] {
        let line = format!("bsky_charts_clock_skipped_events_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // A like dated three days before the newest event arrives last: the status still
    // names the newest event time; the last applied one is another.
    let older = newest - 3 * 86_400_000_000;
    publish(&url, older, "older").await;
    let status3 = common::wait_caught_up(charts.addr, 155, common::WAIT).await;
    assert_eq!(status3["progress"]["time_us"], older, "{status3}");
    assert_eq!(status3["newest_event_us"], newest, "{status3}");
    assert_eq!(status3["text"], status["text"], "{status3}");
    let (_, daily) = common::get(charts.addr, "/api/daily?range=30d")
        .await
        .unwrap();
    let daily: serde_json::Value = serde_json::from_str(&daily).unwrap();
    let day = older / 1_000_000 / 86_400 * 86_400;
    let likes = daily["days"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["day"] == day)
        .map(|d| d["counts"][1].clone());
    assert_eq!(
        likes,
        Some(1.into()),
        "the older like is charted on its day"
    );
    charts.stop().await;
    pipeline.stop().await.unwrap();
}
