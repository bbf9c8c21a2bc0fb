//! subjects.md is the public contract: this keeps it and the code in step.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

fn contract() -> String {
    std::fs::read_to_string(testkit::workspace_root().join("subjects.md")).expect("subjects.md")
}

#[test]
fn every_skip_reason_is_documented() {
    let doc = contract();
    for reason in firehose::SkipReason::ALL.map(firehose::SkipReason::as_str) {
        assert!(
            doc.contains(&format!("| `{reason}` |")),
            "subjects.md lacks skip reason {reason}"
        );
    }
}

#[test]
fn every_reconnect_reason_is_documented() {
    let doc = contract();
    for reason in ingest::metrics::Reconnect::ALL.map(ingest::metrics::Reconnect::as_str) {
        assert!(
            doc.contains(&format!("`{reason}`")),
            "subjects.md lacks reconnect reason {reason}"
        );
    }
}

#[test]
fn headers_and_subjects_are_documented() {
    let doc = contract();
    assert!(doc.contains(&format!("`{}`", ingest::publish::SEQ_HEADER)));
    assert!(doc.contains("`Nats-Expected-Last-Sequence`"));
    assert!(doc.contains("## Event ids") && doc.contains("## Order"));
    for kind in ["identity", "account", "sync"] {
        assert!(doc.contains(&format!("`{}.{kind}`", firehose::SUBJECT_PREFIX)));
    }
    let stream = ingest::stream::stream_config(&ingest::config::Config::default().stream);
    assert_eq!(stream.subjects, vec!["bsky.>".to_string()]);
    assert!(doc.contains("| subjects | `bsky.>` |"));
}

#[test]
fn stream_defaults_are_documented() {
    let doc = contract();
    let c = ingest::config::Config::default();
    assert!(doc.contains(&format!("`stream.name` (`{}`)", c.stream.name)));
    assert_eq!(c.stream.max_age.as_secs(), 72 * 3600);
    assert!(doc.contains("`stream.max_age` (`72h`)"));
    assert_eq!(c.stream.duplicate_window.as_secs(), 120);
    assert!(doc.contains("`stream.duplicate_window` (`2m`)"));
    assert!(doc.contains(&format!("`stream.replicas` (`{}`)", c.stream.replicas)));
    assert!(doc.contains(&format!(
        "`stream.compression` (`{}`)",
        c.stream.compression
    )));
    assert!(doc.contains(&format!("KV bucket `{}`", c.cursor.bucket)));
    assert!(doc.contains("`lease.ttl` (`10s`)"));
}
