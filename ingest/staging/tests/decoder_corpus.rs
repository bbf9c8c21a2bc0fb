//! The 150 real production frames against production Jetstream's output for them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use serde_json::Value;
use staging::fixtures::{self, event_key as key};
use std::collections::HashMap;

#[test]
fn corpus_matches_production_jetstream() {
    let capture = fixtures::corpus().expect("corpus");
    let frames: Vec<&[u8]> = capture.frames().iter().map(|f| &f.bytes[..]).collect();
    assert_eq!(frames.len(), 150);
    let expected: HashMap<String, Value> = fixtures::expected_by_key().expect("expected");
    assert_eq!(expected.len(), 152);

    let mut seen = 0;
    let mut subjects: HashMap<String, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (i, frame) in frames.iter().enumerate() {
        let d = match firehose::decode(frame) {
            firehose::Decoded::Event(e) => e,
            other => panic!("frame {i}: {other:?}"),
        };
        assert!(d.skipped.is_empty(), "frame {i} skipped {:?}", d.skipped);
        assert_eq!(d.seq, fixtures::CORPUS_FIRST_SEQ + i as i64);
        for m in &d.messages {
            let mut got: Value = serde_json::from_slice(&m.payload).expect("payload is JSON");
            assert_eq!(
                got["time_us"].as_i64(),
                Some(d.time_us),
                "time_us is the event's own time"
            );
            let want = expected
                .get(&key(&got))
                .unwrap_or_else(|| panic!("unexpected event {got}"));
            got["time_us"] = want["time_us"].clone();
            assert_eq!(&got, want);
            *subjects.entry(m.subject.clone()).or_default() += 1;
            assert!(ids.insert(m.id().clone()), "duplicate id {}", m.id());
            seen += 1;
        }
    }
    assert_eq!(seen, 152);
    assert_eq!(subjects["bsky.app.bsky.feed.post"], 18);
    assert_eq!(subjects["bsky.app.bsky.feed.like"], 105);
    assert_eq!(subjects["bsky.identity"], 1);
    assert_eq!(subjects["bsky.account"], 1);
}
