//! Synthesizes large, realistic firehose captures from a real repository.
//!
//! The [`Source`] is a real repository export (a CARv1, e.g. `shrike-fixtures/calabro.car`):
//! its MST is read to find every record with its real path, bytes and CID, and its MST node
//! blocks are kept to fill commits' CAR slices. The [`Synthesizer`] then emits frames shaped
//! like the real relay's (same field sets as the production corpus):
//!
//! - `#commit` `{blobs: [], blocks, commit, ops, prevData?, rebase: false, repo, rev, seq,
//!   since, time, tooBig: false}`, ops `{action, cid|null, path, prev?}` (`prev` on
//!   update/delete, as production frames have it). `blocks` is a CAR whose root is the
//!   commit: some real MST node blocks, the real record blocks of the create/update ops,
//!   and a commit block `{data, did, prev: null, rev, sig, version: 3}` whose CID is its
//!   real sha2-256 CID. `since`/`prevData` chain each synthetic repo's previous commit.
//! - `#identity` `{did, handle?, seq, time}`, `#account` `{active, did, seq, status?, time}`,
//!   `#sync` `{blocks (CAR with only the commit block), did, rev, seq, time}`.
//!
//! Records keep their real bytes and CIDs; collections are drawn from a configurable mix
//! (default close to the live network: ~70 % likes, 12 % posts, 8 % reposts, 5 % follows,
//! the rest spread over the source's other collections in proportion to their size). Record
//! keys are fresh TIDs at the event time (or the record's real key when it is not a TID,
//! e.g. `self`). DIDs (`did:plc:` + 24 base32 characters) are derived from the seed; repo
//! activity is skewed (a few repos are much busier than most).
//!
//! Multi-op commits: a share of commits carries 2–10 ops, and every
//! [`SynthConfig::max_ops_every`]-th commit carries 200 (the protocol maximum).
//!
//! **Big frames.** The lexicon caps a commit's `blocks` at 2,000,000 bytes, so a valid
//! frame cannot approach 5 MB. Every [`SynthConfig::big_every`]-th commit is a 200-op commit
//! whose CAR is padded with further real blocks of the source up to
//! [`SynthConfig::big_blocks_bytes`] (default 1,900,000: valid). The source holds ~1.4 MB of
//! distinct block data, so past that the padding repeats blocks (a CAR may repeat a block;
//! readers key blocks by CID). Setting `big_blocks_bytes` up to 4,900,000 gives frames near
//! 5 MB that deliberately break the 2,000,000-byte lexicon limit, to test frame-size limits.
//!
//! Everything is deterministic from [`SynthConfig::seed`] (a splitmix64 generator): the same
//! source and config always give the same bytes. `seq` starts at
//! [`SynthConfig::start_seq`] and increases by one per event; `time` advances by
//! `1 / events_per_second` of event time per event.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::capture::{CaptureError, CaptureWriter};
use crate::{frame, tid, time};
use firehose::car;

/// Largest `big_blocks_bytes` accepted: keeps big frames under 5,000,000 bytes.
pub const MAX_BIG_BLOCKS_BYTES: usize = 4_900_000;
/// The protocol's limit on ops per commit.
pub const MAX_OPS_PER_COMMIT: usize = 200;

const LIKE: &str = "app.bsky.feed.like";
const POST: &str = "app.bsky.feed.post";
const REPOST: &str = "app.bsky.feed.repost";
const FOLLOW: &str = "app.bsky.graph.follow";

/// Why synthesis failed.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The source CAR could not be read.
    #[error("reading source repository {path}: {source}")]
    SourceIo {
        /// The CAR path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The source CAR is malformed.
    #[error("source repository: {0}")]
    SourceCar(#[from] car::CarError),
    /// The source lacks what the config asks for.
    #[error("source repository: {0}")]
    Source(String),
    /// The config is not usable.
    #[error("invalid synth config: {0}")]
    Config(String),
    /// Writing the capture failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// Share of ops per collection group. Weights, not necessarily summing to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollectionMix {
    /// `app.bsky.feed.like`
    pub like: f64,
    /// `app.bsky.feed.post`
    pub post: f64,
    /// `app.bsky.feed.repost`
    pub repost: f64,
    /// `app.bsky.graph.follow`
    pub follow: f64,
    /// Every other collection of the source, in proportion to its record count.
    pub other: f64,
}

impl Default for CollectionMix {
    fn default() -> Self {
        Self {
            like: 0.70,
            post: 0.12,
            repost: 0.08,
            follow: 0.05,
            other: 0.05,
        }
    }
}

/// Share of op actions. Weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActionMix {
    /// New record (fresh TID key, record block carried).
    pub create: f64,
    /// Record replaced (real key, record block carried, `prev` = an older record's CID).
    pub update: f64,
    /// Record removed (`cid: null`, `prev` = the record's CID, no block).
    pub delete: f64,
}

impl Default for ActionMix {
    fn default() -> Self {
        Self {
            create: 0.90,
            update: 0.03,
            delete: 0.07,
        }
    }
}

/// Share of non-commit events among all events (commits are the rest).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindMix {
    /// `#identity`
    pub identity: f64,
    /// `#account`
    pub account: f64,
    /// `#sync`
    pub sync: f64,
}

impl Default for KindMix {
    fn default() -> Self {
        Self {
            identity: 0.005,
            account: 0.003,
            sync: 0.001,
        }
    }
}

/// What to synthesize.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Total commit ops to produce; synthesis stops when they are all out.
    pub ops: u64,
    /// `seq` of the first event.
    pub start_seq: u64,
    /// `time` of the first event, microseconds since the Unix epoch.
    pub start_time_micros: i64,
    /// Events per second of event time.
    pub events_per_second: f64,
    /// Distinct synthetic repositories (DIDs).
    pub repos: u32,
    /// Collections of the ops.
    pub collections: CollectionMix,
    /// Actions of the ops.
    pub actions: ActionMix,
    /// Non-commit events.
    pub kinds: KindMix,
    /// Share of ordinary commits that carry 2–10 ops instead of 1.
    pub multi_op_share: f64,
    /// Every Nth commit carries 200 ops (0: never).
    pub max_ops_every: u64,
    /// Every Nth commit is a big frame (0: never); takes precedence over `max_ops_every`.
    pub big_every: u64,
    /// Target size of a big frame's CAR, at most [`MAX_BIG_BLOCKS_BYTES`].
    pub big_blocks_bytes: usize,
    /// Fewest real MST node blocks in a commit's CAR.
    pub mst_nodes_min: usize,
    /// Most real MST node blocks in a commit's CAR.
    pub mst_nodes_max: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            ops: 100_000,
            start_seq: 1,
            // 2026-07-04T14:38:07.000Z, the day of the real corpus.
            start_time_micros: 1_783_175_887_000_000,
            events_per_second: 1000.0,
            repos: 100_000,
            collections: CollectionMix::default(),
            actions: ActionMix::default(),
            kinds: KindMix::default(),
            multi_op_share: 0.03,
            max_ops_every: 5_000,
            big_every: 100_000,
            big_blocks_bytes: 1_900_000,
            mst_nodes_min: 3,
            mst_nodes_max: 8,
        }
    }
}

/// What was synthesized. Every count is of what the frames contain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynthReport {
    /// Frames (events) written.
    pub frames: u64,
    /// Frame bytes, without capture length prefixes.
    pub bytes: u64,
    /// Largest frame.
    pub max_frame_bytes: u64,
    /// `seq` of the first and last event.
    pub seq_range: Option<(u64, u64)>,
    /// `time` of the first and last event, microseconds since the epoch.
    pub time_range: Option<(i64, i64)>,
    /// Events per kind (`#commit`, `#identity`, `#account`, `#sync`).
    pub events: BTreeMap<String, u64>,
    /// Commit ops in total.
    pub ops: u64,
    /// Ops per collection (the part of `path` before `/`).
    pub ops_by_collection: BTreeMap<String, u64>,
    /// Ops per action (`create`, `update`, `delete`).
    pub ops_by_action: BTreeMap<String, u64>,
    /// Commits carrying 200 ops (big frames included).
    pub max_op_commits: u64,
    /// Big frames.
    pub big_frames: u64,
    /// CAR blocks carried by all frames.
    pub blocks: u64,
}

impl fmt::Display for SynthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frames: {}  bytes: {}  max frame: {}",
            self.frames, self.bytes, self.max_frame_bytes
        )?;
        if let Some((a, b)) = self.seq_range {
            writeln!(f, "seq: {a}..={b}")?;
        }
        if let Some((a, b)) = self.time_range {
            writeln!(
                f,
                "time: {} .. {}",
                time::format_rfc3339_millis(a),
                time::format_rfc3339_millis(b)
            )?;
        }
        writeln!(f, "events:")?;
        for (k, v) in &self.events {
            writeln!(f, "  {k:<12} {v}")?;
        }
        writeln!(
            f,
            "ops: {}  (200-op commits: {}, big frames: {}, blocks: {})",
            self.ops, self.max_op_commits, self.big_frames, self.blocks
        )?;
        for (k, v) in &self.ops_by_action {
            writeln!(f, "  {k:<12} {v}")?;
        }
        writeln!(f, "ops by collection:")?;
        let mut by_count: Vec<_> = self.ops_by_collection.iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, v) in by_count {
            writeln!(f, "  {v:>10}  {k}")?;
        }
        Ok(())
    }
}

/// One block of the source repository.
#[derive(Debug, Clone)]
pub struct SourceBlock {
    /// Its CID.
    pub cid: Cid,
    /// The CID's binary form.
    pub cid_bytes: Vec<u8>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// One record of the source repository.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Its real record key.
    pub rkey: String,
    /// Index of its block in [`Source::blocks`].
    pub block: usize,
}

/// A collection of the source repository with its records.
#[derive(Debug, Clone)]
pub struct SourceCollection {
    /// The NSID.
    pub nsid: String,
    /// Its records.
    pub records: Vec<SourceRecord>,
}

/// A real repository, read once, from which frames are synthesized.
#[derive(Debug, Clone)]
pub struct Source {
    /// Every block whose CID matches its bytes.
    pub blocks: Vec<SourceBlock>,
    /// Indices of the MST node blocks.
    pub mst_nodes: Vec<usize>,
    /// Collections, sorted by NSID.
    pub collections: Vec<SourceCollection>,
}

#[derive(Deserialize)]
struct MstNode {
    #[serde(rename = "l")]
    _left: Option<Cid>,
    e: Vec<MstEntry>,
}

#[derive(Deserialize)]
struct MstEntry {
    p: usize,
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    v: Cid,
    #[serde(rename = "t")]
    _tree: Option<Cid>,
}

impl Source {
    /// Reads a repository CAR file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SynthError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| SynthError::SourceIo {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_car(&bytes)
    }

    /// Reads a repository from CAR bytes: its MST gives each record's path; blocks whose
    /// CID does not match their bytes are left out.
    pub fn from_car(bytes: &[u8]) -> Result<Self, SynthError> {
        let blocks = car::read(bytes)?.blocks;
        let mut out = Source {
            blocks: Vec::with_capacity(blocks.len()),
            mst_nodes: Vec::new(),
            collections: Vec::new(),
        };
        let mut by_cid = std::collections::HashMap::new();
        for b in &blocks {
            let Ok(cid) = Cid::try_from(b.cid) else {
                continue;
            };
            if firehose::cid::verify(b.cid, b.data).is_err() || by_cid.contains_key(&cid) {
                continue;
            }
            by_cid.insert(cid, out.blocks.len());
            out.blocks.push(SourceBlock {
                cid,
                cid_bytes: b.cid.to_vec(),
                data: b.data.to_vec(),
            });
        }
        let mut collections: BTreeMap<String, Vec<SourceRecord>> = BTreeMap::new();
        for (i, block) in out.blocks.iter().enumerate() {
            let Ok(node) = serde_ipld_dagcbor::from_slice::<MstNode>(&block.data) else {
                continue;
            };
            out.mst_nodes.push(i);
            let mut key: Vec<u8> = Vec::new();
            for entry in node.e {
                if entry.p > key.len() {
                    return Err(SynthError::Source(format!(
                        "MST node {} has a prefix longer than the previous key",
                        block.cid
                    )));
                }
                key.truncate(entry.p);
                key.extend_from_slice(&entry.k);
                let Some(&record) = by_cid.get(&entry.v) else {
                    continue; // record not in this export
                };
                let Ok(path) = std::str::from_utf8(&key) else {
                    continue;
                };
                let Some((collection, rkey)) = path.split_once('/') else {
                    continue;
                };
                collections
                    .entry(collection.to_owned())
                    .or_default()
                    .push(SourceRecord {
                        rkey: rkey.to_owned(),
                        block: record,
                    });
            }
        }
        if out.mst_nodes.is_empty() {
            return Err(SynthError::Source("no MST node".into()));
        }
        out.collections = collections
            .into_iter()
            .map(|(nsid, mut records)| {
                records.sort_by(|a, b| a.rkey.cmp(&b.rkey));
                SourceCollection { nsid, records }
            })
            .collect();
        Ok(out)
    }

    /// Number of records over all collections.
    pub fn record_count(&self) -> usize {
        self.collections.iter().map(|c| c.records.len()).sum()
    }
}

/// splitmix64: small, fast, deterministic.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A weighted choice table.
#[derive(Debug, Clone)]
struct Table<T> {
    cumulative: Vec<f64>,
    items: Vec<T>,
}

impl<T: Copy> Table<T> {
    fn new(weights: impl IntoIterator<Item = (f64, T)>) -> Option<Self> {
        let mut cumulative = Vec::new();
        let mut items = Vec::new();
        let mut total = 0.0;
        for (w, item) in weights {
            if w > 0.0 {
                total += w;
                cumulative.push(total);
                items.push(item);
            }
        }
        (total > 0.0).then_some(Table { cumulative, items })
    }
    fn pick(&self, rng: &mut Rng) -> T {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.unit() * total;
        let i = self.cumulative.partition_point(|&c| c <= x);
        self.items[i.min(self.items.len() - 1)]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Update,
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct RepoState {
    /// Last rev's microseconds (0: no commit yet).
    rev_micros: u64,
    rev_clock: u16,
    /// Index in `Source::mst_nodes` of the last commit's `data`.
    data: u32,
}

#[derive(Serialize)]
struct CommitBlock<'a> {
    did: &'a str,
    rev: &'a str,
    sig: &'a serde_bytes::Bytes,
    data: Cid,
    prev: Option<Cid>,
    version: u64,
}

#[derive(Serialize)]
struct OpOut {
    action: &'static str,
    cid: Option<Cid>,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev: Option<Cid>,
}

#[derive(Serialize)]
struct CommitBody<'a> {
    ops: &'a [OpOut],
    rev: &'a str,
    seq: u64,
    repo: &'a str,
    time: &'a str,
    blobs: &'a [Cid],
    #[serde(with = "serde_bytes")]
    blocks: &'a [u8],
    commit: Cid,
    rebase: bool,
    since: Option<&'a str>,
    #[serde(rename = "tooBig")]
    too_big: bool,
    #[serde(rename = "prevData", skip_serializing_if = "Option::is_none")]
    prev_data: Option<Cid>,
}

#[derive(Serialize)]
struct IdentityBody<'a> {
    did: &'a str,
    seq: u64,
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<&'a str>,
}

#[derive(Serialize)]
struct AccountBody<'a> {
    did: &'a str,
    seq: u64,
    time: &'a str,
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

#[derive(Serialize)]
struct SyncBody<'a> {
    did: &'a str,
    rev: &'a str,
    seq: u64,
    time: &'a str,
    #[serde(with = "serde_bytes")]
    blocks: &'a [u8],
}

/// Produces frames one at a time (see the module docs).
pub struct Synthesizer<'a> {
    source: &'a Source,
    cfg: SynthConfig,
    rng: Rng,
    collections: Table<usize>,
    actions: Table<Action>,
    dids: Vec<[u8; 32]>,
    repos: Vec<RepoState>,
    /// Per source block: the commit number that last included it (dedupes a CAR's blocks).
    stamp: Vec<u64>,
    event: u64,
    commits: u64,
    ops_left: u64,
    frame: Vec<u8>,
    car: Vec<u8>,
    ops: Vec<OpOut>,
    included: Vec<usize>,
    report: SynthReport,
}

/// A synthesized DID as text (built from ASCII only).
fn did_str(did: &[u8; 32]) -> &str {
    std::str::from_utf8(did).unwrap_or("did:plc:invalid")
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl<'a> Synthesizer<'a> {
    /// Checks the config against the source and prepares the generator.
    pub fn new(source: &'a Source, cfg: SynthConfig) -> Result<Self, SynthError> {
        let bad = |m: &str| Err(SynthError::Config(m.to_owned()));
        if !(cfg.events_per_second.is_finite() && cfg.events_per_second > 0.0) {
            return bad("events_per_second must be a positive number");
        }
        if cfg.repos == 0 {
            return bad("repos must be at least 1");
        }
        if cfg.mst_nodes_min > cfg.mst_nodes_max || cfg.mst_nodes_max > source.mst_nodes.len() {
            return bad("mst_nodes_min <= mst_nodes_max <= the source's MST node count");
        }
        if cfg.big_blocks_bytes > MAX_BIG_BLOCKS_BYTES {
            return bad("big_blocks_bytes must be at most 4,900,000");
        }
        if !(0.0..=1.0).contains(&cfg.multi_op_share) {
            return bad("multi_op_share must be within 0..=1");
        }
        let k = cfg.kinds;
        let non_commit = k.identity + k.account + k.sync;
        if [k.identity, k.account, k.sync]
            .iter()
            .any(|w| !(w.is_finite() && *w >= 0.0))
            || non_commit >= 1.0
        {
            return bad("identity + account + sync shares must be >= 0 and below 1");
        }
        let m = cfg.collections;
        let weights = [m.like, m.post, m.repost, m.follow, m.other];
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return bad("collection weights must be >= 0");
        }
        let a = cfg.actions;
        if [a.create, a.update, a.delete]
            .iter()
            .any(|w| !(w.is_finite() && *w >= 0.0))
        {
            return bad("action weights must be >= 0");
        }
        let index_of = |nsid: &str| source.collections.iter().position(|c| c.nsid == nsid);
        let mut choices = Vec::new();
        for (nsid, w) in [
            (LIKE, m.like),
            (POST, m.post),
            (REPOST, m.repost),
            (FOLLOW, m.follow),
        ] {
            match index_of(nsid) {
                Some(i) if !source.collections[i].records.is_empty() => choices.push((w, i)),
                _ if w > 0.0 => {
                    return Err(SynthError::Source(format!(
                        "no {nsid} record in the source"
                    )))
                }
                _ => {}
            }
        }
        let others: Vec<usize> = (0..source.collections.len())
            .filter(|&i| {
                ![LIKE, POST, REPOST, FOLLOW].contains(&source.collections[i].nsid.as_str())
            })
            .collect();
        let other_records: usize = others
            .iter()
            .map(|&i| source.collections[i].records.len())
            .sum();
        if m.other > 0.0 && other_records == 0 {
            return Err(SynthError::Source(
                "no record outside the main collections".into(),
            ));
        }
        for &i in &others {
            let share = source.collections[i].records.len() as f64 / other_records.max(1) as f64;
            choices.push((m.other * share, i));
        }
        let collections = Table::new(choices)
            .ok_or_else(|| SynthError::Config("collection weights are all zero".into()))?;
        let actions = Table::new([
            (a.create, Action::Create),
            (a.update, Action::Update),
            (a.delete, Action::Delete),
        ])
        .ok_or_else(|| SynthError::Config("action weights are all zero".into()))?;

        let dids = (0..u64::from(cfg.repos))
            .map(|i| {
                let (h1, h2) = (mix(cfg.seed ^ mix(i)), mix(!cfg.seed ^ mix(i ^ 0x5555)));
                let mut did = *b"did:plc:________________________";
                for (j, c) in did[8..].iter_mut().enumerate() {
                    let bits = if j < 12 {
                        h1 >> (j * 5)
                    } else {
                        h2 >> ((j - 12) * 5)
                    };
                    *c = BASE32[(bits & 31) as usize];
                }
                did
            })
            .collect();
        Ok(Self {
            source,
            rng: Rng(mix(cfg.seed ^ 0x0053_7461_6769_6e67)),
            collections,
            actions,
            dids,
            repos: vec![RepoState::default(); cfg.repos as usize],
            stamp: vec![u64::MAX; source.blocks.len()],
            event: 0,
            commits: 0,
            ops_left: cfg.ops,
            frame: Vec::with_capacity(64 * 1024),
            car: Vec::with_capacity(64 * 1024),
            ops: Vec::with_capacity(MAX_OPS_PER_COMMIT),
            included: Vec::with_capacity(1024),
            report: SynthReport::default(),
            cfg,
        })
    }

    /// What has been produced so far.
    pub fn report(&self) -> &SynthReport {
        &self.report
    }

    /// Consumes the generator, returning its report.
    pub fn into_report(self) -> SynthReport {
        self.report
    }

    /// The next frame, or `None` once every op has been produced.
    #[allow(clippy::should_implement_trait)] // lends its buffer: not an Iterator
    pub fn next_frame(&mut self) -> Option<&[u8]> {
        if self.ops_left == 0 {
            return None;
        }
        let seq = self.cfg.start_seq + self.event;
        let time_micros = self.cfg.start_time_micros
            + (self.event as f64 * 1e6 / self.cfg.events_per_second) as i64;
        let time = time::format_rfc3339_millis(time_micros);
        let repo = self.pick_repo();
        let k = self.cfg.kinds;
        let u = self.rng.unit();
        self.frame.clear();
        let kind = if u < k.identity {
            self.identity(repo, seq, &time)
        } else if u < k.identity + k.account {
            self.account(repo, seq, &time)
        } else if u < k.identity + k.account + k.sync {
            self.sync(repo, seq, time_micros, &time)
        } else {
            self.commit(repo, seq, time_micros, &time)
        };
        let r = &mut self.report;
        r.frames += 1;
        r.bytes += self.frame.len() as u64;
        r.max_frame_bytes = r.max_frame_bytes.max(self.frame.len() as u64);
        r.seq_range = Some((r.seq_range.map_or(seq, |(a, _)| a), seq));
        r.time_range = Some((r.time_range.map_or(time_micros, |(a, _)| a), time_micros));
        *r.events.entry(kind.to_owned()).or_insert(0) += 1;
        self.event += 1;
        Some(&self.frame)
    }

    fn pick_repo(&mut self) -> usize {
        // Skewed activity: u² puts most events on a minority of repos.
        let u = self.rng.unit();
        ((u * u * f64::from(self.cfg.repos)) as usize).min(self.cfg.repos as usize - 1)
    }

    fn did(&self, repo: usize) -> &str {
        did_str(&self.dids[repo])
    }

    /// Whether this repo is brand new in the capture (first commit has `since: null` and no
    /// `prevData`), for about 1 % of repos.
    fn is_new_repo(&self, repo: usize) -> bool {
        mix(self.cfg.seed ^ (repo as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)) % 100 == 0
    }

    fn repo_clock(&self, repo: usize) -> u16 {
        (mix(repo as u64 ^ self.cfg.seed) & 0x3ff) as u16
    }

    /// Next rev of `repo` at `time_micros`; returns (rev, since, prevData).
    fn advance_rev(&mut self, repo: usize, time_micros: i64) -> (u64, Option<String>, Option<Cid>) {
        let clock = self.repo_clock(repo);
        let state = self.repos[repo];
        let (since, prev_data) = if state.rev_micros == 0 {
            if self.is_new_repo(repo) {
                (None, None)
            } else {
                // The repo existed before the capture: up to 30 days older.
                let age = mix(repo as u64 ^ 0xa11ce) % (30 * 86_400_000_000);
                let before = (time_micros.max(0) as u64).saturating_sub(age + 1);
                let node = self.source.mst_nodes
                    [(mix(repo as u64) % self.source.mst_nodes.len() as u64) as usize];
                (
                    Some(tid::encode_string(before, clock)),
                    Some(self.source.blocks[node].cid),
                )
            }
        } else {
            let node = self.source.mst_nodes[state.data as usize];
            (
                Some(tid::encode_string(state.rev_micros, state.rev_clock)),
                Some(self.source.blocks[node].cid),
            )
        };
        let rev_micros = (time_micros.max(0) as u64).max(state.rev_micros + 1);
        self.repos[repo].rev_micros = rev_micros;
        self.repos[repo].rev_clock = clock;
        (rev_micros, since, prev_data)
    }

    /// Builds and hashes a commit block; returns (cid, bytes).
    fn commit_block(&mut self, did: &str, rev: &str, data: Cid) -> (Cid, [u8; 36], Vec<u8>) {
        let mut sig = [0u8; 64];
        for chunk in sig.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next().to_le_bytes());
        }
        let block = CommitBlock {
            did,
            rev,
            sig: serde_bytes::Bytes::new(&sig),
            data,
            prev: None,
            version: 3,
        };
        let bytes = serde_ipld_dagcbor::to_vec(&block).unwrap_or_default();
        let cid_bytes = firehose::cid::dag_cbor_cid(&bytes);
        let cid = Cid::try_from(&cid_bytes[..]).unwrap_or_default();
        (cid, cid_bytes, bytes)
    }

    fn commit(&mut self, repo: usize, seq: u64, time_micros: i64, time: &str) -> &'static str {
        self.commits += 1;
        let big = self.cfg.big_every > 0 && self.commits % self.cfg.big_every == 0;
        let max = big || (self.cfg.max_ops_every > 0 && self.commits % self.cfg.max_ops_every == 0);
        let wanted = if max {
            MAX_OPS_PER_COMMIT as u64
        } else if self.rng.unit() < self.cfg.multi_op_share {
            self.rng.range(2, 10) as u64
        } else {
            1
        };
        let n_ops = wanted.min(self.ops_left);
        self.ops_left -= n_ops;
        let did_owned = self.did(repo).to_owned();
        let did = did_owned.as_str();
        let (rev_micros, since, prev_data) = self.advance_rev(repo, time_micros);
        let rev = tid::encode_string(rev_micros, self.repo_clock(repo));

        // Ops and their record blocks.
        let stamp = self.commits;
        self.ops.clear();
        self.included.clear();
        for k in 0..n_ops {
            let ci = self.collections.pick(&mut self.rng);
            let coll = &self.source.collections[ci];
            let mut action = if big {
                Action::Create
            } else {
                self.actions.pick(&mut self.rng)
            };
            // A commit touches each path at most once (the repo's MST has one entry per
            // path): pick again while the path is taken; after a few tries, create under
            // this op's own fresh TID key, which no other op of the commit can hold.
            let mut tries = 0;
            let (rec, path) = loop {
                let rec = &coll.records[self.rng.below(coll.records.len() as u64) as usize];
                let fresh = action == Action::Create && tid::is_tid(&rec.rkey);
                let rkey = if fresh || tries >= 8 {
                    action = Action::Create;
                    tid::encode_string(rev_micros, k as u16)
                } else {
                    rec.rkey.clone()
                };
                let path = format!("{}/{}", coll.nsid, rkey);
                if tries >= 8 || !self.ops.iter().any(|o| o.path == path) {
                    break (rec, path);
                }
                tries += 1;
            };
            let cid = self.source.blocks[rec.block].cid;
            let op = match action {
                Action::Create => OpOut {
                    action: "create",
                    cid: Some(cid),
                    path: String::new(),
                    prev: None,
                },
                Action::Update => {
                    let older = &coll.records[self.rng.below(coll.records.len() as u64) as usize];
                    let prev = self.source.blocks[older.block].cid;
                    OpOut {
                        action: "update",
                        cid: Some(cid),
                        path: String::new(),
                        prev: Some(prev),
                    }
                }
                Action::Delete => OpOut {
                    action: "delete",
                    cid: None,
                    path: String::new(),
                    prev: Some(cid),
                },
            };
            *self
                .report
                .ops_by_collection
                .entry(coll.nsid.clone())
                .or_insert(0) += 1;
            *self
                .report
                .ops_by_action
                .entry(action.as_str().to_owned())
                .or_insert(0) += 1;
            if action != Action::Delete && self.stamp[rec.block] != stamp {
                self.stamp[rec.block] = stamp;
                self.included.push(rec.block);
            }
            self.ops.push(OpOut { path, ..op });
        }
        self.report.ops += n_ops;
        if n_ops == MAX_OPS_PER_COMMIT as u64 {
            self.report.max_op_commits += 1;
        }

        // MST nodes: a run of distinct real nodes; the first is the new `data` root.
        let nodes = &self.source.mst_nodes;
        let m = self
            .rng
            .range(self.cfg.mst_nodes_min, self.cfg.mst_nodes_max);
        let first = self.rng.below(nodes.len() as u64) as usize;
        self.repos[repo].data = first as u32;
        let data = self.source.blocks[nodes[first]].cid;
        let (commit_cid, commit_cid_bytes, commit_bytes) = self.commit_block(did, &rev, data);

        self.car.clear();
        car::write_header(&mut self.car, &[&commit_cid_bytes]);
        let mut blocks = 1u64;
        for j in 0..m {
            let b = nodes[(first + j) % nodes.len()];
            if self.stamp[b] != stamp {
                self.stamp[b] = stamp;
                let block = &self.source.blocks[b];
                car::write_block(&mut self.car, &block.cid_bytes, &block.data);
                blocks += 1;
            }
        }
        for &b in &self.included {
            let block = &self.source.blocks[b];
            car::write_block(&mut self.car, &block.cid_bytes, &block.data);
            blocks += 1;
        }
        car::write_block(&mut self.car, &commit_cid_bytes, &commit_bytes);
        if big {
            // Pad with further real blocks: distinct ones first, then repeats.
            let target = self.cfg.big_blocks_bytes;
            let all = self.source.blocks.len();
            let start = self.rng.below(all as u64) as usize;
            let mut i = 0usize;
            let mut stalled = 0usize;
            while self.car.len() < target && stalled < all {
                let b = (start + i) % all;
                i += 1;
                let block = &self.source.blocks[b];
                let repeat = i > all;
                let section = block.cid_bytes.len() + block.data.len() + 5;
                if (!repeat && self.stamp[b] == stamp) || self.car.len() + section > target {
                    stalled += 1;
                    continue;
                }
                stalled = 0;
                self.stamp[b] = stamp;
                car::write_block(&mut self.car, &block.cid_bytes, &block.data);
                blocks += 1;
            }
            self.report.big_frames += 1;
        }
        self.report.blocks += blocks;

        frame::write_message_header(&mut self.frame, "#commit");
        let body = CommitBody {
            ops: &self.ops,
            rev: &rev,
            seq,
            repo: did,
            time,
            blobs: &[],
            blocks: &self.car,
            commit: commit_cid,
            rebase: false,
            since: since.as_deref(),
            too_big: false,
            prev_data,
        };
        let _ = serde_ipld_dagcbor::to_writer(&mut self.frame, &body);
        "#commit"
    }

    fn identity(&mut self, repo: usize, seq: u64, time: &str) -> &'static str {
        let handle = (self.rng.unit() < 0.8).then(|| format!("u{repo}.synth.test"));
        frame::write_message_header(&mut self.frame, "#identity");
        let body = IdentityBody {
            did: did_str(&self.dids[repo]),
            seq,
            time,
            handle: handle.as_deref(),
        };
        let _ = serde_ipld_dagcbor::to_writer(&mut self.frame, &body);
        "#identity"
    }

    fn account(&mut self, repo: usize, seq: u64, time: &str) -> &'static str {
        const STATUSES: [&str; 4] = ["deactivated", "takendown", "suspended", "deleted"];
        let active = self.rng.unit() < 0.8;
        let status = (!active).then(|| STATUSES[self.rng.below(4) as usize]);
        frame::write_message_header(&mut self.frame, "#account");
        let body = AccountBody {
            did: did_str(&self.dids[repo]),
            seq,
            time,
            active,
            status,
        };
        let _ = serde_ipld_dagcbor::to_writer(&mut self.frame, &body);
        "#account"
    }

    fn sync(&mut self, repo: usize, seq: u64, time_micros: i64, time: &str) -> &'static str {
        let did = self.did(repo).to_owned();
        let (rev_micros, _since, _prev) = self.advance_rev(repo, time_micros);
        let rev = tid::encode_string(rev_micros, self.repo_clock(repo));
        let nodes = &self.source.mst_nodes;
        let first = self.rng.below(nodes.len() as u64) as usize;
        self.repos[repo].data = first as u32;
        let data = self.source.blocks[nodes[first]].cid;
        let (_cid, cid_bytes, bytes) = self.commit_block(&did, &rev, data);
        self.car.clear();
        car::write_header(&mut self.car, &[&cid_bytes]);
        car::write_block(&mut self.car, &cid_bytes, &bytes);
        self.report.blocks += 1;
        frame::write_message_header(&mut self.frame, "#sync");
        let body = SyncBody {
            did: &did,
            rev: &rev,
            seq,
            time,
            blocks: &self.car,
        };
        let _ = serde_ipld_dagcbor::to_writer(&mut self.frame, &body);
        "#sync"
    }
}

/// Synthesizes a whole capture into `writer` (streamed: frames are not kept) and returns
/// the report. The writer is flushed, not finished.
pub fn synthesize<W: Write>(
    source: &Source,
    cfg: SynthConfig,
    writer: &mut CaptureWriter<W>,
) -> Result<SynthReport, SynthError> {
    let mut synth = Synthesizer::new(source, cfg)?;
    while let Some(frame) = synth.next_frame() {
        writer.write_frame(frame)?;
    }
    writer.flush()?;
    Ok(synth.into_report())
}
