//! The synthetic repositories: their DIDs, which one an event belongs to (skewed: a few repos
//! are much busier than most), and their revs, each commit's `since`/`prevData` chaining the
//! repo's previous one.

use cid::Cid;

use super::rng::{mix, Rng};
use super::source::Source;
use crate::tid;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A repo's state between its events.
#[derive(Debug, Clone, Copy, Default)]
struct RepoState {
    /// Last rev's microseconds (0: no commit yet).
    rev_micros: u64,
    rev_clock: u16,
    /// Index in `Source::mst_nodes` of the last commit's `data`.
    data: u32,
}

/// A repo's next rev, with what its commit chains to.
pub(super) struct Rev {
    /// The rev's timestamp, microseconds since the epoch.
    pub(super) micros: u64,
    /// The rev as a TID.
    pub(super) rev: String,
    /// The repo's previous rev (`None` for a repo new in the capture).
    pub(super) since: Option<String>,
    /// The repo's previous MST root (`None` for a repo new in the capture).
    pub(super) prev_data: Option<Cid>,
}

/// Every synthetic repository.
pub(super) struct Repos {
    seed: u64,
    dids: Vec<[u8; 32]>,
    state: Vec<RepoState>,
}

/// A synthesized DID as text (built from ASCII only).
pub(super) fn did_str(did: &[u8; 32]) -> &str {
    std::str::from_utf8(did).unwrap_or("did:plc:invalid")
}

impl Repos {
    /// `count` repos, none of which has had an event yet.
    pub(super) fn new(seed: u64, count: u32) -> Self {
        let dids = (0..u64::from(count))
            .map(|i| {
                let (h1, h2) = (mix(seed ^ mix(i)), mix(!seed ^ mix(i ^ 0x5555)));
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
        Repos {
            seed,
            dids,
            state: vec![RepoState::default(); count as usize],
        }
    }

    /// The repo of the next event: u² puts most events on a minority of repos.
    pub(super) fn pick(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        let n = self.dids.len();
        ((u * u * n as f64) as usize).min(n - 1)
    }

    /// The repo's DID (ASCII; see [`did_str`]).
    pub(super) fn did(&self, repo: usize) -> [u8; 32] {
        self.dids[repo]
    }

    /// Whether this repo is brand new in the capture (first commit has `since: null` and no
    /// `prevData`), for about 1 % of repos.
    fn is_new(&self, repo: usize) -> bool {
        mix(self.seed ^ (repo as u64).wrapping_mul(0x2545_f491_4f6c_dd1d)) % 100 == 0
    }

    fn clock(&self, repo: usize) -> u16 {
        (mix(repo as u64 ^ self.seed) & 0x3ff) as u16
    }

    /// The repo's next rev at `time_micros` (always after its previous one).
    pub(super) fn advance(&mut self, repo: usize, time_micros: i64, source: &Source) -> Rev {
        let clock = self.clock(repo);
        let state = self.state[repo];
        let (since, prev_data) = if state.rev_micros == 0 {
            if self.is_new(repo) {
                (None, None)
            } else {
                // The repo existed before the capture: up to 30 days older.
                let age = mix(repo as u64 ^ 0xa11ce) % (30 * 86_400_000_000);
                let before = (time_micros.max(0) as u64).saturating_sub(age + 1);
                let node =
                    source.mst_nodes[(mix(repo as u64) % source.mst_nodes.len() as u64) as usize];
                (
                    Some(tid::encode_string(before, clock)),
                    Some(source.blocks[node].cid),
                )
            }
        } else {
            let node = source.mst_nodes[state.data as usize];
            (
                Some(tid::encode_string(state.rev_micros, state.rev_clock)),
                Some(source.blocks[node].cid),
            )
        };
        let micros = (time_micros.max(0) as u64).max(state.rev_micros + 1);
        self.state[repo].rev_micros = micros;
        self.state[repo].rev_clock = clock;
        Rev {
            micros,
            rev: tid::encode_string(micros, clock),
            since,
            prev_data,
        }
    }

    /// Records the repo's new MST root, an index in `Source::mst_nodes`.
    pub(super) fn set_data(&mut self, repo: usize, node: usize) {
        self.state[repo].data = node as u32;
    }
}
