//! The synthesizer, checked by decoding its output independently with serde_ipld_dagcbor:
//! determinism, seq/time order, field sets equal to the real frames', the report's counts,
//! and every op's CID against the sha2-256 of its block in the frame's CAR.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cid::Cid;
use serde::de::IgnoredAny;
use serde::Deserialize;
use staging::capture::{Capture, CaptureWriter};
use staging::synth::{self, Source, SynthConfig, SynthReport};

use common::{split_frame, Header};

/// A CAR's roots and blocks, through the workspace's one CAR reader.
fn read_car(bytes: &[u8]) -> (Vec<Cid>, Vec<Block<'_>>) {
    let car = firehose::car::read(bytes).unwrap();
    let roots = car
        .roots
        .iter()
        .map(|r| Cid::try_from(*r).unwrap())
        .collect();
    let blocks = car
        .blocks
        .iter()
        .map(|b| Block {
            cid: Cid::try_from(b.cid).unwrap(),
            data: b.data,
        })
        .collect();
    (roots, blocks)
}

struct Block<'a> {
    cid: Cid,
    data: &'a [u8],
}

fn cid_matches(cid: &Cid, data: &[u8]) -> bool {
    firehose::cid::verify(&cid.to_bytes(), data).is_ok()
}

type Keys = BTreeMap<String, IgnoredAny>;

#[derive(Debug, Deserialize)]
struct Op {
    action: String,
    cid: Option<Cid>,
    path: String,
    #[serde(default)]
    prev: Option<Cid>,
}

#[derive(Debug, Deserialize)]
struct Commit {
    repo: String,
    rev: String,
    since: Option<String>,
    ops: Vec<Op>,
    #[serde(with = "serde_bytes")]
    blocks: Vec<u8>,
    commit: Cid,
    #[serde(rename = "tooBig")]
    too_big: bool,
    rebase: bool,
    blobs: Vec<Cid>,
    #[serde(rename = "prevData", default)]
    prev_data: Option<Cid>,
}

#[derive(Debug, Deserialize)]
struct Sync {
    seq: u64,
    did: String,
    rev: String,
    time: String,
    #[serde(with = "serde_bytes")]
    blocks: Vec<u8>,
}

#[derive(Debug, Deserialize)]
struct Event {
    seq: u64,
    time: String,
}

#[derive(Debug, Deserialize)]
struct CommitBlock {
    did: String,
    version: u64,
    data: Cid,
    rev: String,
    prev: Option<Cid>,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

fn source() -> Source {
    Source::load(common::calabro_path()).unwrap()
}

fn config() -> SynthConfig {
    SynthConfig {
        seed: 7,
        ops: 20_000,
        start_seq: 1_000_000,
        repos: 2_000,
        max_ops_every: 3_000,
        big_every: 6_000,
        ..SynthConfig::default()
    }
}

fn synthesize(source: &Source, cfg: SynthConfig) -> (Vec<u8>, SynthReport) {
    let mut w = CaptureWriter::new(Vec::new(), None).unwrap();
    let report = synth::synthesize(source, cfg, &mut w).unwrap();
    (w.finish().unwrap(), report)
}

/// Key sets of the real corpus per kind, and of its ops per action.
fn real_key_sets() -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    #[derive(Deserialize)]
    struct Ops {
        #[serde(default)]
        ops: Vec<Keys>,
    }
    #[derive(Deserialize)]
    struct Action {
        action: String,
    }
    let mut kinds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut ops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in common::corpus().frames() {
        let (h, body): (Header, Keys) = split_frame(&f.bytes);
        kinds
            .entry(h.t.unwrap())
            .or_default()
            .extend(body.into_keys());
        let (_, with_ops): (Header, Ops) = split_frame(&f.bytes);
        let (_, actions): (Header, ActionsOnly) = split_frame(&f.bytes);
        for (keys, a) in with_ops.ops.into_iter().zip(actions.ops) {
            ops.entry(a.action).or_default().extend(keys.into_keys());
        }
    }
    #[derive(Deserialize)]
    struct ActionsOnly {
        #[serde(default)]
        ops: Vec<Action>,
    }
    (kinds, ops)
}

#[test]
fn source_is_the_real_calabro_repository() {
    let source = source();
    assert_eq!(source.record_count(), 4_347);
    assert_eq!(source.collections.len(), 55);
    let count = |nsid: &str| {
        source
            .collections
            .iter()
            .find(|c| c.nsid == nsid)
            .map_or(0, |c| c.records.len())
    };
    assert_eq!(count("app.bsky.feed.like"), 2_312);
    assert_eq!(count("app.bsky.graph.follow"), 663);
    assert_eq!(count("app.bsky.feed.post"), 610);
    assert_eq!(count("app.bsky.feed.postgate"), 412);
    assert_eq!(count("app.bsky.feed.repost"), 175);
    assert_eq!(count("app.bsky.graph.block"), 87);
    // 5,517 blocks = 4,347 records + 1 commit + MST nodes.
    assert_eq!(source.blocks.len(), 5_517);
    assert_eq!(source.mst_nodes.len(), 5_517 - 4_347 - 1);
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let source = source();
    let small = SynthConfig {
        ops: 3_000,
        ..config()
    };
    let (a, ra) = synthesize(&source, small.clone());
    let (b, rb) = synthesize(&source, small.clone());
    assert_eq!(a, b);
    assert_eq!(ra, rb);
    let (c, _) = synthesize(&source, SynthConfig { seed: 8, ..small });
    assert_ne!(a, c);
}

#[test]
fn frames_decode_like_real_ones_and_match_the_report() {
    let source = source();
    let (bytes, report) = synthesize(&source, config());
    let (bytes_again, _) = synthesize(&source, config());
    assert!(bytes == bytes_again, "deterministic");
    let capture = Capture::from_bytes(bytes).unwrap();
    let (real_kinds, real_ops) = real_key_sets();

    let mut events: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_collection: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_action: BTreeMap<String, u64> = BTreeMap::new();
    let mut ops = 0u64;
    let mut max_op_commits = 0u64;
    let mut blocks_total = 0u64;
    let mut last_rev: HashMap<String, String> = HashMap::new();
    let mut prev_seq = None;
    let mut prev_time = None;
    let mut max_frame = 0u64;
    let mut total = 0u64;
    let mut new_repos = 0;

    for f in capture.frames() {
        let frame = &f.bytes[..];
        max_frame = max_frame.max(frame.len() as u64);
        total += frame.len() as u64;
        assert!(frame.len() < 5_000_000);
        let (h, keys): (Header, Keys) = split_frame(frame);
        assert_eq!(h.op, 1);
        let kind = h.t.unwrap();
        *events.entry(kind.clone()).or_insert(0) += 1;
        let keys: BTreeSet<String> = keys.into_keys().collect();

        let (_, ev): (Header, Event) = split_frame(frame);
        if let Some(p) = prev_seq {
            assert_eq!(ev.seq, p + 1, "seq strictly increasing by one");
        } else {
            assert_eq!(ev.seq, 1_000_000);
        }
        prev_seq = Some(ev.seq);
        let t = staging::time::parse_rfc3339_micros(&ev.time).expect("RFC 3339 time");
        assert!(prev_time.is_none_or(|p| t >= p), "time never goes back");
        prev_time = Some(t);

        match kind.as_str() {
            "#commit" => {
                let real = &real_kinds["#commit"];
                let mut expected = real.clone();
                if !keys.contains("prevData") {
                    expected.remove("prevData");
                }
                assert_eq!(keys, expected, "commit field set");
                let (_, c): (Header, Commit) = split_frame(frame);
                assert!(!c.too_big && !c.rebase && c.blobs.is_empty());
                assert!(!c.ops.is_empty() && c.ops.len() <= 200);
                if c.ops.len() == 200 {
                    max_op_commits += 1;
                }
                // since chains the repo's previous rev; revs increase per repo.
                match last_rev.get(&c.repo) {
                    Some(prev) => {
                        assert_eq!(c.since.as_ref(), Some(prev));
                        assert!(c.rev > *prev);
                    }
                    None if c.since.is_none() => {
                        assert!(c.prev_data.is_none());
                        new_repos += 1;
                    }
                    None => assert!(c.since.as_ref().unwrap() < &c.rev),
                }
                last_rev.insert(c.repo.clone(), c.rev.clone());
                assert!(staging::tid::is_tid(&c.rev));
                assert!(c.repo.starts_with("did:plc:") && c.repo.len() == 32);

                let (roots, blocks) = read_car(&c.blocks);
                assert_eq!(roots, vec![c.commit]);
                blocks_total += blocks.len() as u64;
                let by_cid: HashMap<Cid, &[u8]> = blocks.iter().map(|b| (b.cid, b.data)).collect();
                let commit_bytes = by_cid[&c.commit];
                assert!(
                    cid_matches(&c.commit, commit_bytes),
                    "commit CID is its sha256"
                );
                let cb: CommitBlock = serde_ipld_dagcbor::from_slice(commit_bytes).unwrap();
                assert_eq!(
                    (cb.did.as_str(), cb.rev.as_str()),
                    (c.repo.as_str(), c.rev.as_str())
                );
                assert_eq!((cb.version, cb.prev, cb.sig.len()), (3, None, 64));
                assert!(by_cid.contains_key(&cb.data), "MST root in the CAR");
                if max_frame < 2_100_000 {
                    assert!(
                        c.blocks.len() <= 2_000_000,
                        "within the lexicon's blocks limit"
                    );
                }

                let paths: BTreeSet<&str> = c.ops.iter().map(|op| op.path.as_str()).collect();
                assert_eq!(paths.len(), c.ops.len(), "a commit touches each path once");
                for op in &c.ops {
                    let op_keys: BTreeSet<&str> = if op.prev.is_some() {
                        ["action", "cid", "path", "prev"].into()
                    } else {
                        ["action", "cid", "path"].into()
                    };
                    let real_op: BTreeSet<&str> =
                        real_ops[&op.action].iter().map(String::as_str).collect();
                    assert_eq!(op_keys, real_op, "{} op fields", op.action);
                    let (collection, rkey) = op.path.split_once('/').unwrap();
                    assert!(!rkey.is_empty());
                    *by_collection.entry(collection.to_owned()).or_insert(0) += 1;
                    *by_action.entry(op.action.clone()).or_insert(0) += 1;
                    ops += 1;
                    match op.action.as_str() {
                        "create" | "update" => {
                            let cid = op.cid.expect("create/update carry a cid");
                            let data = by_cid.get(&cid).expect("record block in the CAR");
                            assert!(cid_matches(&cid, data), "op CID is the sha256 of its block");
                            #[derive(Deserialize)]
                            struct Typed {
                                #[serde(rename = "$type")]
                                t: String,
                            }
                            let typed: Typed = serde_ipld_dagcbor::from_slice(data).unwrap();
                            assert_eq!(typed.t, collection, "record $type matches its path");
                        }
                        "delete" => assert!(op.cid.is_none() && op.prev.is_some()),
                        other => panic!("action {other}"),
                    }
                }
            }
            "#sync" => {
                let names: BTreeSet<String> = ["blocks", "did", "rev", "seq", "time"]
                    .map(String::from)
                    .into();
                assert_eq!(keys, names);
                let (_, s): (Header, Sync) = split_frame(frame);
                let (roots, blocks) = read_car(&s.blocks);
                assert_eq!(blocks.len(), 1);
                assert_eq!(roots, vec![blocks[0].cid]);
                assert!(cid_matches(&blocks[0].cid, blocks[0].data));
                blocks_total += 1;
                let cb: CommitBlock = serde_ipld_dagcbor::from_slice(blocks[0].data).unwrap();
                assert_eq!((cb.did, cb.rev.as_str()), (s.did.clone(), s.rev.as_str()));
                if let Some(prev) = last_rev.get(&s.did) {
                    assert!(s.rev > *prev);
                }
                last_rev.insert(s.did, s.rev);
                let _ = (s.seq, s.time);
            }
            "#identity" => {
                let mut allowed = real_kinds["#identity"].clone();
                allowed.insert("handle".into());
                assert!(
                    keys.is_subset(&allowed) && real_kinds["#identity"].is_subset(&keys),
                    "{keys:?}"
                );
            }
            "#account" => {
                let mut allowed = real_kinds["#account"].clone();
                allowed.insert("status".into());
                assert!(
                    keys.is_subset(&allowed) && real_kinds["#account"].is_subset(&keys),
                    "{keys:?}"
                );
            }
            other => panic!("unexpected kind {other}"),
        }
    }

    // The report says exactly what the frames hold.
    assert_eq!(ops, 20_000);
    assert_eq!(report.ops, ops);
    assert_eq!(report.ops_by_collection, by_collection);
    assert_eq!(report.ops_by_action, by_action);
    assert_eq!(report.events, events);
    assert_eq!(report.frames, capture.len() as u64);
    assert_eq!(report.bytes, total);
    assert_eq!(report.max_frame_bytes, max_frame);
    assert_eq!(report.max_op_commits, max_op_commits);
    assert_eq!(report.blocks, blocks_total);
    assert_eq!(report.seq_range, Some((1_000_000, prev_seq.unwrap())));

    // The mix is close to the live network's.
    let share = |c: &str| by_collection.get(c).copied().unwrap_or(0) as f64 / ops as f64;
    assert!((share("app.bsky.feed.like") - 0.70).abs() < 0.03);
    assert!((share("app.bsky.feed.post") - 0.12).abs() < 0.02);
    assert!((share("app.bsky.feed.repost") - 0.08).abs() < 0.02);
    assert!((share("app.bsky.graph.follow") - 0.05).abs() < 0.02);
    assert!(by_collection.len() > 10, "other collections appear too");
    for kind in ["#identity", "#account", "#sync"] {
        assert!(events.get(kind).copied().unwrap_or(0) > 0, "{kind} present");
    }
    for action in ["create", "update", "delete"] {
        assert!(
            by_action.get(action).copied().unwrap_or(0) > 0,
            "{action} present"
        );
    }
    assert!(
        max_op_commits >= 4,
        "200-op commits present: {max_op_commits}"
    );
    assert!(report.big_frames >= 2);
    assert!(max_frame > 1_800_000, "big frames present: {max_frame}");
    assert!(new_repos > 0, "some repos start in the capture");
}

#[test]
fn oversize_big_frames_reach_near_5mb() {
    let source = source();
    let cfg = SynthConfig {
        ops: 400,
        big_every: 2,
        big_blocks_bytes: synth::MAX_BIG_BLOCKS_BYTES,
        ..config()
    };
    let (bytes, report) = synthesize(&source, cfg);
    assert!(
        report.max_frame_bytes > 4_800_000 && report.max_frame_bytes < 5_000_000,
        "{report:?}"
    );
    let capture = Capture::from_bytes(bytes).unwrap();
    assert_eq!(
        capture.last_seq().unwrap() - capture.first_seq().unwrap() + 1,
        capture.len() as u64
    );
}

#[test]
fn bad_configs_are_refused() {
    let source = source();
    let bad = [
        SynthConfig {
            events_per_second: 0.0,
            ..config()
        },
        SynthConfig {
            repos: 0,
            ..config()
        },
        SynthConfig {
            big_blocks_bytes: 5_000_000,
            ..config()
        },
        SynthConfig {
            mst_nodes_min: 9,
            mst_nodes_max: 3,
            ..config()
        },
    ];
    for cfg in bad {
        assert!(synth::Synthesizer::new(&source, cfg).is_err());
    }
}

/// The shapes the config asks for, measured on the frames: multi-op commits near
/// `multi_op_share`, about 1 % of repos new in the capture, activity skewed towards a few
/// repos, DIDs of `did:plc:` + 24 base32 characters, one per repo.
#[test]
fn commits_repos_and_dids_have_the_configured_shape() {
    let source = source();
    let cfg = SynthConfig {
        ops: 30_000,
        repos: 3_000,
        multi_op_share: 0.10,
        max_ops_every: 0,
        big_every: 0,
        ..config()
    };
    let (bytes, _) = synthesize(&source, cfg);
    let capture = Capture::from_bytes(bytes).unwrap();
    let (mut commits, mut multi) = (0u64, 0u64);
    let mut per_repo: HashMap<String, u64> = HashMap::new();
    let mut is_new: HashMap<String, bool> = HashMap::new();
    for f in capture.frames() {
        let (h, _): (Header, IgnoredAny) = split_frame(&f.bytes);
        if h.t.as_deref() != Some("#commit") {
            continue;
        }
        let (_, c): (Header, Commit) = split_frame(&f.bytes);
        commits += 1;
        if c.ops.len() > 1 {
            assert!((2..=10).contains(&c.ops.len()), "{} ops", c.ops.len());
            multi += 1;
        }
        *per_repo.entry(c.repo.clone()).or_insert(0) += 1;
        is_new.entry(c.repo).or_insert(c.since.is_none());
    }

    let multi_share = multi as f64 / commits as f64;
    assert!(
        (multi_share - 0.10).abs() < 0.02,
        "multi-op share {multi_share}"
    );

    let new_share = is_new.values().filter(|n| **n).count() as f64 / is_new.len() as f64;
    assert!(
        (0.004..0.02).contains(&new_share),
        "new repos: {new_share} of {}",
        is_new.len()
    );

    // Uniform activity would give the busiest tenth of the repos a tenth of the commits.
    let mut counts: Vec<u64> = per_repo.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let busiest: u64 = counts[..3_000 / 10].iter().sum();
    let busiest_share = busiest as f64 / commits as f64;
    assert!(busiest_share > 0.25, "busiest tenth: {busiest_share}");

    for did in per_repo.keys() {
        let id = did.strip_prefix("did:plc:").unwrap();
        assert_eq!(id.len(), 24, "{did}");
        assert!(
            id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')),
            "{did}"
        );
    }
    assert!(
        per_repo.len() > 2_500,
        "most repos commit: {}",
        per_repo.len()
    );
}
