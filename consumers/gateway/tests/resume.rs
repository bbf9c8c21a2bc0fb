//! Resuming at every point: the real-frame corpus (whose event times step back 68 times in
//! relay order) replayed by the staging relay at live pace through the real ingestor, then,
//! for every disconnect point, a client reconnecting with (a) the last `time_us` it saw,
//! (b) the largest, (c) the last `cursor`. Each must lose nothing, and repeat only what was
//! stored in the same microsecond as the resume point (with `cursor`: exactly that one).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{filtered, stream_events, Gateway, PATIENCE};
use futures_util::StreamExt;
use serde_json::Value;

fn time_us(v: &Value) -> i64 {
    v["time_us"].as_i64().unwrap()
}

fn cursor(v: &Value) -> u64 {
    v["cursor"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_disconnect_point_resumes_without_a_gap() {
    use staging::replay::{ReplayOptions, Speed};
    let opts = ReplayOptions {
        speed: Speed::Factor(1.0),
        ..Default::default()
    };
    let pipeline = common::pipeline_with(staging::fixtures::corpus().unwrap(), opts).await;
    pipeline.wait_stored(152, PATIENCE).await.unwrap();
    let url = pipeline.nats.url();
    // The premise: event times go backwards in stream order, storage times never do.
    let events = common::event_times(&url).await;
    let back = events.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(back >= 30, "event time steps back only {back} times");
    let want = filtered(&stream_events(&url).await, |_| true);
    assert!(want.windows(2).all(|w| time_us(&w[1]) >= time_us(&w[0])));

    let gw = Gateway::start(common::config(&url)).await;
    let last = cursor(want.last().unwrap());
    let sent = common::read_until(&gw, "cursor=1", last).await;
    assert!(sent == want, "a full read is not the stream, as sent");
    assert!(sent.len() > 100);

    // Disconnect after event i: resume three ways, several clients at a time.
    let points: Vec<(usize, &'static str, u64)> = (0..sent.len() - 1)
        .flat_map(|i| {
            let largest = sent[..=i].iter().map(time_us).max().unwrap();
            [
                (i, "last time_us", time_us(&sent[i]) as u64),
                (i, "largest time_us", largest as u64),
                (i, "last cursor", cursor(&sent[i])),
            ]
        })
        .collect();
    let results: Vec<_> = futures_util::stream::iter(points.iter().copied())
        .map(|(i, how, from)| {
            let gw = &gw;
            async move {
                (
                    i,
                    how,
                    from,
                    common::read_until(gw, &format!("cursor={from}"), last).await,
                )
            }
        })
        .buffer_unordered(6)
        .collect()
        .await;
    assert_eq!(results.len(), 3 * (sent.len() - 1));
    for (i, how, from, got) in results {
        // What came back is the stream from some point k on, in order ...
        let k = sent.len() - got.len();
        assert!(
            got[..] == sent[k..],
            "{how} after event {i}: not a tail of the stream"
        );
        // ... that loses nothing after i ...
        assert!(k <= i + 1, "{how} after event {i}: lost {}", k - i - 1);
        // ... and repeats only the resume point's microsecond (with a cursor, exactly i).
        if how == "last cursor" {
            assert_eq!(k, i, "cursor {from}: repeats {} events", i + 1 - k);
        } else {
            let repeated = &sent[k..=i];
            assert!(
                repeated.iter().all(|v| time_us(v) as u64 == from),
                "{how} {from} after event {i}: repeats events of other microseconds"
            );
        }
    }
    gw.stop().await;
    pipeline.stop().await.unwrap();
}
