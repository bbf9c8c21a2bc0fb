//! Validated atproto identifiers, parsed where they enter the pipeline.
//!
//! Syntax follows the atproto specs (DID, NSID, record key); the interop vectors of
//! `ingest/fixtures/atproto-interop-tests/syntax` are the tests. Each type borrows the text
//! it was parsed from, so checking costs no allocation. Nothing downstream splits these
//! strings by hand: a collection that passes [`Nsid::parse`] is safe as the tail of a NATS
//! subject (its characters are `[A-Za-z0-9.-]`, its tokens are non-empty).

use std::fmt;

/// Which identifier a text failed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxError {
    /// Not `did:<method>:<identifier>` (ASCII, at most 2 KiB).
    #[error("not a DID (did:<method>:<identifier>)")]
    Did,
    /// Not a namespaced identifier of at least three segments.
    #[error("not an NSID (at least three dot-separated segments, e.g. app.bsky.feed.post)")]
    Nsid,
    /// Not 1–512 characters of `[A-Za-z0-9._:~-]`, or `.`/`..`.
    #[error("not a record key (1-512 of A-Z a-z 0-9 . _ : ~ -, not . or ..)")]
    Rkey,
}

macro_rules! borrowed_id {
    ($name:ident) => {
        impl<'a> $name<'a> {
            /// The text, as it was parsed.
            pub fn as_str(&self) -> &'a str {
                self.0
            }
        }

        impl std::ops::Deref for $name<'_> {
            type Target = str;
            fn deref(&self) -> &str {
                self.0
            }
        }

        impl AsRef<str> for $name<'_> {
            fn as_ref(&self) -> &str {
                self.0
            }
        }

        impl fmt::Display for $name<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }

        impl<'a> TryFrom<&'a str> for $name<'a> {
            type Error = SyntaxError;
            fn try_from(s: &'a str) -> Result<Self, SyntaxError> {
                Self::parse(s)
            }
        }
    };
}

/// A DID: `did:<method>:<identifier>`, ASCII, at most 2 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Did<'a>(&'a str);
borrowed_id!(Did);

impl<'a> Did<'a> {
    /// Validates `s` as a DID.
    pub fn parse(s: &'a str) -> Result<Self, SyntaxError> {
        let valid = s
            .strip_prefix("did:")
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(method, id)| {
                s.len() <= 2048
                    && !method.is_empty()
                    && method.bytes().all(|c| c.is_ascii_lowercase())
                    && !id.is_empty()
                    && !id.ends_with(':')
                    && !id.ends_with('%')
                    && id.bytes().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'%' | b'-')
                    })
            });
        if valid {
            Ok(Did(s))
        } else {
            Err(SyntaxError::Did)
        }
    }
}

/// A namespaced identifier such as `app.bsky.feed.post` (at least three segments): the
/// collection of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nsid<'a>(&'a str);
borrowed_id!(Nsid);

impl<'a> Nsid<'a> {
    /// Validates `s` as an NSID.
    pub fn parse(s: &'a str) -> Result<Self, SyntaxError> {
        if nsid_syntax(s) {
            Ok(Nsid(s))
        } else {
            Err(SyntaxError::Nsid)
        }
    }
}

fn nsid_syntax(s: &str) -> bool {
    if s.is_empty() || s.len() > 317 || s.split('.').count() < 3 {
        return false;
    }
    let Some((authority, name)) = s.rsplit_once('.') else {
        return false;
    };
    let authority_ok = authority.split('.').enumerate().all(|(i, seg)| {
        let b = seg.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
            && !(i == 0 && b[0].is_ascii_digit())
    });
    let n = name.as_bytes();
    authority_ok
        && !n.is_empty()
        && n.len() <= 63
        && n[0].is_ascii_alphabetic()
        && n.iter().all(|c| c.is_ascii_alphanumeric())
}

/// A record key: 1–512 characters of `[A-Za-z0-9._:~-]`, not `.` or `..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rkey<'a>(&'a str);
borrowed_id!(Rkey);

impl<'a> Rkey<'a> {
    /// Validates `s` as a record key.
    pub fn parse(s: &'a str) -> Result<Self, SyntaxError> {
        let valid = !s.is_empty()
            && s.len() <= 512
            && s != "."
            && s != ".."
            && s.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'~' | b'-')
            });
        if valid {
            Ok(Rkey(s))
        } else {
            Err(SyntaxError::Rkey)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::path::PathBuf;

    /// The interop vectors in `name` (test data, read by the test only).
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

    fn check(kind: &str, parse: impl Fn(&str) -> bool) {
        let valid = lines(&format!("{kind}_syntax_valid.txt"));
        let invalid = lines(&format!("{kind}_syntax_invalid.txt"));
        assert!(valid.len() > 10 && invalid.len() > 10, "{kind}");
        for v in &valid {
            assert!(parse(v), "valid {kind} rejected: {v}");
        }
        for v in &invalid {
            assert!(!parse(v), "invalid {kind} accepted: {v}");
        }
    }

    #[test]
    fn nsid_interop_vectors() {
        check("nsid", |s| Nsid::parse(s).is_ok());
    }

    #[test]
    fn record_key_interop_vectors() {
        check("recordkey", |s| Rkey::parse(s).is_ok());
    }

    #[test]
    fn did_interop_vectors() {
        check("did", |s| Did::parse(s).is_ok());
    }

    #[test]
    fn errors_name_the_identifier() {
        assert_eq!(Nsid::parse("identity"), Err(SyntaxError::Nsid));
        assert_eq!(Did::parse("plc:abc"), Err(SyntaxError::Did));
        assert_eq!(Rkey::parse(".."), Err(SyntaxError::Rkey));
        let nsid = Nsid::parse("app.bsky.feed.post").unwrap();
        assert_eq!(nsid.as_str(), "app.bsky.feed.post");
        assert_eq!(nsid.to_string(), "app.bsky.feed.post");
    }
}
