//! # Staging relay: record, replay and synthesize `subscribeRepos` captures
//!
//! Where it sits in the flow:
//!
//! ```text
//!   wss://bsky.network ──record──▶ capture file ──replay──▶ ws://127.0.0.1:…/xrpc/com.atproto.sync.subscribeRepos
//!   real repo CAR ──synth──▶ capture file ───────┘                │
//!                                                                  ▼
//!                                  ingest (decode → publish) → NATS JetStream → consumers
//! ```
//!
//! Every test and benchmark of the project runs against this crate instead of the real relay:
//! it plays captured (or synthesized) frames back byte for byte, with the cursor semantics of
//! the real relay and with injectable faults.
//!
//! # Layout
//! - [`capture`]: the capture file format (`[u32 LE length][frame]…`, optionally zstd), an
//!   in-memory [`capture::Capture`] with each frame's `seq`/`time`, and a streaming
//!   [`capture::CaptureWriter`].
//! - [`frame`]: the little frame-level CBOR work the relay needs: reading a frame's header and
//!   `seq`/`time`, building `#info` and error frames, renumbering `seq`.
//! - [`replay`]: the WebSocket relay ([`replay::serve`]).
//! - [`record`]: records a relay's binary messages, unchanged, into a capture.
//! - [`synth`]: builds large, realistic captures from a real repository CAR, deterministic
//!   from a seed (`rand`'s `SmallRng`).
//! - [`tid`], [`time`]: the small codecs `synth` and `info` need (CARs, CIDs, base32 and
//!   CBOR heads are `firehose`'s).
//! - [`fixtures`]: the real captures and repositories under `ingest/fixtures/`, and
//!   production Jetstream's output for them; [`frames`]: lexicon frame builders for the
//!   kinds and sizes real captures lack. Tests of every crate read both from here.
//!
//! The binary `staging` (`src/main.rs`) only parses flags and calls these:
//!
//! ```text
//! staging info CAPTURE                                   # frames, seq/time range, sizes, kinds
//! staging replay CAPTURE [--listen 127.0.0.1:2470] [--speed max|FACTOR] [--live-tail] [--loop]
//!                [--drop-after N,N…] [--too-slow-on I --too-slow-after N] [--future-cursor-on I]
//! staging record -o OUT[.zst] [--url wss://bsky.network] [--cursor N] [--frames N] [--seconds S]
//! staging synth  -o OUT[.zst] [--ops N] [--seed S] [--start-seq N] [--rate EV/S] [--repo CAR]
//!                [--mix LIKE,POST,REPOST,FOLLOW,OTHER] [--actions CREATE,UPDATE,DELETE]
//!                [--kinds IDENTITY,ACCOUNT,SYNC] [--mst-nodes MIN,MAX] …
//! ```
//!
//! Flags are clap's, comma-separated lists included; a bad flag is a usage error (exit
//! code 2).
//!
//! In tests, embed the relay instead: `replay::spawn(Arc::new(Capture::load(path)?),
//! ReplayOptions::default())` binds `127.0.0.1:0` and returns a handle with `url()` and
//! `shutdown()`.

#![warn(missing_docs)]

pub mod capture;
pub mod fixtures;
pub mod frame;
pub mod frames;
pub mod record;
pub mod replay;
pub mod synth;
pub mod tid;
pub mod time;

/// The XRPC path of the firehose endpoint, served by [`replay`] and requested by [`record`].
pub const SUBSCRIBE_REPOS_PATH: &str = "/xrpc/com.atproto.sync.subscribeRepos";

/// Largest frame accepted when reading a capture or receiving a WebSocket message: the
/// protocol's limit ([`contract::limits::MAX_FRAME_BYTES`], 5 MB) plus about 1 MiB of
/// slack, so a capture can hold an oversized frame to test the ingestor with. Checked
/// before any allocation.
pub const MAX_RECEIVED_FRAME_BYTES: usize = 6 * 1024 * 1024;
const _: () = assert!(MAX_RECEIVED_FRAME_BYTES > contract::limits::MAX_FRAME_BYTES);
