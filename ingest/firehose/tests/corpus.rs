//! The 150 real production frames against production Jetstream's output for them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    std::env::var_os("BSKY_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        })
}

fn frames() -> Vec<Vec<u8>> {
    let raw = std::fs::read(fixtures().join("jetstream-corpus/frames.bin.zst")).expect("corpus");
    let data = zstd::decode_all(&raw[..]).expect("zstd");
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("len")) as usize;
        out.push(data[pos + 4..pos + 4 + len].to_vec());
        pos += 4 + len;
    }
    out
}

fn key(v: &Value) -> String {
    match v["kind"].as_str() {
        Some("commit") => format!(
            "{}|{}|{}|{}",
            v["did"], v["commit"]["rev"], v["commit"]["collection"], v["commit"]["rkey"]
        ),
        kind => format!("{kind:?}|{}", v["did"]),
    }
}

#[test]
fn corpus_matches_production_jetstream() {
    let frames = frames();
    assert_eq!(frames.len(), 150);
    let expected: HashMap<String, Value> =
        std::fs::read_to_string(fixtures().join("jetstream-corpus/expected_v1.jsonl"))
            .expect("expected")
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                (key(&v), v)
            })
            .collect();
    assert_eq!(expected.len(), 152);

    let mut seen = 0;
    let mut subjects: HashMap<String, usize> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (i, frame) in frames.iter().enumerate() {
        let d = firehose::decode(frame).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert!(d.skipped.is_empty(), "frame {i} skipped {:?}", d.skipped);
        assert_eq!(d.seq, Some(31527015322 + i as i64));
        for m in &d.messages {
            let mut got: Value = serde_json::from_slice(&m.payload).expect("payload is JSON");
            assert_eq!(
                got["time_us"].as_i64(),
                d.time_us,
                "time_us is the event's own time"
            );
            let want = expected
                .get(&key(&got))
                .unwrap_or_else(|| panic!("unexpected event {got}"));
            got["time_us"] = want["time_us"].clone();
            assert_eq!(&got, want);
            *subjects.entry(m.subject.clone()).or_default() += 1;
            assert!(ids.insert(m.msg_id.clone()), "duplicate id {}", m.msg_id);
            seen += 1;
        }
    }
    assert_eq!(seen, 152);
    assert_eq!(subjects["bsky.app.bsky.feed.post"], 18);
    assert_eq!(subjects["bsky.app.bsky.feed.like"], 105);
    assert_eq!(subjects["bsky.identity"], 1);
    assert_eq!(subjects["bsky.account"], 1);
}
