//! Recording from our own replay relay (no internet here) must give back the capture byte
//! for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use staging::capture::{Capture, CaptureWriter};
use staging::record::{self, RecordOptions, StopReason};
use staging::replay::{self, ReplayOptions};

const FIRST: u64 = 31_527_015_322;
const LAST: u64 = 31_527_015_471;

#[tokio::test]
async fn recording_the_replay_gives_the_capture_back_byte_for_byte() {
    let relay = replay::spawn(common::corpus(), ReplayOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.bin");
    let mut writer = CaptureWriter::create(&path, None).unwrap();
    let opts = RecordOptions {
        url: format!("ws://{}", relay.addr()), // bare host: the XRPC path is added
        max_frames: Some(150),
        ..RecordOptions::default()
    };
    let report = record::record(&opts, &mut writer, std::future::pending())
        .await
        .unwrap();
    writer.finish().unwrap();
    assert_eq!(report.frames, 150);
    assert_eq!(report.stop, StopReason::FrameLimit);
    assert_eq!(
        (report.first_seq, report.last_seq),
        (Some(FIRST), Some(LAST))
    );
    assert_eq!(std::fs::read(&path).unwrap(), common::corpus_plain_bytes());
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn zstd_recording_with_cursor_until_shutdown() {
    let relay = replay::spawn(common::corpus(), ReplayOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.bin.zst");
    let mut writer = CaptureWriter::create(&path, Some(3)).unwrap();
    let opts = RecordOptions {
        url: relay.url(),
        cursor: Some(FIRST + 99),
        ..RecordOptions::default()
    };
    // The relay stays open once caught up: the shutdown future ends the recording.
    let stop = tokio::time::sleep(Duration::from_millis(500));
    let report = record::record(&opts, &mut writer, stop).await.unwrap();
    writer.finish().unwrap();
    assert_eq!(report.stop, StopReason::Shutdown);
    assert_eq!(report.frames, 50);
    let back = Capture::load(&path).unwrap();
    let corpus = common::corpus();
    assert_eq!(back.len(), 50);
    for (a, b) in back.frames().iter().zip(&corpus.frames()[100..]) {
        assert_eq!(a.bytes, b.bytes);
    }
    relay.shutdown().await.unwrap();
}

#[tokio::test]
async fn recording_stops_when_the_relay_closes_or_time_runs_out() {
    let relay = replay::spawn(common::corpus(), ReplayOptions::default())
        .await
        .unwrap();
    let opts = RecordOptions {
        url: relay.url(),
        max_duration: Some(Duration::from_millis(300)),
        ..RecordOptions::default()
    };
    let mut writer = CaptureWriter::new(Vec::new(), None).unwrap();
    let report = record::record(&opts, &mut writer, std::future::pending())
        .await
        .unwrap();
    assert_eq!(report.stop, StopReason::TimeLimit);
    assert_eq!(report.frames, 150);

    let url = relay.url();
    let recording = tokio::spawn(async move {
        let opts = RecordOptions {
            url,
            ..RecordOptions::default()
        };
        let mut writer = CaptureWriter::new(Vec::new(), None).unwrap();
        record::record(&opts, &mut writer, std::future::pending()).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.shutdown().await.unwrap();
    let report = recording.await.unwrap().unwrap();
    assert_eq!(report.stop, StopReason::RelayClosed);
    assert_eq!(report.frames, 150);
}

#[tokio::test]
async fn unreachable_relay_and_bad_urls_are_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut writer = CaptureWriter::new(Vec::new(), None).unwrap();
    let opts = RecordOptions {
        url: format!("ws://{addr}"),
        ..RecordOptions::default()
    };
    let err = record::record(&opts, &mut writer, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, record::RecordError::Connect { .. }), "{err}");
    let opts = RecordOptions {
        url: "http://example".into(),
        ..RecordOptions::default()
    };
    let err = record::record(&opts, &mut writer, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, record::RecordError::Url(_)), "{err}");
}
