//! The synthetic repositories: their DIDs, which one an event belongs to (skewed: a few repos
//! are much busier than most), and their revs, each commit's `since`/`prevData` chaining the
//! repo's previous one. What is fixed per repo is drawn once, when the repos are made.

use cid::Cid;
use rand::rngs::SmallRng;
use rand::Rng;

use super::source::Source;
use crate::tid;

/// How long before the capture an existing repo may have last committed: 30 days.
const MAX_PRIOR_AGE_MICROS: u64 = 30 * 86_400_000_000;

/// One synthetic repository.
#[derive(Debug, Clone)]
struct Repo {
    /// `did:plc:` + 24 base32 characters (ASCII).
    did: [u8; 32],
    /// The clock id of its revs (a TID's low 10 bits).
    clock: u16,
    /// Microseconds of its last rev in the capture (0: no event yet).
    rev_micros: u64,
    /// How long before its first event in the capture it last committed; `None` for a
    /// repo new in the capture (its first commit has neither `since` nor `prevData`).
    prior_age_micros: Option<u64>,
    /// Index in `Source::mst_nodes` of its current MST root.
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
    repos: Vec<Repo>,
}

/// `did:plc:` + 24 base32 characters: 15 random bytes (120 bits, 5 per character).
fn random_did(rng: &mut SmallRng, text: &mut Vec<u8>) -> [u8; 32] {
    let bytes: [u8; 15] = rng.random();
    text.clear();
    text.extend_from_slice(b"did:plc:");
    firehose::cid::write_base32(text, &bytes);
    let mut did = *b"did:plc:invalid-synthetic-did---";
    if text.len() == did.len() {
        did.copy_from_slice(text);
    }
    did
}

/// A synthesized DID as text (built from ASCII only).
pub(super) fn did_str(did: &[u8; 32]) -> &str {
    std::str::from_utf8(did).unwrap_or("did:plc:invalid")
}

impl Repos {
    /// `count` repos, none of which has had an event yet: about 1 % are new in the capture,
    /// the others last committed up to 30 days before it, on one of the source's
    /// `mst_nodes` MST nodes.
    pub(super) fn new(rng: &mut SmallRng, count: u32, mst_nodes: usize) -> Self {
        let mut text = Vec::with_capacity(32);
        let repos = (0..count)
            .map(|_| {
                let did = random_did(rng, &mut text);
                let new = rng.random_ratio(1, 100);
                Repo {
                    did,
                    clock: rng.random_range(0..1024),
                    rev_micros: 0,
                    prior_age_micros: (!new).then(|| rng.random_range(0..MAX_PRIOR_AGE_MICROS)),
                    data: rng.random_range(0..mst_nodes) as u32,
                }
            })
            .collect();
        Repos { repos }
    }

    /// The repo of the next event: u² puts most events on a minority of repos.
    pub(super) fn pick(&self, rng: &mut SmallRng) -> usize {
        let u: f64 = rng.random();
        let n = self.repos.len();
        ((u * u * n as f64) as usize).min(n - 1)
    }

    /// The repo's DID (ASCII; see [`did_str`]).
    pub(super) fn did(&self, repo: usize) -> [u8; 32] {
        self.repos[repo].did
    }

    /// The repo's next rev at `time_micros` (always after its previous one).
    pub(super) fn advance(&mut self, repo: usize, time_micros: i64, source: &Source) -> Rev {
        let r = &mut self.repos[repo];
        let now = time_micros.max(0) as u64;
        let since_micros = match r.rev_micros {
            0 => r.prior_age_micros.map(|age| now.saturating_sub(age + 1)),
            last => Some(last),
        };
        let prev_data = since_micros.map(|_| source.blocks[source.mst_nodes[r.data as usize]].cid);
        r.rev_micros = now.max(r.rev_micros + 1);
        Rev {
            micros: r.rev_micros,
            rev: tid::encode_string(r.rev_micros, r.clock),
            since: since_micros.map(|m| tid::encode_string(m, r.clock)),
            prev_data,
        }
    }

    /// Records the repo's new MST root, an index in `Source::mst_nodes`.
    pub(super) fn set_data(&mut self, repo: usize, node: usize) {
        self.repos[repo].data = node as u32;
    }
}
