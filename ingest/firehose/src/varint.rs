//! Unsigned LEB128 varints, as multiformats (CIDs, multihashes) and CAR files use them.
//! The one reader and writer of the workspace.

/// Longest varint accepted: 9 bytes (63 bits), the multiformats limit.
pub const MAX_LEN: usize = 9;

/// Reads a varint at `*pos`, advancing it; `None` when the bytes end first or the varint
/// is longer than [`MAX_LEN`].
pub fn read(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value: u64 = 0;
    for i in 0..MAX_LEN {
        let byte = *buf.get(*pos + i)?;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *pos += i + 1;
            return Some(value);
        }
    }
    None
}

/// Appends `v` as a varint.
pub fn write(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        for v in [0u64, 1, 127, 128, 300, 1 << 35, (1 << 63) - 1] {
            let mut out = Vec::new();
            write(&mut out, v);
            let mut pos = 0;
            assert_eq!(read(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
        }
        let mut pos = 0;
        assert_eq!(read(&[0x80, 0x80], &mut pos), None);
        assert_eq!(pos, 0, "position untouched on failure");
        assert_eq!(read(&[0xff; 10], &mut pos), None);
    }
}
