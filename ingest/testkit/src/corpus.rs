//! The 150 real production frames (`jetstream-corpus`) and production Jetstream's output
//! for them, as every test crate reads them.

use crate::shared_fixtures;
use serde_json::Value;
use staging::capture::Capture;
use std::collections::HashMap;

/// Relay seq of the first frame.
pub const FIRST_SEQ: i64 = 31_527_015_322;

/// The capture `frames.bin.zst`; panics (a failed test) when the fixture is missing.
pub fn capture() -> Capture {
    let path = shared_fixtures().join("jetstream-corpus/frames.bin.zst");
    Capture::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `expected_v1.jsonl`, keyed by [`event_key`].
pub fn expected() -> HashMap<String, Value> {
    let path = shared_fixtures().join("jetstream-corpus/expected_v1.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (event_key(&v), v)
        })
        .collect()
}

/// Identifies an event independently of time: commits by (did, rev, collection, rkey),
/// identity and account events by (kind, did).
pub fn event_key(v: &Value) -> String {
    match v["kind"].as_str() {
        Some("commit") => format!(
            "{}|{}|{}|{}",
            v["did"], v["commit"]["rev"], v["commit"]["collection"], v["commit"]["rkey"]
        ),
        kind => format!("{kind:?}|{}", v["did"]),
    }
}
