//! Frame kinds the real capture lacks, and malformed frames, served by the staging relay
//! to the `ingest` binary: each handled as subjects.md documents, and the ingestor goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use bytes::Bytes;
use common::*;
use staging::frames::{self, Op};
use std::sync::Arc;
use std::time::Duration;

const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const TIME: &str = "2026-07-04T14:38:09.000Z";

fn edit(frame: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    frames::replace_first(frame, from, to).expect("pattern in frame, same length")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_and_every_defect() {
    let corpus = corpus();
    let base = CORPUS_FIRST_SEQ + 1000;
    let mut seq = base;
    let mut next = || {
        seq += 1;
        seq
    };
    let post = |text: &str| Op::create("app.bsky.feed.post/3l3qo2vutsw2b", frames::post(text));
    let commit =
        |seq: i64, rev: &str, ops: &[Op]| frames::commit_frame(seq, DID, rev, TIME, ops, false);
    let two_hundred: Vec<Op> = (0..200)
        .map(|i| {
            Op::create(
                format!("app.bsky.feed.like/3l3qo2vuts{i:03}"),
                frames::post("like"),
            )
        })
        .collect();
    let big_text = "x".repeat(24_500);
    let five_mb: Vec<Op> = (0..200)
        .map(|i| {
            Op::create(
                format!("app.bsky.feed.post/3l3qo2vuts{i:03}"),
                frames::post(&big_text),
            )
        })
        .collect();
    let two_hundred_one: Vec<Op> = (0..201)
        .map(|i| {
            Op::create(
                format!("app.bsky.feed.like/3l3qo2vutt{i:03}"),
                frames::post("like"),
            )
        })
        .collect();
    let huge_text = "y".repeat(27_000);
    let above_limit: Vec<Op> = (0..200)
        .map(|i| {
            Op::create(
                format!("app.bsky.feed.post/3l3qo2vutu{i:03}"),
                frames::post(&huge_text),
            )
        })
        .collect();
    let hello = frames::cid_of(&frames::cbor(&frames::post("hello"))).to_bytes();
    let absent = frames::cid_of(b"absent").to_bytes();

    let mut list: Vec<Vec<u8>> = vec![
        corpus.frames()[0].bytes.to_vec(), // a real like
        frames::sync_frame(next(), DID, "3mptbypluud2a", TIME),
        frames::info_frame("OutdatedCursor", "cursor too old"),
        frames::commit_frame(
            next(),
            DID,
            "3mptbypluud2b",
            TIME,
            &[post("big"), Op::delete("app.bsky.feed.like/3l3qo2vutsw2c")],
            true,
        ),
        commit(next(), "3mptbypluud2c", &two_hundred),
        commit(next(), "3mptbypluud2d", &five_mb),
        frames::identity_frame(next(), DID, TIME, "alice.test"),
    ];
    // Defects: each frame has its own seq, so nothing is dropped as stale.
    let truncated = commit(next(), "3mptbypluud2e", &[post("cut")]);
    list.push(truncated[..truncated.len() / 2].to_vec());
    list.push(edit(
        &commit(next(), "3mptbypluud2f", &[post("t")]),
        b"#commit",
        b"#commix",
    ));
    list.push(commit(
        next(),
        "3mptbypluud2g",
        &[Op::create("app.bsky.feed.post", frames::post("no slash"))],
    ));
    list.push(commit(
        next(),
        "3mptbypluud2h",
        &[Op::create(
            "app_bsky/3l3qo2vutsw2b",
            frames::post("two segments"),
        )],
    ));
    list.push(edit(
        &commit(next(), "3mptbypluud2i", &[post("hello")]),
        b"hello",
        b"hellp",
    ));
    list.push(edit(
        &commit(
            next(),
            "3mptbypluud2j",
            &[
                post("hello"),
                Op::create("app.bsky.feed.post/3l3qo2vutsw2k", frames::post("kept")),
            ],
        ),
        &hello,
        &absent,
    ));
    // Above the protocol maxima: 201 ops, and a frame above relay.max_frame_bytes (set to
    // the protocol's 5,000,000 below). Both skipped and counted; reading goes on.
    list.push(commit(next(), "3mptbypluud2l", &two_hundred_one));
    let oversized = commit(next(), "3mptbypluud2m", &above_limit);
    assert!(oversized.len() > 5_000_000, "{}", oversized.len());
    list.push(oversized.clone());
    list.push(commit(
        next(),
        "3mptbypluud2k",
        &[post("after the defects")],
    ));
    list.push(frames::error_frame(
        "SomethingWrong",
        "the relay is unhappy",
    ));
    assert!(list[5].len() > 4_900_000, "a 5 MB frame");

    let capture = Arc::new(
        staging::capture::Capture::from_frames(list.into_iter().map(Bytes::from)).expect("capture"),
    );
    // 1 like + 1 sync + 2 tooBig ops + 200 + 200 + 1 identity + 1 kept + 1 final post; the
    // oversized frame decodes (the decoder has no size limit) but must not be stored.
    let mut expected = expected_messages(&capture);
    let oversized_ids: Vec<String> = firehose::decode(&oversized)
        .into_event()
        .expect("decodes")
        .messages
        .into_iter()
        .map(|m| m.id())
        .collect();
    assert_eq!(oversized_ids.len(), 200);
    for id in &oversized_ids {
        expected.remove(id);
    }
    assert_eq!(expected.len(), 407);

    let nats = testkit::NatsServer::start().expect("nats-server");
    let relay = relay(capture, Default::default()).await;
    let mut ingest = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        "frames",
        &[("BSKY_INGEST_RELAY__MAX_FRAME_BYTES", "5000000")],
        &[],
    );
    let js = jetstream(&nats.url()).await;
    wait_count(&js, "BSKY", 407, Duration::from_secs(60), &ingest).await;
    let reconnect = "bsky_ingest_reconnects_total{reason=\"relay_error\"}";
    ingest
        .wait_metric(reconnect, 1.0, Duration::from_secs(10))
        .await;
    assert!(
        ingest.alive(),
        "the ingestor keeps running\n{}",
        ingest.log_tail()
    );
    assert_exact(&js, &expected).await;

    let skipped = |r: &str| format!("bsky_ingest_skipped_total{{reason=\"{r}\"}}");
    for reason in [
        "truncated",
        "unknown_type",
        "bad_path",
        "invalid_collection",
        "cid_mismatch",
        "missing_block",
        "too_many_ops",
        "frame_too_large",
    ] {
        assert_eq!(
            ingest.metric(&skipped(reason)).await,
            Some(1.0),
            "{reason}\n{}",
            ingest.log_tail()
        );
    }
    let events = |k: &str| format!("bsky_ingest_events_total{{kind=\"{k}\"}}");
    assert_eq!(ingest.metric(&events("sync")).await, Some(1.0));
    assert_eq!(ingest.metric(&events("info")).await, Some(1.0));
    assert_eq!(ingest.metric(&events("identity")).await, Some(1.0));
    assert!(ingest.metric(&events("error")).await >= Some(1.0));
    // The tooBig op carries the documented marker.
    let stored = read_all(&js, "BSKY").await;
    let too_big: Vec<_> = stored
        .iter()
        .filter(|m| m.json["commit"]["tooBig"] == true)
        .collect();
    assert_eq!(too_big.len(), 1);
    assert!(too_big[0].json["commit"].get("record").is_none());
}
