//! The index alone (no NATS): what creates, deletes and retention do to the feeds, and
//! that the result does not depend on how the stream was cut into batches (a restart
//! after `kill -9` cuts it differently).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use feedgen::config::Feed;
use feedgen::index::Index;
use kit::event::Event;
use kit::rusqlite::Connection;
use kit::{HandleError, Handler, Msg};
use prometheus_client::registry::Registry;
use std::path::Path;

const T0: i64 = 1_783_175_887_000_000; // 2026-07-04T14:38:07Z
const DAY: i64 = 86_400_000_000;

fn feed(name: &str) -> Feed {
    Feed {
        name: name.into(),
        ..Feed::default()
    }
}

fn index(feeds: &[Feed]) -> Index {
    let names: Vec<String> = feeds.iter().map(|f| f.name.clone()).collect();
    let metrics = feedgen::metrics::Metrics::register(&mut Registry::default(), &names);
    Index::new(feeds, metrics).unwrap()
}

/// A post create at event time `t`, created (by its record) at `created`.
fn create(did: &str, rkey: &str, t: i64, created: i64, text: &str) -> String {
    format!(
        r#"{{"did":"{did}","time_us":{t},"kind":"commit","commit":{{"rev":"3mptbypluud2a","operation":"create","collection":"app.bsky.feed.post","rkey":"{rkey}","record":{{"$type":"app.bsky.feed.post","text":"{text}","createdAt":"{}"}},"cid":"bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5kpqcsgz7soqqru"}}}}"#,
        staging::time::format_rfc3339_millis(created)
    )
}

fn delete(did: &str, rkey: &str, t: i64) -> String {
    kit::testing::commit_json(did, t, "app.bsky.feed.post", "delete", rkey)
}

fn uri(did: &str, rkey: &str) -> String {
    format!("at://{did}/app.bsky.feed.post/{rkey}")
}

/// Applies `payloads` (stream sequences from 1) in batches of `batch`, one transaction
/// each, as kit does.
fn apply(conn: &mut Connection, h: &mut Index, payloads: &[String], batch: usize) {
    let tx = conn.transaction().unwrap();
    h.init(&tx).unwrap();
    tx.commit().unwrap();
    for (b, chunk) in payloads.chunks(batch).enumerate() {
        let tx = conn.transaction().unwrap();
        for (i, p) in chunk.iter().enumerate() {
            let seq = (b * batch + i + 1) as u64;
            let msg = Msg {
                seq,
                subject: feedgen::SUBJECT,
                event: Event::parse(p.as_bytes()).unwrap(),
                payload: p.as_bytes(),
                stored_ns: 0,
            };
            h.handle(&tx, &msg).unwrap();
        }
        h.flush(&tx).unwrap();
        tx.commit().unwrap();
        h.committed();
    }
}

fn contents(db: &Path, name: &str) -> Vec<String> {
    feedgen::feed_contents(db, name).unwrap()
}

fn db() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedgen.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    (dir, path, conn)
}

#[test]
fn creates_add_deletes_remove_newest_first_with_the_future_clamped() {
    let feeds = [
        Feed {
            words: vec!["rust".into()],
            ..feed("rust")
        },
        feed("all"),
    ];
    let (_dir, path, mut conn) = db();
    let mut h = index(&feeds);
    let a = "did:plc:aaaa";
    let msgs = vec![
        create(a, "1", T0, T0 - 5_000_000, "rust one"),
        create(a, "2", T0 + 1_000_000, T0 - 9_000_000, "go two"),
        // Claims to be from next year: sorts at its event time instead.
        create(a, "3", T0 + 2_000_000, T0 + 365 * DAY, "Rust three"),
        create(a, "4", T0 + 3_000_000, T0 - 1_000_000, "rusty four"),
        delete(a, "2", T0 + 4_000_000),
        delete(a, "404", T0 + 5_000_000),
    ];
    apply(&mut conn, &mut h, &msgs, 100);
    assert_eq!(contents(&path, "rust"), [uri(a, "3"), uri(a, "1")]);
    assert_eq!(
        contents(&path, "all"),
        [uri(a, "3"), uri(a, "4"), uri(a, "1")]
    );
    // Deleting a post in two feeds removes it from both, and its row.
    apply(&mut conn, &mut h, &[delete(a, "3", T0 + 6_000_000)], 1);
    assert_eq!(contents(&path, "rust"), [uri(a, "1")]);
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM posts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
    let checkpoint: i64 = conn
        .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
        .unwrap();
    assert_eq!(checkpoint, 10_000, "set by init, inside its transaction");
}

#[test]
fn a_malformed_post_is_poison() {
    let (_dir, _path, mut conn) = db();
    let mut h = index(&[feed("all")]);
    let tx = conn.transaction().unwrap();
    h.init(&tx).unwrap();
    let p = r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"rev":"x","operation":"create","collection":"app.bsky.feed.post","rkey":"r","record":{"text":5,"createdAt":"2026-07-04T00:00:00Z"}}}"#;
    let msg = Msg {
        seq: 1,
        subject: feedgen::SUBJECT,
        event: Event::parse(p.as_bytes()).unwrap(),
        payload: p.as_bytes(),
        stored_ns: 0,
    };
    assert!(matches!(
        h.handle(&tx, &msg),
        Err(HandleError::Poison("bad_post"))
    ));
}

/// A stream that exercises both retentions, deletes and duplicates.
fn busy_stream() -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..400i64 {
        let did = format!("did:plc:u{}", i % 7);
        let t = T0 + i * 900_000_000; // 15 min apart: 400 events span ~4 days
        let created = t - (i * 7919 % 600) * 1_000_000; // up to 10 min earlier, shuffled
        let text = if i % 3 == 0 {
            "rust news"
        } else {
            "other news"
        };
        out.push(create(&did, &format!("k{i}"), t, created, text));
        if i % 5 == 4 {
            let victim = i - 3;
            out.push(delete(
                &format!("did:plc:u{}", victim % 7),
                &format!("k{victim}"),
                t + 1,
            ));
        }
        if i % 50 == 0 {
            out.push(create(&did, &format!("k{i}"), t + 2, created, text)); // duplicate
        }
    }
    out
}

fn retention_feeds() -> Vec<Feed> {
    vec![
        Feed {
            words: vec!["rust".into()],
            max_posts: Some(20),
            ..feed("rust")
        },
        Feed {
            max_days: Some(1),
            max_posts: None,
            ..feed("day")
        },
        Feed {
            max_days: Some(2),
            max_posts: Some(150),
            ..feed("both")
        },
    ]
}

#[test]
fn retention_keeps_the_newest_by_count_and_by_event_time() {
    let (_dir, path, mut conn) = db();
    let mut h = index(&retention_feeds());
    let stream = busy_stream();
    apply(&mut conn, &mut h, &stream, 37);
    let rust = contents(&path, "rust");
    // 20 kept, then the stream's last op deletes one of them (k396): nothing comes back.
    assert_eq!(rust.len(), 19);
    assert!(!rust.contains(&uri("did:plc:u4", "k396")));
    assert_eq!(rust[0], uri("did:plc:u0", "k399"));
    // The day feed: everything within a day (to the minute) of the newest event.
    let last_t = T0 + 399 * 900_000_000;
    let cutoff = (last_t - DAY) / 60_000_000 * 60_000_000;
    let conn_r = kit::state::open_reader(&path).unwrap();
    let (n, oldest): (i64, i64) = conn_r
        .query_row(
            "SELECT COUNT(*), MIN(sort_at) FROM feed_posts WHERE feed = (SELECT id FROM feeds WHERE name = 'day')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        oldest >= cutoff && oldest < cutoff + 20 * 60_000_000,
        "{oldest} vs {cutoff}"
    );
    assert!(
        (70..=100).contains(&n),
        "{n} posts in a day of 96 events less deletes"
    );
    assert_eq!(contents(&path, "day").len() as i64, n);
    assert!(contents(&path, "both").len() <= 150);
    // No post row is left that no feed holds.
    let orphans: i64 = conn_r
        .query_row("SELECT COUNT(*) FROM posts WHERE feeds = 0", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(orphans, 0);
}

#[test]
fn the_index_does_not_depend_on_the_batches() {
    let stream = busy_stream();
    let mut results = Vec::new();
    for batch in [1, 7, 64, 1000] {
        let (_dir, path, mut conn) = db();
        let mut h = index(&retention_feeds());
        apply(&mut conn, &mut h, &stream, batch);
        // A restart: a new handler over the same database, the rest of a stream.
        let mut h = index(&retention_feeds());
        let more = [create(
            "did:plc:new",
            "z",
            T0 + 400 * 900_000_000,
            T0 + 400 * 900_000_000,
            "rust",
        )];
        let tx = conn.transaction().unwrap();
        h.init(&tx).unwrap();
        tx.commit().unwrap();
        let tx = conn.transaction().unwrap();
        let msg = Msg {
            seq: 100_000,
            subject: feedgen::SUBJECT,
            event: Event::parse(more[0].as_bytes()).unwrap(),
            payload: more[0].as_bytes(),
            stored_ns: 0,
        };
        h.handle(&tx, &msg).unwrap();
        h.flush(&tx).unwrap();
        tx.commit().unwrap();
        h.committed();
        let all: Vec<Vec<String>> = ["rust", "day", "both"]
            .iter()
            .map(|f| contents(&path, f))
            .collect();
        results.push(all);
    }
    assert!(results[0].iter().all(|f| !f.is_empty()));
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
}

#[test]
fn a_rolled_back_batch_leaves_nothing_behind() {
    let (_dir, path, mut conn) = db();
    let feeds = [Feed {
        max_posts: Some(2),
        ..feed("all")
    }];
    let mut h = index(&feeds);
    let a = "did:plc:a";
    apply(
        &mut conn,
        &mut h,
        &[
            create(a, "1", T0, T0, "x"),
            create(a, "2", T0 + 1, T0 + 1, "x"),
        ],
        10,
    );
    // A batch that would evict "1", rolled back.
    let p = create(a, "3", T0 + 2, T0 + 2, "x");
    let tx = conn.transaction().unwrap();
    let msg = Msg {
        seq: 3,
        subject: feedgen::SUBJECT,
        event: Event::parse(p.as_bytes()).unwrap(),
        payload: p.as_bytes(),
        stored_ns: 0,
    };
    h.handle(&tx, &msg).unwrap();
    drop(tx);
    h.rolled_back();
    assert_eq!(contents(&path, "all"), [uri(a, "2"), uri(a, "1")]);
    // The same again, committed: the count was restored, so exactly one goes.
    let tx = conn.transaction().unwrap();
    h.handle(&tx, &msg).unwrap();
    h.flush(&tx).unwrap();
    tx.commit().unwrap();
    h.committed();
    assert_eq!(contents(&path, "all"), [uri(a, "3"), uri(a, "2")]);
}
