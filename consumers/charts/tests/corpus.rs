//! The 150 real frames through the real ingestor, then charts: its figures equal those
//! this test computes on its own from production Jetstream's `expected_v1.jsonl`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[tokio::test]
async fn corpus_figures_equal_those_computed_from_expected_v1() {
    // The test's own count, from Jetstream's output (not from our decoder or stream).
    let mut hours: BTreeMap<i64, [i64; 8]> = BTreeMap::new();
    let mut users: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for e in staging::fixtures::expected().unwrap() {
        if e["kind"] != "commit" {
            continue;
        }
        let t = e["time_us"].as_i64().unwrap() / 1_000_000;
        let (op, coll) = (
            e["commit"]["operation"].as_str().unwrap(),
            e["commit"]["collection"].as_str().unwrap(),
        );
        users
            .entry(t / 86_400 * 86_400)
            .or_default()
            .insert(e["did"].as_str().unwrap().into());
        let column = match (op, coll) {
            ("delete", _) => 6,
            ("create", "app.bsky.feed.post") => 0,
            ("create", "app.bsky.feed.like") => 1,
            ("create", "app.bsky.feed.repost") => 2,
            ("create", "app.bsky.graph.follow") => 3,
            ("create", "app.bsky.graph.block") => 4,
            ("update", "app.bsky.actor.profile") => 5,
            ("create", "app.bsky.actor.profile") => 7,
            _ => continue,
        };
        hours.entry(t / 3600 * 3600).or_default()[column] += 1;
    }
    let expected_posts: i64 = hours.values().map(|c| c[0]).sum();
    let expected_likes: i64 = hours.values().map(|c| c[1]).sum();
    assert!(
        expected_posts > 0 && expected_likes > 0,
        "the corpus has posts and likes"
    );

    let capture = Arc::new(staging::fixtures::corpus().unwrap());
    let pipeline = ingest::testing::Pipeline::start(capture, Default::default())
        .await
        .unwrap();
    pipeline.wait_stored(152, common::WAIT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(
        &pipeline.nats.url(),
        &dir.path().join("charts.db"),
        "charts",
    );
    let charts = common::InProcess::start(cfg, kit::Start::Resume);
    let status = common::wait_caught_up(charts.addr, 152, common::WAIT).await;
    assert!(
        status["lag"].as_str().unwrap().contains("up to date"),
        "{status}"
    );
    let t = common::tables(&charts.db);
    charts.stop().await;
    pipeline.stop().await.unwrap();

    let got: BTreeMap<i64, [i64; 8]> = t.hours.iter().map(|h| (h.hour, h.counts)).collect();
    assert_eq!(
        got, hours,
        "hourly posts, likes, reposts, follows, blocks, profile updates, deletes, new accounts"
    );
    let dau: BTreeMap<i64, i64> = t.days.iter().map(|d| (d.day, d.users)).collect();
    let want: BTreeMap<i64, i64> = users.iter().map(|(d, s)| (*d, s.len() as i64)).collect();
    assert_eq!(dau, want, "daily active users");
    let lang_posts: i64 = t.langs.iter().map(|l| l.posts).sum();
    assert!(
        lang_posts >= expected_posts,
        "every post has at least one language row"
    );
}
