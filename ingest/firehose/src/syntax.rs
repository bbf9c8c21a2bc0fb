//! Validated atproto identifiers, parsed where they enter the pipeline.
//!
//! Syntax follows the atproto specs (NSID, record key, DID). Nothing downstream splits
//! these strings by hand: a collection that passes [`Nsid::parse`] is safe to use as the
//! tail of a NATS subject (its characters are `[A-Za-z0-9.-]`, its tokens are non-empty).

/// A namespaced identifier such as `app.bsky.feed.post` (at least three segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nsid<'a>(&'a str);

impl<'a> Nsid<'a> {
    /// Validates `s` as an NSID; `None` when it is not one.
    pub fn parse(s: &'a str) -> Option<Self> {
        if s.is_empty() || s.len() > 317 {
            return None;
        }
        let segments: usize = s.split('.').count();
        if segments < 3 {
            return None;
        }
        let (authority, name) = s.rsplit_once('.')?;
        for (i, seg) in authority.split('.').enumerate() {
            let b = seg.as_bytes();
            if b.is_empty() || b.len() > 63 {
                return None;
            }
            if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
                return None;
            }
            if b[0] == b'-' || b[b.len() - 1] == b'-' {
                return None;
            }
            if i == 0 && b[0].is_ascii_digit() {
                return None;
            }
        }
        let n = name.as_bytes();
        if n.is_empty() || n.len() > 63 || !n[0].is_ascii_alphabetic() {
            return None;
        }
        if !n.iter().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        Some(Nsid(s))
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// A record key: 1–512 characters of `[A-Za-z0-9._:~-]`, not `.` or `..`.
pub fn is_record_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'~' | b'-'))
}

/// A DID: `did:<method>:<identifier>`, ASCII, at most 2 KiB.
pub fn is_did(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("did:") else {
        return false;
    };
    let Some((method, id)) = rest.split_once(':') else {
        return false;
    };
    s.len() <= 2048
        && !method.is_empty()
        && method.bytes().all(|c| c.is_ascii_lowercase())
        && !id.is_empty()
        && !id.ends_with(':')
        && !id.ends_with('%')
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'%' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn lines(name: &str) -> Vec<String> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/atproto-interop-tests/syntax")
            .join(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.to_string())
            .collect()
    }

    #[test]
    fn nsid_interop_vectors() {
        let valid = lines("nsid_syntax_valid.txt");
        let invalid = lines("nsid_syntax_invalid.txt");
        assert!(valid.len() > 10 && invalid.len() > 10);
        for v in &valid {
            assert!(Nsid::parse(v).is_some(), "valid NSID rejected: {v}");
        }
        for v in &invalid {
            assert!(Nsid::parse(v).is_none(), "invalid NSID accepted: {v}");
        }
    }

    #[test]
    fn record_key_interop_vectors() {
        for v in lines("recordkey_syntax_valid.txt") {
            assert!(is_record_key(&v), "valid rkey rejected: {v}");
        }
        for v in lines("recordkey_syntax_invalid.txt") {
            assert!(!is_record_key(&v), "invalid rkey accepted: {v}");
        }
    }

    #[test]
    fn did_interop_vectors() {
        for v in lines("did_syntax_valid.txt") {
            assert!(is_did(&v), "valid DID rejected: {v}");
        }
        for v in lines("did_syntax_invalid.txt") {
            assert!(!is_did(&v), "invalid DID accepted: {v}");
        }
    }
}
