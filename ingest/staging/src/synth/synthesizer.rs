//! [`Synthesizer`]: one frame at a time, into a buffer it lends out. Picks each event's repo
//! and kind; builds the small `#identity`, `#account` and `#sync` events here, `#commit`s in
//! `commit`.

use super::body::{self, AccountBody, Action, IdentityBody, OpOut, SyncBody};
use super::report::SynthReport;
use super::repos::{did_str, Repos};
use super::source::Source;
use super::table::Table;
use super::{SynthConfig, SynthError, MAX_OPS_PER_COMMIT};
use crate::time;
use firehose::car;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Produces frames one at a time (see the module docs).
pub struct Synthesizer<'a> {
    pub(super) source: &'a Source,
    pub(super) cfg: SynthConfig,
    pub(super) rng: SmallRng,
    pub(super) collections: Table<usize>,
    pub(super) actions: Table<Action>,
    pub(super) repos: Repos,
    /// Per source block: the commit number that last included it (dedupes a CAR's blocks).
    pub(super) stamp: Vec<u64>,
    event: u64,
    pub(super) commits: u64,
    pub(super) ops_left: u64,
    pub(super) frame: Vec<u8>,
    pub(super) car: Vec<u8>,
    pub(super) ops: Vec<OpOut>,
    pub(super) included: Vec<usize>,
    pub(super) report: SynthReport,
}

impl<'a> Synthesizer<'a> {
    /// Checks the config against the source and prepares the generator.
    pub fn new(source: &'a Source, cfg: SynthConfig) -> Result<Self, SynthError> {
        cfg.validate(source)?;
        let collections = cfg.collection_table(source)?;
        let actions = cfg.action_table()?;
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let repos = Repos::new(&mut rng, cfg.repos, source.mst_nodes.len());
        Ok(Self {
            source,
            rng,
            collections,
            actions,
            repos,
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
        let repo = self.repos.pick(&mut self.rng);
        let k = self.cfg.kinds;
        let u: f64 = self.rng.random();
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
        self.report
            .count_frame(kind, self.frame.len(), seq, time_micros);
        self.event += 1;
        Some(&self.frame)
    }

    fn identity(&mut self, repo: usize, seq: u64, time: &str) -> &'static str {
        let handle = (self.rng.random_bool(0.8)).then(|| format!("u{repo}.synth.test"));
        let did = self.repos.did(repo);
        let body = IdentityBody {
            did: did_str(&did),
            seq,
            time,
            handle: handle.as_deref(),
        };
        body::write_frame(&mut self.frame, "#identity", &body);
        "#identity"
    }

    fn account(&mut self, repo: usize, seq: u64, time: &str) -> &'static str {
        const STATUSES: [&str; 4] = ["deactivated", "takendown", "suspended", "deleted"];
        let active = self.rng.random_bool(0.8);
        let status = (!active).then(|| STATUSES[self.rng.random_range(0..STATUSES.len())]);
        let did = self.repos.did(repo);
        let body = AccountBody {
            did: did_str(&did),
            seq,
            time,
            active,
            status,
        };
        body::write_frame(&mut self.frame, "#account", &body);
        "#account"
    }

    fn sync(&mut self, repo: usize, seq: u64, time_micros: i64, time: &str) -> &'static str {
        let did = self.repos.did(repo);
        let did = did_str(&did);
        let rev = self.repos.advance(repo, time_micros, self.source);
        let (_, data) = self.new_data_root(repo);
        let commit = self.commit_block(did, &rev.rev, data);
        self.car.clear();
        car::write_header(&mut self.car, &[&commit.cid_bytes]);
        car::write_block(&mut self.car, &commit.cid_bytes, &commit.bytes);
        self.report.blocks += 1;
        let body = SyncBody {
            did,
            rev: &rev.rev,
            seq,
            time,
            blocks: &self.car,
        };
        body::write_frame(&mut self.frame, "#sync", &body);
        "#sync"
    }

    /// Draws the repo's new MST root among the source's MST nodes; returns its index in
    /// `Source::mst_nodes` and its CID.
    pub(super) fn new_data_root(&mut self, repo: usize) -> (usize, cid::Cid) {
        let nodes = &self.source.mst_nodes;
        let first = self.rng.random_range(0..nodes.len());
        self.repos.set_data(repo, first);
        (first, self.source.blocks[nodes[first]].cid)
    }

    /// A commit block of `did` at `rev` over `data`, with a random signature.
    pub(super) fn commit_block(
        &mut self,
        did: &str,
        rev: &str,
        data: cid::Cid,
    ) -> body::EncodedCommit {
        let mut sig = [0u8; 64];
        self.rng.fill(&mut sig);
        body::commit_block(did, rev, data, &sig)
    }
}
