//! Reading the archive: its manifest, a segment (checksum verified), and [`Replay`], the
//! messages in stream order from a sequence or an event time.
//!
//! ```no_run
//! # async fn f(store: archive::store::Store) -> Result<(), archive::reader::ArchiveError> {
//! use archive::reader::{Archive, From};
//! let archive = Archive::new(store);
//! let mut replay = archive.replay(From::Seq(1)).await?;
//! while let Some(record) = replay.next().await? {
//!     println!("{} {}", record.seq, record.subject);
//! }
//! # Ok(()) }
//! ```

use crate::format::{self, Entry, LineError, Record, SegmentEntry};
use crate::store::Store;
use futures_util::TryStreamExt;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use std::io::BufRead;

/// The archive could not be read. `Store` may pass (retry); the others mean the archive
/// is damaged or not an archive: stop and tell the operator.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The object store failed or refused.
    #[error("object store: {what} {key}")]
    Store {
        /// The operation.
        what: &'static str,
        /// The object or prefix.
        key: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A manifest entry is not readable.
    #[error("manifest entry {key} is unreadable")]
    Manifest {
        /// Its key.
        key: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Two manifest entries cover the same sequence.
    #[error("manifest entries overlap: {a} and {b}")]
    Overlap {
        /// The first entry's key.
        a: String,
        /// The second entry's key.
        b: String,
    },
    /// A segment's bytes do not have the checksum the manifest gives.
    #[error("segment {key}: sha256 {got}, the manifest says {want}")]
    Checksum {
        /// The segment.
        key: String,
        /// The manifest's checksum.
        want: String,
        /// The object's.
        got: String,
    },
    /// A segment does not decompress.
    #[error("segment {key} does not decompress")]
    Decompress {
        /// The segment.
        key: String,
        /// zstd's error.
        #[source]
        source: std::io::Error,
    },
    /// A segment's line is not a record, or its sequences disagree with the manifest.
    #[error("segment {key}, line {line}")]
    Line {
        /// The segment.
        key: String,
        /// 1-based.
        line: u64,
        /// What is wrong.
        #[source]
        source: LineError,
    },
    /// A segment holds other sequences than its manifest entry says.
    #[error("segment {key}: holds sequence {got} where {want} was expected")]
    Sequence {
        /// The segment.
        key: String,
        /// The expected sequence.
        want: u64,
        /// The one found.
        got: u64,
    },
}

/// The archive in a store.
#[derive(Clone, Debug)]
pub struct Archive {
    store: Store,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// At this stream sequence (or the first archived one after it).
    Seq(u64),
    /// At the first message, in stream order, whose event time (`time_us`) is at or after
    /// this (µs since the epoch); event times are only nearly in stream order (see
    /// `kit::seek`).
    Time(i64),
    /// At the first message JetStream stored at or after this (µs since the epoch);
    /// storage times grow with the sequence.
    Stored(i64),
}

impl Archive {
    /// The archive in `store`.
    pub fn new(store: Store) -> Archive {
        Archive { store }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Keys under `prefix` (`segments` or `manifest`), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let mut keys: Vec<String> = self
            .store
            .objects
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|source| ArchiveError::Store {
                what: "listing",
                key: prefix.into(),
                source,
            })?;
        keys.sort();
        Ok(keys)
    }

    /// An object's bytes.
    pub async fn get(&self, key: &str) -> Result<bytes::Bytes, ArchiveError> {
        let err = |source| ArchiveError::Store {
            what: "reading",
            key: key.into(),
            source,
        };
        let r = self
            .store
            .objects
            .get(&Path::from(key))
            .await
            .map_err(err)?;
        r.bytes().await.map_err(err)
    }

    /// Every manifest entry, in stream order; checked not to overlap.
    pub async fn manifest(&self) -> Result<Vec<Entry>, ArchiveError> {
        let mut entries = Vec::new();
        for key in self.list(format::MANIFEST).await? {
            let bytes = self.get(&key).await?;
            let e: Entry =
                serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Manifest {
                    key: key.clone(),
                    source,
                })?;
            entries.push((key, e));
        }
        entries.sort_by_key(|(_, e)| e.first_seq());
        for w in entries.windows(2) {
            if w[1].1.first_seq() <= w[0].1.last_seq() {
                return Err(ArchiveError::Overlap {
                    a: w[0].0.clone(),
                    b: w[1].0.clone(),
                });
            }
        }
        Ok(entries.into_iter().map(|(_, e)| e).collect())
    }

    /// The last stream sequence the archive accounts for (a segment or a gap record); 0
    /// when it is empty.
    pub async fn end(&self) -> Result<u64, ArchiveError> {
        Ok(self.manifest().await?.last().map_or(0, Entry::last_seq))
    }

    /// A segment's bytes, checked against the manifest's checksum.
    pub async fn segment_bytes(&self, s: &SegmentEntry) -> Result<bytes::Bytes, ArchiveError> {
        let bytes = self.get(&s.key).await?;
        let got = hex(&Sha256::digest(&bytes));
        if got != s.sha256 {
            return Err(ArchiveError::Checksum {
                key: s.key.clone(),
                want: s.sha256.clone(),
                got,
            });
        }
        Ok(bytes)
    }

    /// Every record of a segment, checked: checksum, and exactly the sequences
    /// `first_seq..=last_seq` in order.
    pub async fn segment(&self, s: &SegmentEntry) -> Result<Vec<Record>, ArchiveError> {
        let bytes = self.segment_bytes(s).await?;
        let mut reader = SegmentReader::new(s, bytes)?;
        let mut out = Vec::with_capacity(usize::try_from(s.messages).unwrap_or(0));
        while let Some(r) = reader.next_record()? {
            out.push(r);
        }
        Ok(out)
    }

    /// The messages from `from` on, in stream order.
    pub async fn replay(&self, from: From) -> Result<Replay, ArchiveError> {
        let segments = self
            .manifest()
            .await?
            .into_iter()
            .filter_map(|e| match e {
                Entry::Segment(s) => Some(s),
                Entry::Gap(_) => None,
            })
            .filter(|s| match from {
                From::Seq(n) => s.last_seq >= n,
                From::Time(_) => true,
                From::Stored(t) => s.last_stored_ns / 1000 >= t,
            })
            .collect();
        Ok(Replay {
            archive: self.clone(),
            segments,
            current: None,
            from,
            started: false,
        })
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads a segment's records one at a time (bounded memory: one compressed segment and
/// zstd's window).
pub struct SegmentReader {
    key: String,
    lines: std::io::BufReader<
        zstd::Decoder<'static, std::io::BufReader<std::io::Cursor<bytes::Bytes>>>,
    >,
    next_seq: u64,
    last_seq: u64,
    line: u64,
    buf: Vec<u8>,
}

impl SegmentReader {
    /// Over the (checked) bytes of segment `s`.
    pub fn new(s: &SegmentEntry, bytes: bytes::Bytes) -> Result<SegmentReader, ArchiveError> {
        let decoder = zstd::Decoder::new(std::io::Cursor::new(bytes)).map_err(|source| {
            ArchiveError::Decompress {
                key: s.key.clone(),
                source,
            }
        })?;
        Ok(SegmentReader {
            key: s.key.clone(),
            lines: std::io::BufReader::new(decoder),
            next_seq: s.first_seq,
            last_seq: s.last_seq,
            line: 0,
            buf: Vec::new(),
        })
    }

    /// The next record; `None` after the last one (checked to be `last_seq`).
    pub fn next_record(&mut self) -> Result<Option<Record>, ArchiveError> {
        self.buf.clear();
        let n = self
            .lines
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| ArchiveError::Decompress {
                key: self.key.clone(),
                source,
            })?;
        if n == 0 {
            if self.next_seq != self.last_seq + 1 {
                return Err(ArchiveError::Sequence {
                    key: self.key.clone(),
                    want: self.next_seq,
                    got: 0,
                });
            }
            return Ok(None);
        }
        self.line += 1;
        let line = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        let r = format::read_line(line).map_err(|source| ArchiveError::Line {
            key: self.key.clone(),
            line: self.line,
            source,
        })?;
        if r.seq != self.next_seq || r.seq > self.last_seq {
            return Err(ArchiveError::Sequence {
                key: self.key.clone(),
                want: self.next_seq,
                got: r.seq,
            });
        }
        self.next_seq += 1;
        Ok(Some(r))
    }
}

/// The archive's messages in stream order from a start; see [`Archive::replay`].
pub struct Replay {
    archive: Archive,
    segments: std::collections::VecDeque<SegmentEntry>,
    current: Option<SegmentReader>,
    from: From,
    /// Whether the start was reached (records are no longer filtered).
    started: bool,
}

impl Replay {
    /// The next message; `None` at the archive's end.
    pub async fn next(&mut self) -> Result<Option<Record>, ArchiveError> {
        loop {
            if let Some(reader) = &mut self.current {
                match reader.next_record()? {
                    Some(r) => {
                        if !self.started {
                            self.started = match self.from {
                                From::Seq(n) => r.seq >= n,
                                From::Time(t) => {
                                    kit::event::time_us(&r.payload).is_ok_and(|rt| rt >= t)
                                }
                                From::Stored(t) => r.stored_ns / 1000 >= t,
                            };
                        }
                        if self.started {
                            return Ok(Some(r));
                        }
                        continue;
                    }
                    None => self.current = None,
                }
            }
            let Some(s) = self.segments.pop_front() else {
                return Ok(None);
            };
            if let (From::Time(t), false) = (self.from, self.started) {
                if s.max_time_us.is_some_and(|m| m < t) {
                    continue;
                }
            }
            let bytes = self.archive.segment_bytes(&s).await?;
            self.current = Some(SegmentReader::new(&s, bytes)?);
        }
    }
}
