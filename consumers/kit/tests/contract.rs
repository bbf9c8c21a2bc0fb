//! The typed events against production Jetstream's payloads, and the event-time seek against
//! a stream the real ingestor filled.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use kit::event::{Body, Event, Operation};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn every_production_event_parses() {
    let expected = staging::fixtures::expected().expect("expected_v1.jsonl");
    assert_eq!(expected.len(), 152);
    let (mut commits, mut identities, mut accounts, mut deletes) = (0, 0, 0, 0);
    for v in &expected {
        let bytes = serde_json::to_vec(v).unwrap();
        let e = Event::parse(&bytes).unwrap_or_else(|err| panic!("{err}: {v}"));
        assert_eq!(e.did, v["did"].as_str().unwrap());
        assert_eq!(e.time_us, v["time_us"].as_i64().unwrap());
        match &e.body {
            Body::Commit(c) => {
                commits += 1;
                assert_eq!(c.collection, v["commit"]["collection"].as_str().unwrap());
                assert_eq!(c.rkey, v["commit"]["rkey"].as_str().unwrap());
                match c.operation {
                    Operation::Delete => {
                        deletes += 1;
                        assert!(c.record.is_none() && c.cid.is_none());
                    }
                    _ => {
                        let record: serde_json::Value = c.record_as().unwrap().unwrap();
                        assert_eq!(record, v["commit"]["record"]);
                    }
                }
            }
            Body::Identity(i) => {
                identities += 1;
                assert_eq!(i.handle.as_deref(), v["identity"]["handle"].as_str());
            }
            Body::Account(a) => {
                accounts += 1;
                assert_eq!(a.active, v["account"]["active"].as_bool().unwrap());
            }
            Body::Sync => panic!("the corpus has no #sync"),
        }
    }
    assert_eq!((commits, identities, accounts, deletes), (150, 1, 1, 4));
}

#[test]
fn payloads_off_the_contract_are_errors() {
    for bad in [
        &b"not json"[..],
        br#"{"did":"did:plc:x","time_us":1,"kind":"commit"}"#,
        br#"{"did":"did:plc:x","time_us":1,"kind":"weird","weird":{}}"#,
        br#"{"did":"did:plc:x","kind":"sync","sync":{}}"#,
    ] {
        assert!(
            Event::parse(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// Every message's sequence and event time, read back with direct gets.
async fn times(stream: &async_nats::jetstream::stream::Stream, n: u64) -> Vec<(u64, i64)> {
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = stream.direct_get(seq).await.unwrap();
        out.push((seq, kit::event::time_us(&m.payload).unwrap()));
    }
    out
}

async fn filled(capture: staging::capture::Capture, n: u64) -> ingest::testing::Pipeline {
    let pipeline = ingest::testing::Pipeline::start(Arc::new(capture), Default::default())
        .await
        .expect("pipeline");
    pipeline
        .wait_stored(n, Duration::from_secs(60))
        .await
        .expect("stored");
    pipeline
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_on_real_frames_with_a_skew_margin_misses_nothing() {
    // Real event times are out of order by up to about a second within these 150 frames.
    let pipeline = filled(staging::fixtures::corpus().expect("corpus"), 152).await;
    let js = async_nats::jetstream::new(async_nats::connect(pipeline.nats.url()).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    let times = times(&stream, 152).await;
    let disorder = times
        .iter()
        .scan(0i64, |max, &(_, t)| {
            let back = if *max == 0 { 0 } else { *max - t };
            *max = (*max).max(t);
            Some(back)
        })
        .max()
        .unwrap();
    assert!(disorder > 0 && disorder < 2_000_000, "{disorder}");
    for &(_, t) in &times {
        let start = kit::seek::seq_at_time(&stream, t - 2_000_000)
            .await
            .unwrap()
            .unwrap();
        let first_needed = times.iter().find(|(_, tt)| *tt >= t).unwrap().0;
        assert!(
            start <= first_needed,
            "time {t}: start {start} > {first_needed}"
        );
    }
    let min = times.iter().map(|t| t.1).min().unwrap();
    let max = times.iter().map(|t| t.1).max().unwrap();
    assert_eq!(
        kit::seek::seq_at_time(&stream, min - 1).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        kit::seek::seq_at_time(&stream, max + 1).await.unwrap(),
        None
    );
    pipeline.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_is_exact_on_ordered_event_times_after_a_burst() {
    use staging::synth::{synthesize, Source, SynthConfig};
    let source = Source::load(staging::fixtures::calabro()).unwrap();
    let cfg = SynthConfig {
        ops: 3_000,
        seed: 5,
        repos: 200,
        big_every: 0,
        max_ops_every: 0,
        multi_op_share: 0.0,
        events_per_second: 10.0, // 3,000 events span five minutes of event time
        ..SynthConfig::default()
    };
    let mut w = staging::capture::CaptureWriter::new(Vec::new(), None).unwrap();
    synthesize(&source, cfg, &mut w).unwrap();
    let capture = staging::capture::Capture::from_bytes(w.finish().unwrap()).unwrap();
    let n = capture.len() as u64;
    // Stored in one burst: storage times span well under a second, event times minutes.
    let pipeline = filled(capture, n).await;
    let js = async_nats::jetstream::new(async_nats::connect(pipeline.nats.url()).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    let times = times(&stream, n).await;
    assert!(times.windows(2).all(|w| w[0].1 <= w[1].1));
    for probe in [0usize, 1, 7, 500, 1234, times.len() - 1] {
        let (seq, t) = times[probe];
        let first = times.iter().find(|(_, tt)| *tt >= t).unwrap().0;
        assert_eq!(
            kit::seek::seq_at_time(&stream, t).await.unwrap(),
            Some(first.min(seq))
        );
        assert_eq!(
            kit::seek::seq_at_time(&stream, t + 1).await.unwrap(),
            times.iter().find(|(_, tt)| *tt > t).map(|x| x.0)
        );
    }
    pipeline.stop().await.expect("stop");
}
