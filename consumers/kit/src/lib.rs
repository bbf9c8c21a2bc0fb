//! # kit: what every consumer of the stream shares
//!
//! Where it sits: `relay → ingest → JetStream stream BSKY → **kit** → charts, feedgen,
//! gateway, your service`.
//!
//! - [`event`]: the payloads of `subjects.md` as typed, borrowed Rust values, parsed once.
//! - [`seek`]: the stream sequence where a given *event time* starts (a binary search with
//!   direct gets), because JetStream's own timestamps are storage times, hours apart from
//!   event times after a catch-up.

pub mod event;
pub mod seek;
