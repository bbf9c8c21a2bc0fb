//! Paging and deletes on a stream filled by hand (real nats-server, real feedgen): a
//! deleted post disappears, and a walk with `limit=1` while posts keep arriving returns
//! every post it must exactly once, newest first (see `query.rs` for what "must" means).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{create, delete, feed, posts, uri, HandStream, T0};
use feedgen::config::Feed;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const S: i64 = 1_000_000;

/// Waits until feedgen has applied stream sequence `seq`.
async fn applied(db: &std::path::Path, seq: u64) {
    let t = std::time::Instant::now();
    while common::position(db) < seq {
        assert!(t.elapsed() < common::WAIT, "{seq} not applied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_a_limit_1_walk_while_posts_arrive() {
    let hs = HandStream::start().await;
    // The key of each post: (sort_at, stream sequence of its create).
    let mut keys: HashMap<String, (i64, u64)> = HashMap::new();
    let did = |i: i64| format!("did:plc:author{}", i % 5);
    for i in 0..40 {
        let t = T0 + i * S;
        // createdAt shuffled, some equal to each other (ties broken by sequence).
        let created = T0 - 100 * S + (i * 17 % 20) * S;
        let seq = hs
            .publish(create(&did(i), &format!("p{i}"), t, created, "Rust news"))
            .await;
        keys.insert(uri(&did(i), &format!("p{i}")), (created, seq));
        hs.publish(create(&did(i), &format!("x{i}"), t, created, "no match"))
            .await;
    }
    let gone = uri("did:plc:gone", "g1");
    hs.publish(create(
        "did:plc:gone",
        "g1",
        T0 + 50 * S,
        T0,
        "rust, then deleted",
    ))
    .await;
    hs.publish(delete("did:plc:gone", "g1", T0 + 51 * S)).await;

    let dir = tempfile::tempdir().unwrap();
    let feeds = vec![Feed {
        words: vec!["rust".into()],
        ..feed("rust")
    }];
    let cfg = common::config(&hs.nats.url(), &dir.path().join("f.db"), "feedgen", feeds);
    let fg = common::InProcess::start(cfg, kit::Start::Resume).await;
    common::wait_indexed(&hs.nats.url(), fg.addr).await;

    // The whole feed: 40 posts, by descending key; the deleted one is not there.
    let mut want: Vec<String> = keys.keys().cloned().collect();
    want.sort_by_key(|u| std::cmp::Reverse(keys[u]));
    let (code, body) = fg.skeleton("rust", "&limit=100").await;
    assert_eq!(code, 200);
    let initial = posts(&body);
    assert_eq!(initial, want);
    assert!(!initial.contains(&gone));

    // The walk. After each page, something happens, and is applied before the next page:
    // a post newer than everything, a post older than the cursor, a post tying the
    // cursor's time, or a delete of a post not reached yet.
    let mut expected: Vec<String> = initial.clone();
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut n = 0i64;
    let (mut behind, mut deleted) = (0, 0);
    loop {
        let extra = match &cursor {
            Some(c) => format!("&limit=1&cursor={c}"),
            None => "&limit=1".to_string(),
        };
        let (code, body) = fg.skeleton("rust", &extra).await;
        assert_eq!(code, 200, "{body}");
        let page = posts(&body);
        assert!(page.len() <= 1);
        seen.extend(page.iter().cloned());
        let Some(c) = body["cursor"].as_str() else {
            break;
        };
        cursor = Some(c.to_string());
        let at = keys[&page[0]];
        n += 1;
        let t = T0 + (100 + n) * S;
        let new = format!("n{n}");
        let (created, delete_one) = match n % 4 {
            0 => (t, false),                     // newest of all: above the cursor
            1 => (T0 - 1000 * S - n * S, false), // far behind the cursor
            2 => (at.0, false),                  // the cursor's time, a higher sequence
            _ => (t, true),
        };
        let seq = hs
            .publish(create("did:plc:late", &new, t, created, "late rust"))
            .await;
        let u = uri("did:plc:late", &new);
        keys.insert(u.clone(), (created, seq));
        if (created, seq) < at {
            expected.push(u); // below the cursor: this walk must return it
            behind += 1;
        }
        let mut last = seq;
        if delete_one {
            // The last post of the feed as it began, if not reached yet.
            let victim = initial
                .iter()
                .rev()
                .find(|v| expected.contains(v) && !seen.contains(v))
                .cloned();
            if let Some(victim) = victim {
                let (d, rkey) = victim
                    .strip_prefix("at://")
                    .and_then(|r| r.split_once("/app.bsky.feed.post/"))
                    .unwrap();
                last = hs.publish(delete(d, rkey, t)).await;
                expected.retain(|v| *v != victim);
                deleted += 1;
            }
        }
        applied(&fg.db, last).await;
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no post twice");
    expected.sort_by_key(|u| std::cmp::Reverse(keys[u]));
    assert_eq!(seen, expected, "every post it must, once, newest first");
    assert!(
        n >= 40 && behind >= 5 && deleted >= 5,
        "posts kept arriving and going during the walk ({n} pages, {behind} added behind \
         the cursor, {deleted} deleted ahead of it)"
    );
    assert!(
        seen.iter().any(|u| u.contains("/n1")),
        "a post inserted behind the cursor was read"
    );
    fg.stop().await;
}
