//! # contract: `subjects.md` in code
//!
//! Where it sits: `relay → decode → publish → **JetStream (the contract)** → consumers`.
//! The producer writes what this crate names and every consumer reads it through the same
//! crate, so the two ends cannot drift apart. `subjects.md` at the root of the repository
//! is the text; `ingest/tests/contract.rs` checks this crate against it.
//!
//! - [`subject`]: the subject of each event, the filters a consumer subscribes with, and
//!   [`subject::Filter`], a filter checked to lie inside the stream's subjects;
//! - [`header`]: the names of the headers every message carries (`Bsky-Seq` …);
//! - [`limits`]: the protocol's maxima (one [`limits::MAX_FRAME_BYTES`]);
//! - [`lineage`]: how a stream rebuilt by `archive restore` names the streams it continues;
//! - [`id`]: [`Did`], [`Nsid`] and [`Rkey`], identifiers validated once where they enter;
//! - [`event`]: the payloads as typed values, borrowed from the message ([`Event::parse`]).
//!
//! Pure: no runtime, no sockets, no clock, no files. Cargo keeps it so (its only
//! dependencies are serde, serde_json and thiserror).

pub mod event;
pub mod header;
pub mod id;
pub mod limits;
pub mod lineage;
pub mod subject;

pub use event::{Event, EventError};
pub use id::{Did, Nsid, Rkey, SyntaxError};
