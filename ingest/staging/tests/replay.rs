//! The replay relay against a plain tokio-tungstenite client: byte-for-byte replay of the
//! real corpus, the real relay's cursor semantics, faults and looping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, next, split_frame, take, ErrorOrInfo, Header, Next};
use staging::capture::Capture;
use staging::replay::{self, FaultAt, Faults, ReplayOptions, Speed};

const FIRST: u64 = 31_527_015_322;
const LAST: u64 = 31_527_015_471;
const QUIET: Duration = Duration::from_millis(300);

fn with_cursor(url: &str, cursor: u64) -> String {
    format!("{url}?cursor={cursor}")
}

fn assert_error_frame(frame: &[u8], error: &str) {
    let (h, b): (Header, ErrorOrInfo) = split_frame(frame);
    assert_eq!(h.op, -1);
    assert_eq!(h.t, None);
    assert_eq!(b.error.as_deref(), Some(error));
    assert!(b.message.is_some());
}

#[tokio::test]
async fn serves_the_corpus_byte_for_byte_to_several_clients() {
    let capture = common::corpus();
    let relay = replay::spawn(capture.clone(), ReplayOptions::default())
        .await
        .unwrap();
    let url = relay.url();
    let clients = (0..3).map(|_| {
        let url = url.clone();
        let capture = capture.clone();
        tokio::spawn(async move {
            let mut ws = connect(&url).await;
            let got = take(&mut ws, 150).await;
            for (i, (msg, f)) in got.iter().zip(capture.frames()).enumerate() {
                assert_eq!(msg, &f.bytes, "frame {i} differs");
            }
            // Caught up: nothing more, and the connection stays open.
            assert!(matches!(next(&mut ws, QUIET).await, Next::Quiet));
            ws
        })
    });
    let mut open = Vec::new();
    for c in clients {
        open.push(c.await.unwrap());
    }
    let report = relay.shutdown().await.unwrap();
    assert_eq!(report.connections, 3);
    assert_eq!(report.frames_sent, 450);
    // Shutdown closes each connection with a close frame.
    for mut ws in open {
        assert!(matches!(
            next(&mut ws, Duration::from_secs(2)).await,
            Next::Closed(Some((1001, _)))
        ));
    }
}

#[tokio::test]
async fn no_cursor_starts_at_the_oldest_frame() {
    let capture = common::corpus();
    let relay = replay::spawn(capture.clone(), ReplayOptions::default())
        .await
        .unwrap();
    let mut ws = connect(&relay.url()).await;
    let got = take(&mut ws, 150).await;
    assert_eq!(common::seq_of(&got[0]), Some(FIRST));
    assert_eq!(common::seq_of(&got[149]), Some(LAST));
    assert!(matches!(next(&mut ws, QUIET).await, Next::Quiet));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn cursor_in_the_middle_sends_what_follows_it() {
    let capture = common::corpus();
    let relay = replay::spawn(capture.clone(), ReplayOptions::default())
        .await
        .unwrap();
    let cursor = FIRST + 49;
    let mut ws = connect(&with_cursor(&relay.url(), cursor)).await;
    let got = take(&mut ws, 100).await;
    assert_eq!(common::seq_of(&got[0]), Some(cursor + 1));
    assert_eq!(&got[0], &capture.frames()[50].bytes);
    assert_eq!(common::seq_of(&got[99]), Some(LAST));
    assert!(
        matches!(next(&mut ws, QUIET).await, Next::Quiet),
        "exactly 100 frames"
    );
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn cursor_just_before_the_first_frame_is_not_outdated() {
    let relay = replay::spawn(common::corpus(), ReplayOptions::default())
        .await
        .unwrap();
    let mut ws = connect(&with_cursor(&relay.url(), FIRST - 1)).await;
    let got = take(&mut ws, 150).await;
    assert_eq!(common::seq_of(&got[0]), Some(FIRST));
    assert!(matches!(next(&mut ws, QUIET).await, Next::Quiet));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn cursor_at_the_last_seq_sends_nothing_and_stays_open() {
    let relay = replay::spawn(common::corpus(), ReplayOptions::default())
        .await
        .unwrap();
    let mut ws = connect(&with_cursor(&relay.url(), LAST)).await;
    assert!(matches!(next(&mut ws, QUIET).await, Next::Quiet));
    let report = relay.shutdown().await.unwrap();
    assert_eq!(report.frames_sent, 0);
    assert!(matches!(
        next(&mut ws, Duration::from_secs(2)).await,
        Next::Closed(_)
    ));
}

#[tokio::test]
async fn future_cursor_gets_an_error_frame_and_is_closed() {
    let relay = replay::spawn(common::corpus(), ReplayOptions::default())
        .await
        .unwrap();
    let mut ws = connect(&with_cursor(&relay.url(), LAST + 1)).await;
    match next(&mut ws, Duration::from_secs(2)).await {
        Next::Binary(frame) => assert_error_frame(&frame, "FutureCursor"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next(&mut ws, Duration::from_secs(2)).await,
        Next::Closed(_)
    ));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn outdated_cursor_gets_info_then_everything_from_the_oldest() {
    let capture = common::corpus();
    let relay = replay::spawn(capture.clone(), ReplayOptions::default())
        .await
        .unwrap();
    let mut ws = connect(&with_cursor(&relay.url(), FIRST - 1000)).await;
    let got = take(&mut ws, 151).await;
    let (h, b): (Header, ErrorOrInfo) = split_frame(&got[0]);
    assert_eq!((h.op, h.t.as_deref()), (1, Some("#info")));
    assert_eq!(b.name.as_deref(), Some("OutdatedCursor"));
    assert_eq!(&got[1], &capture.frames()[0].bytes);
    assert_eq!(common::seq_of(&got[1]), Some(FIRST));
    assert_eq!(&got[150], &capture.frames()[149].bytes);
    assert!(matches!(next(&mut ws, QUIET).await, Next::Quiet));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn other_paths_get_404_and_bad_cursors_400() {
    use tokio_tungstenite::tungstenite::Error;
    let relay = replay::spawn(common::corpus(), ReplayOptions::default())
        .await
        .unwrap();
    let status = |r: Result<_, Error>| match r {
        Err(Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(_) => 101,
    };
    let other = format!("ws://{}/xrpc/com.atproto.sync.getRepo", relay.addr());
    assert_eq!(status(tokio_tungstenite::connect_async(other).await), 404);
    let bad = format!("{}?cursor=abc", relay.url());
    assert_eq!(status(tokio_tungstenite::connect_async(bad).await), 400);
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn drop_after_closes_connections_abruptly_in_order() {
    let capture = common::corpus();
    let opts = ReplayOptions {
        faults: Faults {
            drop_after: vec![5, 20],
            ..Faults::default()
        },
        ..ReplayOptions::default()
    };
    let relay = replay::spawn(capture.clone(), opts).await.unwrap();
    // A rejected request gets no connection number: it does not shift the schedule.
    let other = format!("ws://{}/xrpc/other", relay.addr());
    assert!(tokio_tungstenite::connect_async(other).await.is_err());
    for expected in [5usize, 20] {
        let mut ws = connect(&relay.url()).await;
        let got = take(&mut ws, expected).await;
        assert_eq!(&got[expected - 1], &capture.frames()[expected - 1].bytes);
        match next(&mut ws, Duration::from_secs(2)).await {
            Next::Dropped(_) => {}
            other => panic!("connection should drop without a close frame: {other:?}"),
        }
    }
    // The third connection has no fault: it reconnects with its cursor and gets the rest.
    let mut ws = connect(&with_cursor(&relay.url(), FIRST + 19)).await;
    let got = take(&mut ws, 130).await;
    assert_eq!(common::seq_of(&got[0]), Some(FIRST + 20));
    assert!(matches!(next(&mut ws, QUIET).await, Next::Quiet));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn too_slow_fault_sends_consumer_too_slow_and_closes() {
    let opts = ReplayOptions {
        faults: Faults {
            too_slow: Some(FaultAt {
                connection: 1,
                after_frames: 3,
            }),
            ..Faults::default()
        },
        ..ReplayOptions::default()
    };
    let relay = replay::spawn(common::corpus(), opts).await.unwrap();
    let mut first = connect(&relay.url()).await;
    take(&mut first, 150).await;
    let mut second = connect(&relay.url()).await;
    let got = take(&mut second, 4).await;
    assert_eq!(common::seq_of(&got[2]), Some(FIRST + 2));
    assert_error_frame(&got[3], "ConsumerTooSlow");
    assert!(matches!(
        next(&mut second, Duration::from_secs(2)).await,
        Next::Closed(_)
    ));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn future_cursor_fault_answers_whatever_the_cursor() {
    let opts = ReplayOptions {
        faults: Faults {
            future_cursor_on: Some(0),
            ..Faults::default()
        },
        ..ReplayOptions::default()
    };
    let relay = replay::spawn(common::corpus(), opts).await.unwrap();
    let mut ws = connect(&relay.url()).await;
    match next(&mut ws, Duration::from_secs(2)).await {
        Next::Binary(frame) => assert_error_frame(&frame, "FutureCursor"),
        other => panic!("{other:?}"),
    }
    let mut ws = connect(&relay.url()).await;
    assert_eq!(common::seq_of(&take(&mut ws, 1).await[0]), Some(FIRST));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn looping_renumbers_seq_strictly_increasing() {
    let capture = common::corpus();
    let opts = ReplayOptions {
        looping: true,
        ..ReplayOptions::default()
    };
    let relay = replay::spawn(capture.clone(), opts).await.unwrap();
    let mut ws = connect(&relay.url()).await;
    let got = take(&mut ws, 400).await;
    for (i, frame) in got.iter().enumerate() {
        assert_eq!(common::seq_of(frame), Some(FIRST + i as u64), "message {i}");
        let original = &capture.frames()[i % 150].bytes;
        if i < 150 {
            assert_eq!(frame, original);
        } else {
            // Only seq changed: putting the original seq back gives the original bytes.
            let restored = staging::frame::rewrite_seq(frame, FIRST + (i % 150) as u64).unwrap();
            assert_eq!(&restored[..], &original[..], "message {i}");
        }
    }
    drop(ws);
    // A cursor inside a looped pass resumes there.
    let mut ws = connect(&with_cursor(&relay.url(), FIRST + 150 + 9)).await;
    let got = take(&mut ws, 2).await;
    assert_eq!(common::seq_of(&got[0]), Some(FIRST + 160));
    assert_eq!(common::seq_of(&got[1]), Some(FIRST + 161));
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn live_tail_without_cursor_waits_for_new_frames() {
    let opts = ReplayOptions {
        live_tail: true,
        ..ReplayOptions::default()
    };
    let relay = replay::spawn(common::corpus(), opts).await.unwrap();
    let mut ws = connect(&relay.url()).await;
    assert!(matches!(next(&mut ws, QUIET).await, Next::Quiet));
    // A cursor still replays history.
    let mut ws = connect(&with_cursor(&relay.url(), LAST - 2)).await;
    assert_eq!(take(&mut ws, 2).await.len(), 2);
    relay.shutdown().await.unwrap();

    // With looping, the tail is the next pass.
    let opts = ReplayOptions {
        live_tail: true,
        looping: true,
        ..ReplayOptions::default()
    };
    let relay = replay::spawn(common::corpus(), opts).await.unwrap();
    let mut ws = connect(&relay.url()).await;
    assert_eq!(common::seq_of(&take(&mut ws, 1).await[0]), Some(LAST + 1));
    // The client reads no more: the relay is blocked on a full socket, and still stops
    // promptly.
    let t = Instant::now();
    relay.shutdown().await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[tokio::test]
async fn speed_factor_paces_by_event_time() {
    let capture = common::corpus();
    // Pacing is relative to the first frame sent; the real capture is not in time order, so
    // the paced span runs from the first frame's time to the latest time (~0.46 s here).
    let first = capture.frames()[0].meta.time_micros.unwrap();
    let (_, latest) = capture.time_range().unwrap();
    let factor = 2.0;
    let expected = Duration::from_secs_f64((latest - first) as f64 / 1e6 / factor);
    let opts = ReplayOptions {
        speed: Speed::Factor(factor),
        ..ReplayOptions::default()
    };
    let relay = replay::spawn(capture, opts).await.unwrap();
    let mut ws = connect(&relay.url()).await;
    let started = Instant::now();
    take(&mut ws, 150).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= expected.mul_f64(0.9),
        "{elapsed:?} vs {expected:?}"
    );
    assert!(
        elapsed < expected + Duration::from_millis(500),
        "{elapsed:?} vs {expected:?}"
    );
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let opts = ReplayOptions {
        speed: Speed::Factor(0.0),
        ..ReplayOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let r = replay::serve(listener, common::corpus(), opts, async {}).await;
    assert!(r.is_err());
    // Looping a capture whose seq goes backwards cannot keep seq increasing.
    let corpus = common::corpus();
    let frames = [
        corpus.frames()[1].bytes.clone(),
        corpus.frames()[0].bytes.clone(),
    ];
    let backwards = Arc::new(Capture::from_frames(frames).unwrap());
    let opts = ReplayOptions {
        looping: true,
        ..ReplayOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(replay::serve(listener, backwards, opts, async {})
        .await
        .is_err());
}

#[tokio::test]
async fn on_sent_reports_every_frame_sent_once_in_order() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let opts = ReplayOptions {
        looping: true,
        on_sent: Some(replay::OnSent::new(move |seq| {
            log.lock().unwrap().push(seq);
        })),
        ..ReplayOptions::default()
    };
    let relay = replay::spawn(common::corpus(), opts).await.unwrap();
    let mut ws = connect(&relay.url()).await;
    let read: Vec<u64> = take(&mut ws, 400)
        .await
        .iter()
        .map(|f| common::seq_of(f).unwrap())
        .collect();
    drop(ws);
    let report = relay.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    // Reported as counted: after each flush, at most 63 frames behind what was written.
    assert_eq!(seen.len() as u64, report.frames_sent);
    assert!(seen.len() > 400 - 64, "{} reported", seen.len());
    // Looped frames with their renumbered seq, as the client read them.
    let n = seen.len().min(read.len());
    assert_eq!(seen[..n], read[..n]);
    assert!(seen.windows(2).all(|w| w[0] + 1 == w[1]));
}
