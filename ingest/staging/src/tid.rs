//! Timestamp identifiers (TIDs): the 13-character base32-sortable record keys and revisions
//! of atproto repositories.
//!
//! A TID is a 64-bit integer: top bit 0, then 53 bits of microseconds since the Unix epoch,
//! then a 10-bit clock identifier, written as 13 characters of the alphabet
//! `234567abcdefghijklmnopqrstuvwxyz`, most significant first.

const ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// Largest timestamp a TID can carry (53 bits of microseconds).
pub const MAX_MICROS: u64 = (1 << 53) - 1;

/// Encodes a TID from microseconds since the epoch (masked to 53 bits) and a clock id
/// (masked to 10 bits).
pub fn encode(micros: u64, clock_id: u16) -> [u8; 13] {
    let v = ((micros & MAX_MICROS) << 10) | u64::from(clock_id & 0x3ff);
    let mut out = [0u8; 13];
    for (i, c) in out.iter_mut().enumerate() {
        let shift = 60 - 5 * i as u32;
        *c = ALPHABET[((v >> shift) & 31) as usize];
    }
    out
}

/// Encodes a TID as a `String` (see [`encode`]).
pub fn encode_string(micros: u64, clock_id: u16) -> String {
    encode(micros, clock_id)
        .iter()
        .map(|&b| char::from(b))
        .collect()
}

/// Decodes a TID into `(micros, clock_id)`; `None` if it is not 13 valid characters with the
/// top bit clear.
pub fn decode(s: &str) -> Option<(u64, u16)> {
    let b = s.as_bytes();
    if b.len() != 13 {
        return None;
    }
    let mut v = 0u64;
    for (i, &c) in b.iter().enumerate() {
        let d = ALPHABET.iter().position(|&a| a == c)? as u64;
        if i == 0 && d > 15 {
            return None;
        }
        v = (v << 5) | d;
    }
    Some((v >> 10, (v & 0x3ff) as u16))
}

/// Whether `s` is a syntactically valid TID.
pub fn is_tid(s: &str) -> bool {
    decode(s).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_rev_decodes_to_its_frame_time() {
        // Frame seq 31527015322: rev 3mptbypluud2a, time 2026-07-04T14:38:07.517Z.
        let (micros, _clock) = decode("3mptbypluud2a").unwrap_or_default();
        let frame_time = 1_783_175_887_517_000u64;
        assert!(
            micros.abs_diff(frame_time) < 1_000_000,
            "{micros} vs {frame_time}"
        );
    }

    #[test]
    fn roundtrip() {
        for (m, c) in [
            (0u64, 0u16),
            (1_783_175_887_517_123, 513),
            (MAX_MICROS, 1023),
        ] {
            let s = encode_string(m, c);
            assert_eq!(decode(&s), Some((m, c)));
            assert!(is_tid(&s));
        }
        assert!(!is_tid("self"));
        assert!(!is_tid("zzzzzzzzzzzzz"));
    }
}
