//! What to synthesize: [`SynthConfig`] and its mixes, checked against the source before
//! anything is generated, and turned into the choice tables the generator draws from.

use super::body::Action;
use super::source::Source;
use super::table::Table;
use super::{SynthError, MAX_BIG_BLOCKS_BYTES};

const LIKE: &str = "app.bsky.feed.like";
const POST: &str = "app.bsky.feed.post";
const REPOST: &str = "app.bsky.feed.repost";
const FOLLOW: &str = "app.bsky.graph.follow";

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

/// Whether every weight is a finite number, at least 0.
fn weights_ok(weights: &[f64]) -> bool {
    weights.iter().all(|w| w.is_finite() && *w >= 0.0)
}

impl SynthConfig {
    /// Checks the numbers and sizes against each other and against the source.
    pub(super) fn validate(&self, source: &Source) -> Result<(), SynthError> {
        let bad = |m: &str| Err(SynthError::Config(m.to_owned()));
        if source.mst_nodes.is_empty() {
            return Err(SynthError::Source("no MST node".into()));
        }
        if !(self.events_per_second.is_finite() && self.events_per_second > 0.0) {
            return bad("events_per_second must be a positive number");
        }
        if self.repos == 0 {
            return bad("repos must be at least 1");
        }
        if self.mst_nodes_min > self.mst_nodes_max || self.mst_nodes_max > source.mst_nodes.len() {
            return bad("mst_nodes_min <= mst_nodes_max <= the source's MST node count");
        }
        if self.big_blocks_bytes > MAX_BIG_BLOCKS_BYTES {
            return bad("big_blocks_bytes must be at most 4,900,000");
        }
        if !(0.0..=1.0).contains(&self.multi_op_share) {
            return bad("multi_op_share must be within 0..=1");
        }
        let k = self.kinds;
        if !weights_ok(&[k.identity, k.account, k.sync]) || k.identity + k.account + k.sync >= 1.0 {
            return bad("identity + account + sync shares must be >= 0 and below 1");
        }
        let m = self.collections;
        if !weights_ok(&[m.like, m.post, m.repost, m.follow, m.other]) {
            return bad("collection weights must be >= 0");
        }
        let a = self.actions;
        if !weights_ok(&[a.create, a.update, a.delete]) {
            return bad("action weights must be >= 0");
        }
        Ok(())
    }

    /// The collections to draw ops from (indices in [`Source::collections`]): the four main
    /// ones by their weights, every other one by `other` in proportion to its record count.
    pub(super) fn collection_table(&self, source: &Source) -> Result<Table<usize>, SynthError> {
        let m = self.collections;
        let mut choices = Vec::new();
        for (nsid, w) in [
            (LIKE, m.like),
            (POST, m.post),
            (REPOST, m.repost),
            (FOLLOW, m.follow),
        ] {
            match source.collections.iter().position(|c| c.nsid == nsid) {
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
        Table::new(choices)
            .ok_or_else(|| SynthError::Config("collection weights are all zero".into()))
    }

    /// The op actions to draw from.
    pub(super) fn action_table(&self) -> Result<Table<Action>, SynthError> {
        let a = self.actions;
        Table::new([
            (a.create, Action::Create),
            (a.update, Action::Update),
            (a.delete, Action::Delete),
        ])
        .ok_or_else(|| SynthError::Config("action weights are all zero".into()))
    }
}
