//! DAG-CBOR at the level of item heads: measuring and skipping items without decoding
//! them, and writing minimal heads. The one CBOR walker of the workspace: the decoder uses
//! it to find where a frame's header ends, the staging relay to patch a frame's `seq`.
//!
//! Every length read from the input is checked against what remains before it is used,
//! and nesting is bounded ([`MAX_DEPTH`]): a lying length is an error, never an allocation.
//!
//! [`DecodeError`] is serde_ipld_dagcbor's error, kept as the source of the decoder's own.

/// serde_ipld_dagcbor's error, shared so that the skip errors holding it stay cheap to
/// clone. Two compare equal when they say the same (the library's error has no `PartialEq`).
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct DecodeError(std::sync::Arc<serde_ipld_dagcbor::DecodeError<std::convert::Infallible>>);

impl DecodeError {
    /// Whether the input ended inside a value.
    pub fn is_eof(&self) -> bool {
        matches!(*self.0, serde_ipld_dagcbor::DecodeError::Eof { .. })
    }
}

impl From<serde_ipld_dagcbor::DecodeError<std::convert::Infallible>> for DecodeError {
    fn from(e: serde_ipld_dagcbor::DecodeError<std::convert::Infallible>) -> Self {
        DecodeError(std::sync::Arc::new(e))
    }
}

impl PartialEq for DecodeError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for DecodeError {}

/// Deepest nesting [`item_end`] walks through.
pub const MAX_DEPTH: usize = 64;

/// Why an item could not be walked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// The input ends inside the item that starts or continues at this offset.
    #[error("CBOR truncated at byte {0}")]
    Truncated(usize),
    /// A construct DAG-CBOR forbids (indefinite lengths, reserved additional info).
    #[error("unsupported CBOR at byte {offset}: initial byte {byte:#04x}")]
    Unsupported {
        /// Byte offset.
        offset: usize,
        /// The initial byte.
        byte: u8,
    },
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("CBOR nesting deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// A decoded head: major type, argument, and the offset just after the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// 0 uint, 1 negative int, 2 bytes, 3 text, 4 array, 5 map, 6 tag, 7 simple/float.
    pub major: u8,
    /// Length, count, value or tag number.
    pub arg: u64,
    /// Offset after the head.
    pub next: usize,
}

/// Reads the head at `pos`.
pub fn head(buf: &[u8], pos: usize) -> Result<Head, CborError> {
    let byte = *buf.get(pos).ok_or(CborError::Truncated(pos))?;
    let (major, info) = (byte >> 5, byte & 0x1f);
    let n = match info {
        0..=23 => {
            return Ok(Head {
                major,
                arg: u64::from(info),
                next: pos + 1,
            })
        }
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => return Err(CborError::Unsupported { offset: pos, byte }),
    };
    let bytes = buf
        .get(pos + 1..pos + 1 + n)
        .ok_or(CborError::Truncated(pos))?;
    let arg = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    Ok(Head {
        major,
        arg,
        next: pos + 1 + n,
    })
}

/// `start + len`, if it stays within `buf`.
pub fn checked_end(buf: &[u8], start: usize, len: u64) -> Result<usize, CborError> {
    let len = usize::try_from(len).map_err(|_| CborError::Truncated(start))?;
    match start.checked_add(len) {
        Some(end) if end <= buf.len() => Ok(end),
        _ => Err(CborError::Truncated(start)),
    }
}

/// The offset just after the item that starts at `pos`.
pub fn item_end(buf: &[u8], pos: usize) -> Result<usize, CborError> {
    walk(buf, pos, 0)
}

fn walk(buf: &[u8], pos: usize, depth: usize) -> Result<usize, CborError> {
    if depth > MAX_DEPTH {
        return Err(CborError::TooDeep);
    }
    let Head {
        major,
        arg,
        mut next,
    } = head(buf, pos)?;
    match major {
        0 | 1 | 7 => Ok(next),
        2 | 3 => checked_end(buf, next, arg),
        4 | 5 => {
            let items = if major == 5 {
                arg.saturating_mul(2)
            } else {
                arg
            };
            // Each item takes at least one byte, so a count above what remains is a lie.
            if items > (buf.len() - next) as u64 {
                return Err(CborError::Truncated(next));
            }
            for _ in 0..items {
                next = walk(buf, next, depth + 1)?;
            }
            Ok(next)
        }
        _ => walk(buf, next, depth + 1), // 6: a tag, then one item
    }
}

/// Appends a head of `major` type with argument `v`, minimally encoded (as DAG-CBOR
/// requires).
pub fn write_head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    if v < 24 {
        out.push(m | v as u8);
    } else if v <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, v as u8]);
    } else if v <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_frame_header() {
        // {"t":"#commit","op":1} then junk
        let mut buf = vec![0xa2, 0x61, b't', 0x67];
        buf.extend_from_slice(b"#commit");
        buf.extend_from_slice(&[0x62, b'o', b'p', 0x01, 0xff]);
        assert_eq!(item_end(&buf, 0), Ok(buf.len() - 1));
        assert_eq!(item_end(&buf[..5], 0), Err(CborError::Truncated(4)));
    }

    #[test]
    fn rejects_truncation_lies_and_indefinite_lengths() {
        assert!(item_end(&[0x5a, 0xff, 0xff, 0xff, 0xff], 0).is_err());
        assert!(item_end(&[0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0).is_err());
        assert!(matches!(
            item_end(&[0x9f], 0),
            Err(CborError::Unsupported { .. })
        ));
        let deep = vec![0x81; MAX_DEPTH + 2];
        assert_eq!(item_end(&deep, 0), Err(CborError::TooDeep));
    }

    #[test]
    fn heads_are_minimal() {
        for (v, len) in [
            (0u64, 1),
            (23, 1),
            (24, 2),
            (255, 2),
            (256, 3),
            (1 << 16, 5),
            (1 << 32, 9),
        ] {
            let mut out = Vec::new();
            write_head(&mut out, 0, v);
            assert_eq!(out.len(), len, "{v}");
            assert_eq!(head(&out, 0).map(|h| (h.arg, h.next)), Ok((v, len)));
        }
    }
}
