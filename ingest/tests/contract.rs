//! subjects.md is the public contract and the `contract` crate names it in code: this
//! keeps the two (and the ingestor's configuration defaults) in step.

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
    for header in contract::header::ALL {
        assert!(
            doc.contains(&format!("| `{header}` | every message |")),
            "subjects.md lacks header {header}"
        );
    }
    assert_eq!(ingest::publish::SEQ_HEADER, contract::header::SEQ);
    assert!(doc.contains("## Event ids") && doc.contains("## Order"));
    for (kind, subject) in [
        ("identity", contract::subject::IDENTITY),
        ("account", contract::subject::ACCOUNT),
        ("sync", contract::subject::SYNC),
    ] {
        assert!(
            doc.contains(&format!("| `#{kind}` | `{subject}` |")),
            "subjects.md lacks {subject}"
        );
    }
    let post = contract::Nsid::parse("app.bsky.feed.post").unwrap();
    assert!(doc.contains(&format!(
        "| `bsky.C` | `{}` |",
        contract::subject::collection(post)
    )));
    assert_eq!(
        contract::subject::collection(post),
        contract::subject::POSTS
    );
    assert!(doc.contains(&format!("`{}` everything", contract::subject::ALL)));
    let stream = ingest::stream::stream_config(&ingest::config::Config::default().stream);
    assert_eq!(stream.subjects, vec![contract::subject::ALL.to_string()]);
    assert!(doc.contains(&format!("| subjects | `{}`;", contract::subject::ALL)));
}

#[test]
fn protocol_limits_are_documented() {
    let doc = contract();
    assert!(doc.contains(&format!(
        "a commit with more ops than the protocol's {}",
        contract::limits::MAX_OPS
    )));
    assert!(doc.contains(&format!(
        "records are bounded by the {} MB block limit",
        contract::limits::MAX_BLOCKS_BYTES / 1_000_000
    )));
    assert!(doc.contains(&format!(
        "refuses servers below {} MB",
        contract::limits::MAX_MESSAGE_BYTES / 1_000_000
    )));
}

#[test]
fn payload_examples_parse_as_contract_events() {
    let doc = contract();
    // Every example is a `json` block under "### <kind>"; fill in its elisions.
    let mut kinds = Vec::new();
    for section in doc.split("\n### ").skip(1) {
        let kind = section.lines().next().unwrap().trim();
        let Some(block) = section.split("```json\n").nth(1) else {
            continue;
        };
        let example = block.split("```").next().unwrap();
        let filled = example
            .replace("\"time_us\":…", "\"time_us\":1")
            .replace("\"seq\":…", "\"seq\":1")
            .replace(",…}", "}")
            .replace('…', "");
        let event = contract::Event::parse(filled.as_bytes())
            .unwrap_or_else(|e| panic!("the {kind} example: {e}\n{filled}"));
        let body = match event.body {
            contract::event::Body::Commit(c) => {
                assert!(contract::Nsid::parse(&c.collection).is_ok());
                assert!(contract::Rkey::parse(&c.rkey).is_ok());
                "commit"
            }
            contract::event::Body::Identity(_) => "identity",
            contract::event::Body::Account(_) => "account",
            contract::event::Body::Sync => "sync",
        };
        assert_eq!(body, kind);
        kinds.push(body);
    }
    assert_eq!(kinds, ["commit", "identity", "account", "sync"]);
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
    let end = contract::subject::batch_end("<stream>");
    assert!(
        doc.contains(&format!("`{end}`")),
        "the end-of-batch subject {end}"
    );
}
