//! The long view: a capture covering 400 UTC days (a few ops a day, ending ten days ago)
//! gives the 1-year and the all views with the daily figures this test counts on its own,
//! as JSON and as CSV, and the page draws them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::Op;
use std::collections::{BTreeMap, BTreeSet};

const DAYS: i64 = 400;
const COLLS: [&str; 4] = [
    "app.bsky.feed.like",
    "app.bsky.feed.post",
    "app.bsky.feed.repost",
    "app.bsky.graph.follow",
];

/// Day `d`'s ops: 2 to 6 of them, from 1 to 3 distinct DIDs.
fn ops(first_day_us: i64) -> Vec<Op> {
    let mut out = Vec::new();
    for d in 0..DAYS {
        for k in 0..(2 + d % 5) {
            out.push(Op {
                did: format!("did:plc:user{}", (d + k) % (1 + d % 3) + d % 11),
                time_us: first_day_us + d * 86_400_000_000 + (k * 4 + d % 3) * 3_600_000_000,
                collection: COLLS[((d + k) % 4) as usize],
                langs: vec!["en"],
            });
        }
    }
    out
}

#[tokio::test]
async fn four_hundred_days_give_the_year_and_all_views() {
    let first = common::days_ago(DAYS + 10);
    let ops = ops(first);
    // The test's own count: day → (users, [posts, likes, reposts, follows]).
    let mut want: BTreeMap<i64, (BTreeSet<&str>, [i64; 4])> = BTreeMap::new();
    for op in &ops {
        let day = op.time_us / 86_400_000_000 * 86_400;
        let e = want.entry(day).or_default();
        e.0.insert(&op.did);
        let col = [
            "app.bsky.feed.post",
            "app.bsky.feed.like",
            "app.bsky.feed.repost",
            "app.bsky.graph.follow",
        ]
        .iter()
        .position(|c| op.collection == *c)
        .unwrap();
        e.1[col] += 1;
    }
    assert_eq!(want.len() as i64, DAYS);

    let mut nats = testkit::NatsServer::start().unwrap();
    let js = common::own_stream(&nats).await;
    let last = common::publish(&js, &ops).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(&nats.url(), &dir.path().join("charts.db"), "charts");
    let charts = common::InProcess::start(cfg, kit::Start::Resume);
    common::wait_caught_up(charts.addr, last, common::WAIT).await;

    for (range, days) in [("1y", 365), ("all", DAYS)] {
        let (code, body) = common::get(charts.addr, &format!("/api/daily?range={range}"))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let got: BTreeMap<i64, (i64, [i64; 4])> = v["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let c = &d["counts"];
                let n = |i: usize| c[i].as_i64().unwrap();
                (
                    d["day"].as_i64().unwrap(),
                    (d["users"].as_i64().unwrap(), [n(0), n(1), n(2), n(3)]),
                )
            })
            .collect();
        let expected: BTreeMap<i64, (i64, [i64; 4])> = want
            .iter()
            .rev()
            .take(days as usize)
            .map(|(d, (users, c))| (*d, (users.len() as i64, *c)))
            .collect();
        assert_eq!(got, expected, "daily figures of {range}");

        let (code, csv) = common::get(charts.addr, &format!("/api/daily.csv?range={range}"))
            .await
            .unwrap();
        assert_eq!(code, 200);
        let mut lines = csv.lines();
        assert_eq!(
            lines.next(),
            Some("day_utc,day_unix,users,posts,likes,reposts,follows,blocks,profile_updates,deletes,new_accounts")
        );
        let rows: BTreeMap<i64, (i64, [i64; 4])> = lines
            .map(|l| {
                let f: Vec<i64> = l.split(',').skip(1).map(|x| x.parse().unwrap()).collect();
                (f[0], (f[1], [f[2], f[3], f[4], f[5]]))
            })
            .collect();
        assert_eq!(rows, expected, "daily CSV of {range}");

        let (code, page) = common::get(charts.addr, &format!("/?range={range}"))
            .await
            .unwrap();
        assert_eq!(code, 200);
        assert!(page.contains("Likes per day"), "the {range} page");
        let rows = page.matches("<tr data-day=").count();
        assert_eq!(rows as i64, days, "the {range} page's daily table");
    }
    charts.stop().await;
    nats.stop();
}
