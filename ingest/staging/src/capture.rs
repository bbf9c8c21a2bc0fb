//! Capture files: `[u32 little-endian length][frame bytes]…`, optionally zstd-compressed
//! (detected by the zstd magic `28 b5 2f fd`).
//!
//! [`Capture`] holds a whole capture in memory: one buffer, each frame a [`Bytes`] slice of
//! it (so the replay relay sends frames without copying), with the frame's kind, `seq` and
//! `time`. [`CaptureWriter`] writes captures as a stream.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::frame::{self, FrameKind, FrameMeta};
use crate::MAX_RECEIVED_FRAME_BYTES;

/// The four bytes that open a zstd frame.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// zstd window (log2 bytes) used when writing: 27 = 128 MiB, the largest window decoders
/// accept without an explicit option.
pub const ZSTD_WINDOW_LOG: u32 = 27;

/// Why a capture could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The capture file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An I/O error on a writer or reader that is not a named file.
    #[error("capture I/O: {0}")]
    Stream(#[from] io::Error),
    /// The zstd stream is corrupt or truncated.
    #[error("zstd decompression failed: {0}")]
    Zstd(io::Error),
    /// The data ends inside a length prefix or a frame.
    #[error("frame {index} at byte {offset}: needs {needed} bytes, only {remaining} remain (truncated capture)")]
    Truncated {
        /// 0-based frame index.
        index: usize,
        /// Byte offset of the length prefix in the (decompressed) capture.
        offset: usize,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// A length prefix larger than [`MAX_RECEIVED_FRAME_BYTES`].
    #[error("frame {index} at byte {offset}: length {len} exceeds the {max}-byte limit")]
    TooLarge {
        /// 0-based frame index.
        index: usize,
        /// Byte offset of the length prefix.
        offset: usize,
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// One frame of a capture.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The exact WebSocket binary message.
    pub bytes: Bytes,
    /// Header kind, body `seq` and `time`.
    pub meta: FrameMeta,
}

/// A whole capture in memory.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    frames: Vec<Frame>,
    seq_strictly_increasing: bool,
}

impl Capture {
    /// Reads a capture file (plain or zstd). A zstd file is decompressed as it is read, so
    /// only the decompressed capture is held in memory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let io_err = |source| CaptureError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut magic = [0u8; 4];
        let zstd = len >= 4 && {
            file.read_exact(&mut magic).map_err(io_err)?;
            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
            magic == ZSTD_MAGIC
        };
        let data = if zstd {
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_mul(3));
            zstd::stream::read::Decoder::new(file)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(CaptureError::Zstd)?;
            out
        } else {
            let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.read_to_end(&mut out).map_err(io_err)?;
            out
        };
        Self::parse(data)
    }

    /// Parses a capture from its file contents (plain or zstd).
    pub fn from_bytes(data: Vec<u8>) -> Result<Self, CaptureError> {
        let data = if data.starts_with(&ZSTD_MAGIC) {
            let mut out = Vec::with_capacity(data.len().saturating_mul(3));
            zstd::stream::read::Decoder::new(&data[..])
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(CaptureError::Zstd)?;
            out
        } else {
            data
        };
        Self::parse(data)
    }

    /// Splits an uncompressed capture into frames.
    fn parse(data: Vec<u8>) -> Result<Self, CaptureError> {
        let buf = Bytes::from(data);
        let mut frames = Vec::new();
        let mut pos = 0usize;
        while pos < buf.len() {
            let index = frames.len();
            let remaining = buf.len() - pos;
            let Some(prefix) = buf.get(pos..pos + 4) else {
                return Err(CaptureError::Truncated {
                    index,
                    offset: pos,
                    needed: 4,
                    remaining,
                });
            };
            let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
            if len > MAX_RECEIVED_FRAME_BYTES {
                return Err(CaptureError::TooLarge {
                    index,
                    offset: pos,
                    len,
                    max: MAX_RECEIVED_FRAME_BYTES,
                });
            }
            if len > remaining - 4 {
                return Err(CaptureError::Truncated {
                    index,
                    offset: pos,
                    needed: len + 4,
                    remaining,
                });
            }
            let bytes = buf.slice(pos + 4..pos + 4 + len);
            pos += 4 + len;
            frames.push(Self::frame(bytes));
        }
        Ok(Self::new(frames))
    }

    /// Builds a capture from frames already in memory (each checked and parsed like a file's).
    pub fn from_frames(frames: impl IntoIterator<Item = Bytes>) -> Result<Self, CaptureError> {
        let frames = frames
            .into_iter()
            .enumerate()
            .map(|(index, bytes)| {
                if bytes.len() > MAX_RECEIVED_FRAME_BYTES {
                    return Err(CaptureError::TooLarge {
                        index,
                        offset: 0,
                        len: bytes.len(),
                        max: MAX_RECEIVED_FRAME_BYTES,
                    });
                }
                Ok(Self::frame(bytes))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(frames))
    }

    /// A frame whose header and body cannot be read is kept as [`FrameKind::Unreadable`]
    /// (no seq: it travels with the frame after it), never dropped: a capture is what the
    /// relay sent, garbage included.
    fn frame(bytes: Bytes) -> Frame {
        let meta = frame::parse_meta(&bytes).unwrap_or(FrameMeta {
            kind: FrameKind::Unreadable,
            seq: None,
            time_micros: None,
        });
        Frame { bytes, meta }
    }

    fn new(frames: Vec<Frame>) -> Self {
        let mut last = None;
        let mut increasing = true;
        for seq in frames.iter().filter_map(|f| f.meta.seq) {
            if last.is_some_and(|l| seq <= l) {
                increasing = false;
                break;
            }
            last = Some(seq);
        }
        Self {
            frames,
            seq_strictly_increasing: increasing,
        }
    }

    /// All frames, in capture order.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the capture has no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Smallest `seq` of the capture's frames (frames without `seq` are ignored).
    pub fn first_seq(&self) -> Option<u64> {
        self.frames.iter().filter_map(|f| f.meta.seq).min()
    }

    /// Largest `seq` of the capture's frames.
    pub fn last_seq(&self) -> Option<u64> {
        self.frames.iter().filter_map(|f| f.meta.seq).max()
    }

    /// Whether the frames that have a `seq` are in strictly increasing `seq` order (true for
    /// every real relay capture; needed for looping).
    pub fn seq_strictly_increasing(&self) -> bool {
        self.seq_strictly_increasing
    }

    /// Index of the first frame to send to a client whose cursor is `cursor`: the first frame
    /// with `seq > cursor`, or `len()` if there is none. Frames without `seq` travel with the
    /// frame after them.
    pub fn start_after(&self, cursor: u64) -> usize {
        let Some(mut idx) = self
            .frames
            .iter()
            .position(|f| f.meta.seq.is_some_and(|s| s > cursor))
        else {
            return self.frames.len();
        };
        while idx > 0 && self.frames[idx - 1].meta.seq.is_none() {
            idx -= 1;
        }
        idx
    }

    /// Earliest and latest body `time`, in microseconds since the Unix epoch.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        let mut times = self.frames.iter().filter_map(|f| f.meta.time_micros);
        let first = times.next()?;
        Some(times.fold((first, first), |(lo, hi), t| (lo.min(t), hi.max(t))))
    }

    /// Sum of frame sizes (without the 4-byte length prefixes).
    pub fn total_bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.bytes.len() as u64).sum()
    }

    /// Number of frames of each kind, keyed by header `t` (`"error"` for error frames).
    pub fn kinds(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for f in &self.frames {
            *out.entry(f.meta.kind.as_str().to_owned()).or_insert(0) += 1;
        }
        out
    }

    /// Number of commit frames.
    pub fn commits(&self) -> usize {
        self.frames
            .iter()
            .filter(|f| f.meta.kind == FrameKind::Commit)
            .count()
    }
}

enum Sink<W: Write> {
    Plain(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

/// Writes a capture as a stream of `[u32 LE length][frame]`, optionally through zstd.
pub struct CaptureWriter<W: Write> {
    sink: Sink<W>,
    frames: u64,
    bytes: u64,
}

impl CaptureWriter<BufWriter<File>> {
    /// Creates (truncates) `path`; `zstd_level` `Some(level)` compresses.
    pub fn create(path: impl AsRef<Path>, zstd_level: Option<i32>) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let io_err = |source| CaptureError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::create(path).map_err(io_err)?;
        Self::new(BufWriter::with_capacity(1 << 20, file), zstd_level).map_err(|e| match e {
            CaptureError::Stream(source) => io_err(source),
            other => other,
        })
    }
}

impl<W: Write> CaptureWriter<W> {
    /// Wraps a writer; `zstd_level` `Some(level)` compresses (levels 1..=22; 3 is zstd's
    /// default, 1 the fastest).
    ///
    /// Compression uses zstd's long-distance matching over a 128 MiB window
    /// ([`ZSTD_WINDOW_LOG`]): captures repeat blocks far apart (synthesized ones reuse a
    /// repository's blocks), which a default window misses. Any zstd decoder reads the result
    /// (128 MiB is the default window limit of decoders, `zstd -d` included).
    pub fn new(inner: W, zstd_level: Option<i32>) -> Result<Self, CaptureError> {
        let sink = match zstd_level {
            None => Sink::Plain(inner),
            Some(level) => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                enc.long_distance_matching(true)?;
                enc.window_log(ZSTD_WINDOW_LOG)?;
                Sink::Zstd(enc)
            }
        };
        Ok(Self {
            sink,
            frames: 0,
            bytes: 0,
        })
    }

    /// Appends one frame. Frames larger than [`MAX_RECEIVED_FRAME_BYTES`] are refused.
    pub fn write_frame(&mut self, frame: &[u8]) -> Result<(), CaptureError> {
        if frame.len() > MAX_RECEIVED_FRAME_BYTES {
            return Err(CaptureError::TooLarge {
                index: self.frames as usize,
                offset: self.bytes as usize,
                len: frame.len(),
                max: MAX_RECEIVED_FRAME_BYTES,
            });
        }
        let prefix = (frame.len() as u32).to_le_bytes();
        let w: &mut dyn Write = match &mut self.sink {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w,
        };
        w.write_all(&prefix)?;
        w.write_all(frame)?;
        self.frames += 1;
        self.bytes += 4 + frame.len() as u64;
        Ok(())
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Uncompressed bytes written so far (prefixes included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes buffered data to the underlying writer (a zstd stream stays open).
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        match &mut self.sink {
            Sink::Plain(w) => w.flush()?,
            Sink::Zstd(w) => w.flush()?,
        }
        Ok(())
    }

    /// Ends the zstd stream if any, flushes, and returns the inner writer.
    pub fn finish(self) -> Result<W, CaptureError> {
        let mut w = match self.sink {
            Sink::Plain(w) => w,
            Sink::Zstd(enc) => enc.finish()?,
        };
        w.flush()?;
        Ok(w)
    }
}
