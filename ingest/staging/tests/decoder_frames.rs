//! Frames the real capture lacks, built from the lexicon, and malformed input made by
//! changing real frames byte for byte. Each is handled as `subjects.md` documents.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use firehose::{decode, Action, Control, Kind, SkipReason};
use serde_json::Value;
use staging::frames::{self, Op};

const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
const TIME: &str = "2026-07-04T14:38:07.877Z";
const TIME_US: i64 = 1_783_175_887_877_000;

fn json(m: &firehose::Message) -> Value {
    serde_json::from_slice(&m.payload).expect("payload is JSON")
}

#[test]
fn sync_event() {
    let d = decode(&frames::sync_frame(7, DID, "3mptbypluud2a", TIME))
        .into_event()
        .expect("decodes");
    assert_eq!((d.kind, d.seq, d.time_us), (Kind::Sync, 7, TIME_US));
    assert_eq!(d.messages.len(), 1);
    let m = &d.messages[0];
    assert_eq!(m.subject, "bsky.sync");
    assert_eq!(m.action, Action::Sync);
    assert_eq!(m.id(), format!("sync:{DID}@3mptbypluud2a"));
    let v = json(m);
    assert_eq!(v["kind"], "sync");
    assert_eq!(v["did"], DID);
    assert_eq!(v["time_us"], TIME_US);
    assert_eq!(v["sync"]["rev"], "3mptbypluud2a");
    assert_eq!(v["sync"]["seq"], 7);
    assert!(v["sync"]["blocks"]["$bytes"]
        .as_str()
        .is_some_and(|b| !b.is_empty()));
}

#[test]
fn identity_and_account_events() {
    let d = decode(&frames::identity_frame(8, DID, TIME, "alice.test"))
        .into_event()
        .expect("identity");
    let v = json(&d.messages[0]);
    assert_eq!(d.messages[0].subject, "bsky.identity");
    assert_eq!(v["identity"]["handle"], "alice.test");
    assert_eq!(v["kind"], "identity");
    let d = decode(&frames::account_frame(
        9,
        DID,
        TIME,
        false,
        Some("takendown"),
    ))
    .into_event()
    .expect("account");
    let v = json(&d.messages[0]);
    assert_eq!(d.messages[0].subject, "bsky.account");
    assert_eq!(v["account"]["active"], false);
    assert_eq!(v["account"]["status"], "takendown");
}

#[test]
fn info_and_error_frames_are_control_not_messages() {
    let c = decode(&frames::info_frame("OutdatedCursor", "too old"))
        .into_control()
        .expect("info");
    assert_eq!(c.kind(), Kind::Info);
    assert_eq!(
        c,
        Control::Info {
            name: "OutdatedCursor".into(),
            message: Some("too old".into())
        }
    );
    let c = decode(&frames::error_frame("FutureCursor", "ahead"))
        .into_control()
        .expect("error frame");
    assert_eq!(c.kind(), Kind::Error);
    assert!(matches!(c, Control::Error { ref error, .. } if error == "FutureCursor"));
}

#[test]
fn too_big_commit_publishes_ops_without_records() {
    let ops = [
        Op::create("app.bsky.feed.post/3l3qo2vutsw2b", frames::post("big")),
        Op::delete("app.bsky.feed.like/3l3qo2vutsw2c"),
    ];
    let d = decode(&frames::commit_frame(
        10,
        DID,
        "3mptbypluud2a",
        TIME,
        &ops,
        true,
    ))
    .into_event()
    .expect("tooBig");
    assert!(d.too_big);
    assert!(d.skipped.is_empty());
    assert_eq!(d.messages.len(), 2);
    let create = json(&d.messages[0]);
    assert_eq!(create["commit"]["tooBig"], true);
    assert!(create["commit"].get("record").is_none());
    assert!(create["commit"]["cid"]
        .as_str()
        .is_some_and(|c| c.starts_with("bafyrei")));
    let delete = json(&d.messages[1]);
    assert_eq!(delete["commit"]["operation"], "delete");
    assert!(delete["commit"].get("cid").is_none());
}

#[test]
fn commit_with_200_ops() {
    let ops: Vec<Op> = (0..200)
        .map(|i| {
            Op::create(
                format!("app.bsky.feed.post/3l3qo2vuts{i:03}"),
                frames::post(&format!("post {i}")),
            )
        })
        .collect();
    let d = decode(&frames::commit_frame(
        11,
        DID,
        "3mptbypluud2a",
        TIME,
        &ops,
        false,
    ))
    .into_event()
    .expect("200 ops");
    assert_eq!(d.messages.len(), 200);
    assert!(d.skipped.is_empty());
    for (i, m) in d.messages.iter().enumerate() {
        assert_eq!(json(m)["commit"]["record"]["text"], format!("post {i}"));
    }
}

#[test]
fn five_megabyte_frame() {
    // 200 records of ~24.5 KB: a frame just under the 5,000,000-byte protocol maximum.
    let text = "x".repeat(24_500);
    let ops: Vec<Op> = (0..200)
        .map(|i| {
            Op::create(
                format!("app.bsky.feed.post/3l3qo2vuts{i:03}"),
                frames::post(&text),
            )
        })
        .collect();
    let frame = frames::commit_frame(12, DID, "3mptbypluud2a", TIME, &ops, false);
    assert!(
        frame.len() > 4_900_000 && frame.len() <= contract::limits::MAX_FRAME_BYTES,
        "{}",
        frame.len()
    );
    let d = decode(&frame).into_event().expect("5 MB frame");
    assert_eq!(d.messages.len(), 200);
}

/// A real frame from the corpus: the first like (frame 0 of the capture).
fn real_like_frame() -> Vec<u8> {
    let frame = staging::fixtures::corpus().expect("corpus").frames()[0]
        .bytes
        .to_vec();
    let d = decode(&frame).into_event().expect("real frame decodes");
    assert_eq!(d.messages[0].collection(), Some("app.bsky.feed.like"));
    frame
}

fn replace_first(frame: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    frames::replace_first(frame, from, to).expect("pattern in frame, same length")
}

#[test]
fn truncated_cbor_is_a_frame_error() {
    let frame = real_like_frame();
    for cut in [1, 10, frame.len() / 2, frame.len() - 1] {
        let e = decode(&frame[..cut]).into_skipped().expect("truncated");
        assert_eq!(e.reason(), SkipReason::Truncated, "cut at {cut}: {e}");
    }
}

#[test]
fn unknown_type_is_a_frame_error() {
    let frame = replace_first(&real_like_frame(), b"#commit", b"#commix");
    assert_eq!(
        decode(&frame).into_skipped().expect("unknown t").reason(),
        SkipReason::UnknownType
    );
}

#[test]
fn op_path_without_slash_skips_the_op() {
    let frame = replace_first(
        &real_like_frame(),
        b"app.bsky.feed.like/",
        b"app.bsky.feed.like_",
    );
    let d = decode(&frame).into_event().expect("frame still decodes");
    assert!(d.messages.is_empty());
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].reason, SkipReason::BadPath);
}

#[test]
fn non_nsid_collection_skips_the_op() {
    let frame = replace_first(
        &real_like_frame(),
        b"app.bsky.feed.like/",
        b"app.bsky.feed.l*ke/",
    );
    let d = decode(&frame).into_event().expect("frame still decodes");
    assert!(d.messages.is_empty());
    assert_eq!(d.skipped[0].reason, SkipReason::InvalidCollection);
    // Two segments are not an NSID either: it could collide with bsky.identity.
    let frame = replace_first(
        &real_like_frame(),
        b"app.bsky.feed.like/",
        b"app-bsky-feed.like/",
    );
    assert_eq!(
        decode(&frame).into_event().expect("decodes").skipped[0].reason,
        SkipReason::InvalidCollection
    );
}

#[test]
fn block_not_hashing_to_its_cid_skips_the_op() {
    // Change one character inside the record block: the CAR still parses, the hash fails.
    let frame = replace_first(&real_like_frame(), b"createdAt", b"createdAu");
    let d = decode(&frame).into_event().expect("frame still decodes");
    assert!(d.messages.is_empty());
    assert_eq!(d.skipped[0].reason, SkipReason::CidMismatch);
}

#[test]
fn missing_block_skips_the_op() {
    let ops = [
        Op::create("app.bsky.feed.post/3l3qo2vutsw2b", frames::post("hello")),
        Op::create("app.bsky.feed.post/3l3qo2vutsw2c", frames::post("kept")),
    ];
    let good = frames::commit_frame(13, DID, "3mptbypluud2a", TIME, &ops, false);
    assert_eq!(decode(&good).into_event().expect("good").messages.len(), 2);
    // Point the first op at a CID whose block the CAR does not carry.
    let hello = frames::cid_of(&frames::cbor(&frames::post("hello"))).to_bytes();
    let absent = frames::cid_of(b"not in this CAR").to_bytes();
    let d = decode(&replace_first(&good, &hello, &absent))
        .into_event()
        .expect("frame decodes");
    assert_eq!(d.skipped.len(), 1);
    assert_eq!(d.skipped[0].reason, SkipReason::MissingBlock);
    assert_eq!(d.messages.len(), 1, "the other op is kept");
    assert_eq!(json(&d.messages[0])["commit"]["record"]["text"], "kept");
}
