//! The capture format on the real corpus: reading (plain and zstd), writing, and the
//! errors on damaged files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use staging::capture::{Capture, CaptureError, CaptureWriter};
use staging::frame::FrameKind;

#[test]
fn reads_the_real_corpus() {
    let capture = common::corpus();
    assert_eq!(capture.len(), 150);
    assert_eq!(capture.first_seq(), Some(31_527_015_322));
    assert_eq!(capture.last_seq(), Some(31_527_015_471));
    assert!(capture.seq_strictly_increasing());
    // Contiguous seq, one per frame.
    for (i, f) in capture.frames().iter().enumerate() {
        assert_eq!(f.meta.seq, Some(31_527_015_322 + i as u64));
        assert!(f.meta.time_micros.is_some());
    }
    let kinds = capture.kinds();
    assert_eq!(kinds.get("#commit"), Some(&148));
    assert_eq!(kinds.get("#identity"), Some(&1));
    assert_eq!(kinds.get("#account"), Some(&1));
    assert_eq!(capture.frames()[149].meta.kind, FrameKind::Account);
    assert_eq!(capture.total_bytes(), 819_376 - 4 * 150);
    let (lo, hi) = capture.time_range().unwrap();
    assert!(hi > lo && hi - lo < 2_000_000);
}

#[test]
fn plain_and_zstd_writers_roundtrip_byte_for_byte() {
    let capture = common::corpus();
    let plain = common::corpus_plain_bytes();
    for level in [None, Some(1), Some(3)] {
        let mut w = CaptureWriter::new(Vec::new(), level).unwrap();
        for f in capture.frames() {
            w.write_frame(&f.bytes).unwrap();
        }
        assert_eq!(w.frames(), 150);
        assert_eq!(w.bytes(), plain.len() as u64);
        let out = w.finish().unwrap();
        if level.is_none() {
            assert_eq!(out, plain);
        } else {
            assert_eq!(&out[..4], &staging::capture::ZSTD_MAGIC);
        }
        let back = Capture::from_bytes(out).unwrap();
        let a: Vec<&Bytes> = back.frames().iter().map(|f| &f.bytes).collect();
        let b: Vec<&Bytes> = capture.frames().iter().map(|f| &f.bytes).collect();
        assert_eq!(a, b);
    }
}

#[test]
fn truncated_capture_names_the_frame() {
    let plain = common::corpus_plain_bytes();
    // Cut inside the third frame.
    let first = u32::from_le_bytes(plain[0..4].try_into().unwrap()) as usize;
    let second = u32::from_le_bytes(plain[4 + first..8 + first].try_into().unwrap()) as usize;
    let cut = 4 + first + 4 + second + 10;
    match Capture::from_bytes(plain[..cut].to_vec()) {
        Err(CaptureError::Truncated { index, .. }) => assert_eq!(index, 2),
        other => panic!("{other:?}"),
    }
    // Cut inside a length prefix.
    match Capture::from_bytes(plain[..4 + first + 2].to_vec()) {
        Err(CaptureError::Truncated {
            index: 1,
            needed: 4,
            remaining: 2,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_length_is_refused_before_allocating() {
    let mut data = common::corpus_plain_bytes()[..].to_vec();
    let first = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize;
    data[4 + first..8 + first].copy_from_slice(&u32::MAX.to_le_bytes());
    match Capture::from_bytes(data) {
        Err(e @ CaptureError::TooLarge { index: 1, .. }) => {
            assert!(e.to_string().contains("frame 1"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let mut w = CaptureWriter::new(Vec::new(), None).unwrap();
    assert!(w
        .write_frame(&vec![0u8; staging::MAX_RECEIVED_FRAME_BYTES + 1])
        .is_err());
}

#[test]
fn garbage_frame_is_kept_as_unreadable() {
    let mut w = CaptureWriter::new(Vec::new(), None).unwrap();
    w.write_frame(&common::corpus().frames()[0].bytes).unwrap();
    w.write_frame(b"\xff\xff not cbor").unwrap();
    w.write_frame(&common::corpus().frames()[1].bytes).unwrap();
    let data = w.finish().unwrap();
    let c = Capture::from_bytes(data).unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(
        c.frames()[1].meta.kind,
        staging::frame::FrameKind::Unreadable
    );
    assert_eq!(&c.frames()[1].bytes[..], b"\xff\xff not cbor");
    assert_eq!(c.frames()[1].meta.seq, None);
    // It travels with the frame after it.
    assert_eq!(c.start_after(c.frames()[0].meta.seq.unwrap()), 1);
    assert!(matches!(
        Capture::from_bytes(vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]),
        Err(CaptureError::Zstd(_))
    ));
}

#[test]
fn start_after_follows_cursor_semantics() {
    let capture = common::corpus();
    let first = 31_527_015_322u64;
    assert_eq!(capture.start_after(0), 0);
    assert_eq!(capture.start_after(first - 1), 0);
    assert_eq!(capture.start_after(first), 1);
    assert_eq!(capture.start_after(first + 100), 101);
    assert_eq!(capture.start_after(first + 149), 150);
    assert_eq!(capture.start_after(u64::MAX), 150);
}

#[test]
fn load_reads_plain_and_zstd_files() {
    let capture = common::corpus();
    let dir = tempfile::tempdir().unwrap();
    for (name, level) in [("c.bin", None), ("c.bin.zst", Some(1))] {
        let path = dir.path().join(name);
        let mut w = CaptureWriter::create(&path, level).unwrap();
        for f in capture.frames() {
            w.write_frame(&f.bytes).unwrap();
        }
        w.finish().unwrap();
        let back = Capture::load(&path).unwrap();
        assert_eq!(back.len(), 150);
        assert!(back
            .frames()
            .iter()
            .zip(capture.frames())
            .all(|(a, b)| a.bytes == b.bytes));
    }
    let missing = Capture::load(dir.path().join("missing")).unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");
}
