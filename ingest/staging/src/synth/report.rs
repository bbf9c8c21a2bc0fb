//! [`SynthReport`]: what the synthesized frames hold, counted as they are made, and its
//! human-readable form (what `staging synth` prints).

use std::collections::BTreeMap;
use std::fmt;

use crate::time;

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

/// Adds one to `key`'s count, allocating the key only the first time it is seen.
fn bump(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

impl SynthReport {
    /// Counts one frame of `kind` and `len` bytes, at `seq` and `time_micros`.
    pub(super) fn count_frame(&mut self, kind: &str, len: usize, seq: u64, time_micros: i64) {
        self.frames += 1;
        self.bytes += len as u64;
        self.max_frame_bytes = self.max_frame_bytes.max(len as u64);
        self.seq_range = Some((self.seq_range.map_or(seq, |(a, _)| a), seq));
        self.time_range = Some((self.time_range.map_or(time_micros, |(a, _)| a), time_micros));
        bump(&mut self.events, kind);
    }

    /// Counts one op on `collection` with `action`.
    pub(super) fn count_op(&mut self, collection: &str, action: &str) {
        self.ops += 1;
        bump(&mut self.ops_by_collection, collection);
        bump(&mut self.ops_by_action, action);
    }
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
