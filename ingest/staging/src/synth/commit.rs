//! `#commit` events, built in small steps: the commit's shape (how many ops, big or not), its
//! ops and their paths, its MST nodes, its CAR (padded for big frames), its encoding.

use super::body::{self, Action, CommitBody, EncodedCommit, OpOut};
use super::repos::did_str;
use super::source::{SourceCollection, SourceRecord};
use super::synthesizer::Synthesizer;
use super::MAX_OPS_PER_COMMIT;
use crate::tid;
use firehose::car;
use rand::Rng;

/// How many ops a commit carries, and whether it is a big frame.
#[derive(Debug, Clone, Copy)]
struct Shape {
    ops: u64,
    big: bool,
}

/// A path is drawn again at most this many times when the commit already touches it.
const PATH_TRIES: u32 = 8;

impl<'a> Synthesizer<'a> {
    /// Writes a `#commit` of `repo` into the frame buffer.
    pub(super) fn commit(
        &mut self,
        repo: usize,
        seq: u64,
        time_micros: i64,
        time: &str,
    ) -> &'static str {
        let shape = self.shape();
        let did = self.repos.did(repo);
        let did = did_str(&did);
        let rev = self.repos.advance(repo, time_micros, self.source);
        self.choose_ops(shape, rev.micros);
        let nodes = self
            .rng
            .random_range(self.cfg.mst_nodes_min..=self.cfg.mst_nodes_max);
        let (first, data) = self.new_data_root(repo);
        let commit = self.commit_block(did, &rev.rev, data);
        self.write_car(&commit, first, nodes);
        if shape.big {
            self.pad_big_frame();
        }
        let body = CommitBody {
            ops: &self.ops,
            rev: &rev.rev,
            seq,
            repo: did,
            time,
            blobs: &[],
            blocks: &self.car,
            commit: commit.cid,
            rebase: false,
            since: rev.since.as_deref(),
            too_big: false,
            prev_data: rev.prev_data,
        };
        body::write_frame(&mut self.frame, "#commit", &body);
        "#commit"
    }

    /// The next commit's shape: every `big_every`-th is big, every `max_ops_every`-th (and
    /// every big one) carries 200 ops, a `multi_op_share` of the others 2–10; never more
    /// ops than are left to produce.
    fn shape(&mut self) -> Shape {
        self.commits += 1;
        let every = |n: u64| n > 0 && self.commits % n == 0;
        let big = every(self.cfg.big_every);
        let wanted = if big || every(self.cfg.max_ops_every) {
            MAX_OPS_PER_COMMIT as u64
        } else if self.rng.random_bool(self.cfg.multi_op_share) {
            self.rng.random_range(2..=10)
        } else {
            1
        };
        let ops = wanted.min(self.ops_left);
        self.ops_left -= ops;
        Shape { ops, big }
    }

    /// Fills `ops` (and `included`, the record blocks the CAR must carry). Big frames only
    /// create.
    fn choose_ops(&mut self, shape: Shape, rev_micros: u64) {
        self.ops.clear();
        self.included.clear();
        for k in 0..shape.ops {
            self.choose_op(k as u16, shape.big, rev_micros);
        }
        if shape.ops == MAX_OPS_PER_COMMIT as u64 {
            self.report.max_op_commits += 1;
        }
    }

    /// Adds the commit's `k`-th op.
    fn choose_op(&mut self, k: u16, create_only: bool, rev_micros: u64) {
        let source = self.source;
        let coll = &source.collections[self.collections.pick(&mut self.rng)];
        let action = if create_only {
            Action::Create
        } else {
            self.actions.pick(&mut self.rng)
        };
        let (rec, path, action) = self.choose_path(coll, action, k, rev_micros);
        let cid = source.blocks[rec.block].cid;
        let (cid, prev) = match action {
            Action::Create => (Some(cid), None),
            Action::Update => {
                let older = self.random_record(coll);
                (Some(cid), Some(source.blocks[older.block].cid))
            }
            Action::Delete => (None, Some(cid)),
        };
        self.report.count_op(&coll.nsid, action.as_str());
        if action != Action::Delete && self.take(rec.block) {
            self.included.push(rec.block);
        }
        self.ops.push(OpOut {
            action,
            cid,
            path,
            prev,
        });
    }

    /// The record and path of an op in `coll`. A create of a TID-keyed record gets a fresh
    /// key (the rev's time, clock `k`), any other op the record's real key. A commit touches
    /// each path at most once (the repo's MST has one entry per path): draw again while the
    /// path is taken; after a few tries, create under the op's own fresh key, which no other
    /// op of the commit can hold. Returns the action, which that last resort may change.
    fn choose_path(
        &mut self,
        coll: &'a SourceCollection,
        mut action: Action,
        k: u16,
        rev_micros: u64,
    ) -> (&'a SourceRecord, String, Action) {
        let mut tries = 0;
        loop {
            let rec = self.random_record(coll);
            let fresh = action == Action::Create && tid::is_tid(&rec.rkey);
            let rkey = if fresh || tries >= PATH_TRIES {
                action = Action::Create;
                tid::encode_string(rev_micros, k)
            } else {
                rec.rkey.clone()
            };
            let path = format!("{}/{}", coll.nsid, rkey);
            if tries >= PATH_TRIES || !self.ops.iter().any(|o| o.path == path) {
                return (rec, path, action);
            }
            tries += 1;
        }
    }

    fn random_record(&mut self, coll: &'a SourceCollection) -> &'a SourceRecord {
        &coll.records[self.rng.random_range(0..coll.records.len())]
    }

    /// Marks source block `b` as carried by the current commit; false if it already was.
    fn take(&mut self, b: usize) -> bool {
        let fresh = self.stamp[b] != self.commits;
        self.stamp[b] = self.commits;
        fresh
    }

    /// Appends source block `b` to the CAR.
    fn push_block(&mut self, b: usize) {
        let block = &self.source.blocks[b];
        car::write_block(&mut self.car, &block.cid_bytes, &block.data);
        self.report.blocks += 1;
    }

    /// The commit's CAR, rooted at the commit: a run of `nodes` real MST nodes from the
    /// `first` (the new `data` root), the ops' record blocks, the commit block.
    fn write_car(&mut self, commit: &EncodedCommit, first: usize, nodes: usize) {
        self.car.clear();
        car::write_header(&mut self.car, &[&commit.cid_bytes]);
        let mst = &self.source.mst_nodes;
        for j in 0..nodes {
            let b = mst[(first + j) % mst.len()];
            if self.take(b) {
                self.push_block(b);
            }
        }
        for i in 0..self.included.len() {
            self.push_block(self.included[i]);
        }
        car::write_block(&mut self.car, &commit.cid_bytes, &commit.bytes);
        self.report.blocks += 1;
    }

    /// Pads a big frame's CAR up to `big_blocks_bytes` with further real blocks: distinct
    /// ones first, from a random start, then repeats.
    fn pad_big_frame(&mut self) {
        let target = self.cfg.big_blocks_bytes;
        let all = self.source.blocks.len();
        let start = self.rng.random_range(0..all);
        let mut i = 0usize;
        let mut stalled = 0usize;
        while self.car.len() < target && stalled < all {
            let b = (start + i) % all;
            i += 1;
            let block = &self.source.blocks[b];
            let repeat = i > all;
            let section = block.cid_bytes.len() + block.data.len() + 5;
            if (!repeat && self.stamp[b] == self.commits) || self.car.len() + section > target {
                stalled += 1;
                continue;
            }
            stalled = 0;
            self.stamp[b] = self.commits;
            self.push_block(b);
        }
        self.report.big_frames += 1;
    }
}
