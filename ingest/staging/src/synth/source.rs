//! The real repository frames are synthesized from: its blocks (CID-checked), its MST node
//! blocks, and its records by collection with their real keys, found by walking the MST.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use cid::Cid;
use serde::Deserialize;

use super::SynthError;
use firehose::car;

/// One block of the source repository.
#[derive(Debug, Clone)]
pub struct SourceBlock {
    /// Its CID.
    pub cid: Cid,
    /// The CID's binary form.
    pub cid_bytes: Vec<u8>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// One record of the source repository.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Its real record key.
    pub rkey: String,
    /// Index of its block in [`Source::blocks`].
    pub block: usize,
}

/// A collection of the source repository with its records.
#[derive(Debug, Clone)]
pub struct SourceCollection {
    /// The NSID.
    pub nsid: String,
    /// Its records.
    pub records: Vec<SourceRecord>,
}

/// A real repository, read once, from which frames are synthesized.
#[derive(Debug, Clone)]
pub struct Source {
    /// Every block whose CID matches its bytes.
    pub blocks: Vec<SourceBlock>,
    /// Indices of the MST node blocks.
    pub mst_nodes: Vec<usize>,
    /// Collections, sorted by NSID.
    pub collections: Vec<SourceCollection>,
}

/// An MST node as the repository spec lays it out; only the entries are walked.
#[derive(Deserialize)]
struct MstNode {
    #[serde(rename = "l")]
    _left: Option<Cid>,
    e: Vec<MstEntry>,
}

/// An MST entry: its key is the previous key's first `p` bytes followed by `k`.
#[derive(Deserialize)]
struct MstEntry {
    p: usize,
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    v: Cid,
    #[serde(rename = "t")]
    _tree: Option<Cid>,
}

impl Source {
    /// Reads a repository CAR file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SynthError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| SynthError::SourceIo {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_car(&bytes)
    }

    /// Reads a repository from CAR bytes: its MST gives each record's path; blocks whose
    /// CID does not match their bytes are left out.
    pub fn from_car(bytes: &[u8]) -> Result<Self, SynthError> {
        let (blocks, by_cid) = verified_blocks(bytes)?;
        let mut mst_nodes = Vec::new();
        let mut collections: BTreeMap<String, Vec<SourceRecord>> = BTreeMap::new();
        for (i, block) in blocks.iter().enumerate() {
            let Ok(node) = serde_ipld_dagcbor::from_slice::<MstNode>(&block.data) else {
                continue;
            };
            mst_nodes.push(i);
            walk_entries(&node, &block.cid, &by_cid, &mut collections)?;
        }
        if mst_nodes.is_empty() {
            return Err(SynthError::Source("no MST node".into()));
        }
        let collections = collections
            .into_iter()
            .map(|(nsid, mut records)| {
                records.sort_by(|a, b| a.rkey.cmp(&b.rkey));
                SourceCollection { nsid, records }
            })
            .collect();
        Ok(Source {
            blocks,
            mst_nodes,
            collections,
        })
    }

    /// Number of records over all collections.
    pub fn record_count(&self) -> usize {
        self.collections.iter().map(|c| c.records.len()).sum()
    }
}

/// The CAR's blocks whose CID matches their bytes, each once, with an index by CID.
fn verified_blocks(bytes: &[u8]) -> Result<(Vec<SourceBlock>, HashMap<Cid, usize>), SynthError> {
    let car_blocks = car::read(bytes)?.blocks;
    let mut blocks = Vec::with_capacity(car_blocks.len());
    let mut by_cid = HashMap::with_capacity(car_blocks.len());
    for b in &car_blocks {
        let Ok(cid) = Cid::try_from(b.cid) else {
            continue;
        };
        if firehose::cid::verify(b.cid, b.data).is_err() || by_cid.contains_key(&cid) {
            continue;
        }
        by_cid.insert(cid, blocks.len());
        blocks.push(SourceBlock {
            cid,
            cid_bytes: b.cid.to_vec(),
            data: b.data.to_vec(),
        });
    }
    Ok((blocks, by_cid))
}

/// Adds the records an MST node's entries point at, by collection (`collection/rkey` keys);
/// entries whose record is not in the export, or whose key is not such a path, are skipped.
fn walk_entries(
    node: &MstNode,
    node_cid: &Cid,
    by_cid: &HashMap<Cid, usize>,
    collections: &mut BTreeMap<String, Vec<SourceRecord>>,
) -> Result<(), SynthError> {
    let mut key: Vec<u8> = Vec::new();
    for entry in &node.e {
        if entry.p > key.len() {
            return Err(SynthError::Source(format!(
                "MST node {node_cid} has a prefix longer than the previous key"
            )));
        }
        key.truncate(entry.p);
        key.extend_from_slice(&entry.k);
        let Some(&record) = by_cid.get(&entry.v) else {
            continue; // record not in this export
        };
        let Some((collection, rkey)) = std::str::from_utf8(&key)
            .ok()
            .and_then(|path| path.split_once('/'))
        else {
            continue;
        };
        collections
            .entry(collection.to_owned())
            .or_default()
            .push(SourceRecord {
                rkey: rkey.to_owned(),
                block: record,
            });
    }
    Ok(())
}
