//! Cursors older than the stream, served from the archive: the real-frame corpus ingested,
//! archived by the real archiver, the stream purged below sequence 101. With `[archive]`
//! set, a client with a sequence cursor or a time cursor older than the stream receives
//! exactly what the gateway sent before the purge, byte for byte (the archive keeps each
//! message's sequence and storage time), across the seam into the stream; filters apply
//! to the archived part too, and clients beyond `client.archive_readers` wait their turn.
//! Without an archive the cursor is clamped, and so is one older than the archive itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{read_until, Gateway, PATIENCE};
use serde_json::Value;
use std::time::{Duration, Instant};

const KEEP_FROM: u64 = 101;

/// Runs the real archiver in-process into `dir` until it holds every message up to `last`.
async fn archive_all(nats_url: &str, dir: &std::path::Path, last: u64) {
    let mut config = archive::config::Config::default();
    config.nats.url = nats_url.into();
    config.store.url = dir.display().to_string();
    config.segment.max_messages = 40;
    config.segment.max_age = Duration::from_millis(500);
    config.http.listen = String::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(archive::run(config.clone(), shutdown.clone()));
    let reader = archive::reader::Archive::new(archive::store::Store::open(&config.store).unwrap());
    let start = Instant::now();
    loop {
        let end = reader.end().await.unwrap_or(0);
        if end >= last {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "archived up to {end} of {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

fn cursor(v: &Value) -> u64 {
    v["cursor"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_older_than_the_stream_read_the_archive_then_the_stream() {
    let pipeline = common::corpus_pipeline().await;
    let url = pipeline.nats.url();
    let dir = tempfile::tempdir().unwrap();
    archive_all(&url, dir.path(), 152).await;

    // What the gateway sends from the start while the stream still holds everything.
    let plain = Gateway::start(common::config(&url)).await;
    let want = read_until(&plain, "cursor=1", 152).await;
    assert!(want.len() > 140, "{} events", want.len());

    // The stream loses its first 100 messages.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let mut stream = js.get_stream("BSKY").await.unwrap();
    stream.purge().sequence(KEEP_FROM).await.unwrap();
    let first = stream.info().await.unwrap().state.first_sequence;
    assert_eq!(first, KEEP_FROM);

    let mut config = common::config(&url);
    config.archive.url = dir.path().display().to_string();
    config.client.archive_readers = 1;
    let gw = Gateway::start(config).await;
    let tail =
        |from: u64| -> Vec<Value> { want.iter().filter(|v| cursor(v) >= from).cloned().collect() };

    // Sequence cursors: from the start, and from inside the archived part; three clients
    // at once through one archive reader's slot (the others wait their turn).
    let near_the_seam = format!("cursor={}", KEEP_FROM - 1);
    let (a, b, c) = tokio::join!(
        read_until(&gw, "cursor=1", 152),
        read_until(&gw, "cursor=37", 152),
        read_until(&gw, &near_the_seam, 152),
    );
    assert!(a == want, "cursor=1");
    assert!(b == tail(37), "cursor=37: {} events", b.len());
    assert!(
        c == tail(KEEP_FROM - 1),
        "cursor={}: {} events",
        KEEP_FROM - 1,
        c.len()
    );

    // Time cursors (storage time, as sent): the first event's, and one inside the archive.
    for i in [0, 60] {
        let t = want[i]["time_us"].as_i64().unwrap();
        let got = read_until(&gw, &format!("cursor={t}"), 152).await;
        let from = want
            .iter()
            .find(|v| v["time_us"].as_i64().unwrap() >= t)
            .unwrap();
        assert!(
            got == tail(cursor(from)),
            "time cursor {t}: {} events",
            got.len()
        );
    }

    // Filters apply to the archived part.
    let posts: Vec<Value> = want
        .iter()
        .filter(|v| v["commit"]["collection"] == "app.bsky.feed.post")
        .cloned()
        .collect();
    let last_post = cursor(posts.last().unwrap());
    assert!(posts.iter().any(|v| cursor(v) < KEEP_FROM) && cursor(&posts[0]) < last_post);
    let got = read_until(
        &gw,
        "wantedCollections=app.bsky.feed.post&cursor=1",
        last_post,
    )
    .await;
    assert!(got == posts, "posts: {} of {}", got.len(), posts.len());
    // Cursor 0 means the first message: nothing is lost.
    let got = read_until(&gw, "cursor=0", 152).await;
    assert!(got == want, "cursor=0: {} events", got.len());
    assert_eq!(gw.metric("bsky_gateway_cursor_clamped_total").await, 0.0);

    // An archive whose first segment is gone: cursors older than what it keeps start at
    // its first message and are counted as clamped; a cursor inside it is not.
    let late = tempfile::tempdir().unwrap();
    testkit::copy_dir(dir.path(), late.path()).unwrap();
    let entry = late.path().join(archive::format::manifest_key(1));
    let first_entry: Value = serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
    let kept_from = first_entry["last_seq"].as_u64().unwrap() + 1;
    assert!(
        kept_from > 1 && kept_from < KEEP_FROM,
        "kept from {kept_from}"
    );
    std::fs::remove_file(late.path().join(first_entry["key"].as_str().unwrap())).unwrap();
    std::fs::remove_file(&entry).unwrap();
    let mut config = common::config(&url);
    config.archive.url = late.path().display().to_string();
    let gw_late = Gateway::start(config).await;
    let clamped = || gw_late.metric("bsky_gateway_cursor_clamped_total");
    let got = read_until(&gw_late, "cursor=1", 152).await;
    assert!(got == tail(kept_from), "cursor=1: {} events", got.len());
    assert_eq!(clamped().await, 1.0);
    let t0 = want[0]["time_us"].as_i64().unwrap();
    let got = read_until(&gw_late, &format!("cursor={t0}"), 152).await;
    assert!(
        got == tail(kept_from),
        "time cursor {t0}: {} events",
        got.len()
    );
    assert_eq!(clamped().await, 2.0);
    let inside = format!("cursor={}", kept_from + 3);
    let got = read_until(&gw_late, &inside, 152).await;
    assert!(got == tail(kept_from + 3), "{inside}: {} events", got.len());
    assert_eq!(clamped().await, 2.0);
    gw_late.stop().await;

    // Without an archive the same cursor starts at the stream's first message, clamped.
    let got = read_until(&plain, "cursor=1", 152).await;
    assert!(got == tail(KEEP_FROM), "clamped: {} events", got.len());
    assert_eq!(plain.metric("bsky_gateway_cursor_clamped_total").await, 1.0);
    gw.stop().await;
    plain.stop().await;
}
