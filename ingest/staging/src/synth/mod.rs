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
//! Everything is deterministic from [`SynthConfig::seed`]: every random choice, including
//! what is fixed per repo (DID, rev clock, new or not, last commit before the capture), is
//! drawn from one `rand` [`SmallRng`](rand::rngs::SmallRng) seeded with it, so the same
//! source and config always give the same bytes (with the same `rand` version: `SmallRng`'s
//! algorithm is not promised to stay the same across versions and platforms). `seq` starts at
//! [`SynthConfig::start_seq`] and increases by one per event; `time` advances by
//! `1 / events_per_second` of event time per event.
//!
//! # Layout
//! - `source`: [`Source`], the real repository CAR loaded and its MST walked.
//! - `config`: [`SynthConfig`] and its mixes, with their validation.
//! - `synthesizer`: [`Synthesizer`], one frame at a time: the event kind, and the small
//!   `#identity`, `#account` and `#sync` events.
//! - `commit`: a `#commit` in small steps: its shape, its ops and paths, its MST nodes, the
//!   padding of big frames, the encoding.
//! - `repos`: the synthetic repositories: DIDs, skewed activity, revs and their chaining.
//! - `body`: the frame body structs and the commit block.
//! - `table`: the weighted choice table.
//! - `report`: [`SynthReport`], what the frames hold.

mod body;
mod commit;
mod config;
mod report;
mod repos;
mod source;
mod synthesizer;
mod table;

use std::io::Write;

pub use config::{ActionMix, CollectionMix, KindMix, SynthConfig};
pub use report::SynthReport;
pub use source::{Source, SourceBlock, SourceCollection, SourceRecord};
pub use synthesizer::Synthesizer;

use crate::capture::{CaptureError, CaptureWriter};
use firehose::car;

/// Largest `big_blocks_bytes` accepted: keeps big frames under 5,000,000 bytes.
pub const MAX_BIG_BLOCKS_BYTES: usize = 4_900_000;
/// The protocol's limit on ops per commit.
pub const MAX_OPS_PER_COMMIT: usize = contract::limits::MAX_OPS;

/// Why synthesis failed.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The source CAR could not be read.
    #[error("reading source repository {path}")]
    SourceIo {
        /// The CAR path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The source CAR is malformed.
    #[error("source repository is not a readable CAR")]
    SourceCar(#[from] car::CarError),
    /// The source lacks what the config asks for (a message of ours: no error underlies it).
    #[error("source repository: {0}")]
    Source(String),
    /// The config is not usable.
    #[error("invalid synth config: {0}")]
    Config(String),
    /// Writing the capture failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
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
