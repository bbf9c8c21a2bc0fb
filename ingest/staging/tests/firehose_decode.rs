//! Cross-check with the project's own decoder: every synthesized frame, and the relay's
//! `#info` and error frames, decode with `firehose::decode` into what the generator reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use staging::synth::{self, Source, SynthConfig};

#[test]
fn synthesized_capture_decodes_with_the_firehose_crate() {
    let source = Source::load(common::calabro_path()).unwrap();
    let cfg = SynthConfig {
        seed: 7,
        ops: 10_000,
        start_seq: 1_000_000,
        repos: 2_000,
        max_ops_every: 1_500,
        big_every: 3_000,
        ..SynthConfig::default()
    };
    let mut synth = synth::Synthesizer::new(&source, cfg).unwrap();
    let mut by_collection: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_action: BTreeMap<String, u64> = BTreeMap::new();
    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected_seq = 1_000_000i64;
    while let Some(frame) = synth.next_frame() {
        let decoded = match firehose::decode(frame) {
            firehose::Decoded::Event(e) => e,
            other => panic!("seq {expected_seq}: {other:?}"),
        };
        assert_eq!(decoded.seq, expected_seq);
        assert!(
            decoded.skipped.is_empty(),
            "seq {expected_seq}: {:?}",
            decoded.skipped
        );
        assert!(!decoded.too_big);
        for m in &decoded.messages {
            let action = m.action.as_str();
            match m.collection() {
                Some(c) => {
                    *by_collection.entry(c.to_owned()).or_insert(0) += 1;
                    *by_action.entry(action.to_owned()).or_insert(0) += 1;
                }
                None => *events.entry(format!("#{action}")).or_insert(0) += 1,
            }
        }
        expected_seq += 1;
    }
    let report = synth.into_report();
    assert!(
        report.big_frames >= 2 && report.max_op_commits >= 4,
        "{report:?}"
    );
    assert_eq!(by_collection, report.ops_by_collection);
    assert_eq!(by_action, report.ops_by_action);
    for kind in ["#identity", "#account", "#sync"] {
        assert_eq!(events.get(kind), report.events.get(kind), "{kind}");
    }
}

#[test]
fn relay_control_frames_decode_with_the_firehose_crate() {
    let info = staging::frame::info_frame("OutdatedCursor", "m");
    assert_eq!(
        firehose::decode(&info).into_control(),
        Some(firehose::Control::Info {
            name: "OutdatedCursor".into(),
            message: Some("m".into())
        })
    );
    let err = staging::frame::error_frame("FutureCursor", "m");
    assert_eq!(
        firehose::decode(&err).into_control(),
        Some(firehose::Control::Error {
            error: "FutureCursor".into(),
            message: Some("m".into())
        })
    );
    // Renumbered frames stay valid.
    let corpus = common::corpus();
    let renumbered =
        staging::frame::rewrite_seq(&corpus.frames()[0].bytes, 99_000_000_000).unwrap();
    let d = firehose::decode(&renumbered).into_event().unwrap();
    assert_eq!(d.seq, 99_000_000_000);
    assert_eq!(
        d.messages,
        firehose::decode(&corpus.frames()[0].bytes)
            .into_event()
            .unwrap()
            .messages
    );
}
