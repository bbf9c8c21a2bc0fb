//! Event time only: a synthesized capture of 50,000 ops spanning two UTC days, consumed
//! once at live pace (the relay paced to take about a minute, charts reading as the
//! ingestor stores) and once in one catch-up burst, gives identical tables, which differ
//! from what bucketing by the clock (JetStream's storage time) would give.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use futures_util::StreamExt;
use staging::replay::{ReplayOptions, Speed};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long the paced replay should take.
const PACED: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_and_burst_give_identical_tables() {
    let (capture, report) = common::two_days();
    let (t0, t1) = report.time_range.unwrap();
    assert!(report.ops >= 50_000);
    assert!(
        t1 / 86_400_000_000 > t0 / 86_400_000_000,
        "event time spans two UTC days"
    );
    let factor = (t1 - t0) as f64 / 1e6 / PACED.as_secs_f64();
    let dir = tempfile::tempdir().unwrap();

    // Paced: charts runs from the start and reads each message as the ingestor stores it.
    let paced = async {
        let opts = ReplayOptions {
            speed: Speed::Factor(factor),
            ..Default::default()
        };
        let pipeline = ingest::testing::Pipeline::start(capture.clone(), opts)
            .await
            .unwrap();
        let cfg = common::config(&pipeline.nats.url(), &dir.path().join("paced.db"), "charts");
        let charts = common::InProcess::start(cfg, kit::Start::Resume);
        let started = Instant::now();
        let last = common::settled(&pipeline.nats.url()).await;
        let took = started.elapsed();
        common::wait_caught_up(charts.addr, last, common::WAIT).await;
        let wall = storage_hours(&pipeline.nats.url()).await;
        charts.stop().await;
        let t = common::tables(&dir.path().join("paced.db"));
        pipeline.stop().await.unwrap();
        (t, wall, took)
    };
    // Burst: the whole capture is stored first, then charts catches up in one go.
    let burst = async {
        let pipeline = ingest::testing::Pipeline::start(capture.clone(), Default::default())
            .await
            .unwrap();
        let last = common::settled(&pipeline.nats.url()).await;
        let cfg = common::config(&pipeline.nats.url(), &dir.path().join("burst.db"), "charts");
        let charts = common::InProcess::start(cfg, kit::Start::Resume);
        common::wait_caught_up(charts.addr, last, common::WAIT).await;
        charts.stop().await;
        let t = common::tables(&dir.path().join("burst.db"));
        pipeline.stop().await.unwrap();
        t
    };
    let ((paced, wall, took), burst) = tokio::join!(paced, burst);
    eprintln!(
        "paced replay took {took:?} (factor {factor:.0}); {} hours charted",
        paced.hours.len()
    );
    assert!(took > PACED / 2, "the paced run was paced ({took:?})");

    assert!(paced.hours.len() >= 12, "{} hours", paced.hours.len());
    assert_eq!(paced.days.len(), 2, "two UTC days of DAU");
    assert!(
        paced.hours.iter().map(|h| h.counts[0]).sum::<i64>() > 1000,
        "posts were counted"
    );
    assert_eq!(paced.hours, burst.hours, "hourly figures");
    assert_eq!(paced.days, burst.days, "daily active users");
    assert_eq!(paced.langs, burst.langs, "languages");

    // Bucketing by the clock (when JetStream stored each post) gives other tables: the
    // whole capture falls into the hour or two of the test run.
    let by_event: BTreeMap<i64, i64> = paced
        .hours
        .iter()
        .filter(|h| h.counts[0] > 0)
        .map(|h| (h.hour, h.counts[0]))
        .collect();
    assert_eq!(
        wall.values().sum::<i64>(),
        by_event.values().sum::<i64>(),
        "same posts"
    );
    assert!(wall.len() <= 2, "{wall:?}");
    assert_ne!(wall, by_event, "wall-clock bucketing differs");
}

/// Posts per hour of JetStream storage time (the wall clock when they were stored).
async fn storage_hours(url: &str) -> BTreeMap<i64, i64> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    let c = stream
        .create_consumer(pull::Config {
            filter_subject: contract::subject::POSTS.into(),
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = c.cached_info().num_pending;
    let mut msgs = c.messages().await.unwrap();
    let mut out = BTreeMap::new();
    for _ in 0..pending {
        let m = msgs.next().await.unwrap().unwrap();
        let p: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if p["commit"]["operation"] == "create" {
            let stored = m.info().unwrap().published.unix_timestamp();
            *out.entry(stored / 3600 * 3600).or_default() += 1;
        }
    }
    out
}
