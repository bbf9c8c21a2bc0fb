//! nats-server SIGKILLed and restarted three times while clients read a capture replayed at
//! live pace: every client receives every event, once, in order, and none waits more than
//! 5 s longer than the longest outage for any event (the wait of an event is the time from
//! its storage, its `time_us`, to its arrival; the server and this test share a clock). The
//! gateway's pulls carry idle heartbeats, so a pull that died with the server is noticed
//! within seconds, not at its 30 s expiry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{filtered, stream_events, Gateway, PATIENCE};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// 1,500 single-op commits over 15 s of event time.
fn paced_capture() -> staging::capture::Capture {
    use staging::synth::{synthesize, Source, SynthConfig};
    let source = Source::load(staging::fixtures::calabro()).unwrap();
    let cfg = SynthConfig {
        ops: 1_500,
        seed: 5,
        repos: 200,
        big_every: 0,
        max_ops_every: 0,
        multi_op_share: 0.0,
        events_per_second: 100.0,
        ..SynthConfig::default()
    };
    let mut w = staging::capture::CaptureWriter::new(Vec::new(), None).unwrap();
    synthesize(&source, cfg, &mut w).unwrap();
    staging::capture::Capture::from_bytes(w.finish().unwrap()).unwrap()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// A raw client reading until `stop`: (arrival in unix microseconds, event) each.
fn client(
    gw: &Gateway,
    query: &str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Vec<(i64, Value)>> {
    let url = format!("{}/subscribe?{query}", gw.url());
    tokio::spawn(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut out = Vec::new();
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => return out,
                m = ws.next() => m,
            };
            match m {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    out.push((now_us(), serde_json::from_str(t.as_str()).unwrap()))
                }
                other => panic!("after {} events: {other:?}", out.len()),
            }
        }
    })
}

/// What identifies an event whatever its storage time: its cursor and payload.
fn key(v: &Value) -> (u64, String) {
    let mut v = v.clone();
    let cursor = v["cursor"].as_u64().unwrap();
    v["time_us"] = 0.into();
    (cursor, v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_three_times_every_client_gets_every_event() {
    use staging::replay::{ReplayOptions, Speed};
    let capture = paced_capture();
    let frames = capture.len() as u64;
    let opts = ReplayOptions {
        speed: Speed::Factor(1.0),
        ..Default::default()
    };
    let mut pipeline = ingest::testing::Pipeline::start(Arc::new(capture), opts)
        .await
        .unwrap();
    pipeline.wait_stored(1, PATIENCE).await.unwrap();
    let url = pipeline.nats.url();
    let gw = Gateway::start(common::config(&url)).await;
    let stop = CancellationToken::new();
    let queries = ["cursor=1", "cursor=1&wantedCollections=app.bsky.feed.like"];
    let clients: Vec<_> = queries
        .iter()
        .map(|q| client(&gw, q, stop.clone()))
        .collect();

    let mut longest = Duration::ZERO;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let down = Instant::now();
        pipeline.nats.kill();
        tokio::time::sleep(Duration::from_millis(800)).await;
        tokio::task::block_in_place(|| pipeline.nats.restart()).unwrap();
        longest = longest.max(down.elapsed());
    }
    // The relay's capture fully stored, then every client caught up.
    pipeline.wait_stored(frames, PATIENCE * 2).await.unwrap();
    let mut held = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stream_events(&url).await.len();
        if now == held {
            break;
        }
        held = now;
    }
    let all = stream_events(&url).await;
    let wants = [
        filtered(&all, |_| true),
        filtered(&all, |v| {
            v["kind"] != "commit" || v["commit"]["collection"] == "app.bsky.feed.like"
        }),
    ];
    let start = Instant::now();
    while gw.metric("bsky_gateway_messages_sent_total").await
        < (wants[0].len() + wants[1].len()) as f64
    {
        assert!(start.elapsed() < PATIENCE, "clients never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(common::SETTLE).await;
    stop.cancel();
    let allowed = (longest + Duration::from_secs(5)).as_micros() as i64;
    for ((query, handle), want) in queries.iter().zip(clients).zip(&wants) {
        let got = handle.await.unwrap();
        let keys: Vec<_> = got.iter().map(|(_, v)| key(v)).collect();
        let want_keys: Vec<_> = want.iter().map(key).collect();
        assert_eq!(keys.len(), want_keys.len(), "{query}");
        assert!(keys == want_keys, "{query}: not every event once, in order");
        let worst = got
            .iter()
            .map(|(at, v)| at - v["time_us"].as_i64().unwrap())
            .max()
            .unwrap();
        assert!(
            worst <= allowed,
            "{query}: an event waited {worst} µs, outage {longest:?} + 5 s allowed"
        );
        eprintln!(
            "{query}: {} events, longest wait {worst} µs, longest outage {longest:?}",
            got.len()
        );
    }
    gw.stop().await;
    pipeline.stop().await.unwrap();
}
