//! The real data the project's tests, benchmarks and demo run on, kept in the repository
//! under `ingest/fixtures/` (provenance and licenses in `ingest/fixtures/PROVENANCE.md`).
//!
//! Nothing outside the checkout is read unless `$BSKY_FIXTURES` names another directory.
//! - [`corpus`]: 150 real production frames (`jetstream-corpus/frames.bin.zst`), and
//!   [`expected`]: production Jetstream's output for them (`expected_v1.jsonl`);
//! - [`calabro`]: the largest real repository, the default source of [`crate::synth`].

use crate::capture::{Capture, CaptureError};
use std::collections::HashMap;
use std::path::PathBuf;

/// Relay seq of the corpus's first frame.
pub const CORPUS_FIRST_SEQ: i64 = 31_527_015_322;

/// The fixture directory: `$BSKY_FIXTURES` if set, else `ingest/fixtures` of this checkout.
pub fn dir() -> PathBuf {
    match std::env::var_os("BSKY_FIXTURES").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures")),
    }
}

/// Path of the real production capture.
pub fn corpus_path() -> PathBuf {
    dir().join("jetstream-corpus/frames.bin.zst")
}

/// Path of `expected_v1.jsonl`.
pub fn expected_path() -> PathBuf {
    dir().join("jetstream-corpus/expected_v1.jsonl")
}

/// Path of the largest real repository export (4,347 records in 55 collections).
pub fn calabro() -> PathBuf {
    dir().join("shrike-fixtures/calabro.car")
}

/// The 150 real production frames.
pub fn corpus() -> Result<Capture, CaptureError> {
    Capture::load(corpus_path())
}

/// Why [`expected`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ExpectedError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// `expected_v1.jsonl`
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not JSON.
    #[error("{path} line {line}: {source}")]
    Json {
        /// `expected_v1.jsonl`
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        source: serde_json::Error,
    },
}

/// `expected_v1.jsonl`: the 152 events production Jetstream served for [`corpus`], in order.
pub fn expected() -> Result<Vec<serde_json::Value>, ExpectedError> {
    let path = expected_path();
    let text = std::fs::read_to_string(&path).map_err(|source| ExpectedError::Io {
        path: path.clone(),
        source,
    })?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| ExpectedError::Json {
                path: path.clone(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// [`expected`], keyed by [`event_key`].
pub fn expected_by_key() -> Result<HashMap<String, serde_json::Value>, ExpectedError> {
    Ok(expected()?
        .into_iter()
        .map(|v| (event_key(&v), v))
        .collect())
}

/// Identifies an event independently of time: commits by (did, rev, collection, rkey),
/// identity and account events by (kind, did).
pub fn event_key(v: &serde_json::Value) -> String {
    match v["kind"].as_str() {
        Some("commit") => format!(
            "{}|{}|{}|{}",
            v["did"], v["commit"]["rev"], v["commit"]["collection"], v["commit"]["rkey"]
        ),
        kind => format!("{kind:?}|{}", v["did"]),
    }
}
