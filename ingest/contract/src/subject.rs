//! Subjects (`subjects.md`, "Subjects"): where each event is published and the filters a
//! consumer reads with.
//!
//! A commit op on collection `C` goes to `bsky.C` ([`collection`]); the other events to
//! two-token subjects ([`IDENTITY`], [`ACCOUNT`], [`SYNC`]), which never collide with a
//! collection (an NSID has at least three segments). Wildcards follow the NSID's dots.

use crate::id::Nsid;

/// The first token of every subject.
pub const PREFIX: &str = "bsky";

/// Every message of the stream: the stream's subjects and the widest filter.
pub const ALL: &str = "bsky.>";

/// Every commit op (a collection has three segments or more).
pub const ALL_COMMITS: &str = "bsky.*.*.>";

/// `#identity` events.
pub const IDENTITY: &str = "bsky.identity";

/// `#account` events.
pub const ACCOUNT: &str = "bsky.account";

/// `#sync` events.
pub const SYNC: &str = "bsky.sync";

/// Posts: the commit ops of `app.bsky.feed.post`.
pub const POSTS: &str = "bsky.app.bsky.feed.post";

/// Where the ingestor ends a fast-ingest batch (`subjects.md`, "Publishing"): the
/// end-of-batch message is never stored, but core NATS delivers it to every subscriber of
/// its subject, so it goes to a subject of the stream outside `bsky.>`, where no reader of
/// the firehose sees it: `ingest.batch-end.<stream>`.
pub fn batch_end(stream: &str) -> String {
    format!("ingest.batch-end.{stream}")
}

/// The placeholders `archive restore` publishes for the sequences of an archived gap and
/// deletes at once, so a restored stream has the archive's holes. Never a relay event;
/// `archive.gap` has two segments, so it is never a collection.
pub const ARCHIVE_GAP: &str = "bsky.archive.gap";

/// The subject of a commit op on `collection`: `bsky.<collection>`.
pub fn collection(collection: Nsid<'_>) -> String {
    let mut s = String::with_capacity(PREFIX.len() + 1 + collection.len());
    s.push_str(PREFIX);
    s.push('.');
    s.push_str(&collection);
    s
}

/// The collection a subject names, when it is a commit op's subject.
pub fn collection_of(subject: &str) -> Option<Nsid<'_>> {
    let tail = subject.strip_prefix(PREFIX)?.strip_prefix('.')?;
    Nsid::parse(tail).ok()
}

/// Why a text is not a subject filter of the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{filter:?} is not a subject filter under {PREFIX}. (see subjects.md)")]
pub struct FilterError {
    /// The text given.
    pub filter: String,
}

/// A subject filter that lies inside the stream's subjects: `bsky` first, no empty token,
/// no blank, `>` only as the last token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter(String);

impl Filter {
    /// Checks `filter`.
    pub fn parse(filter: &str) -> Result<Filter, FilterError> {
        let tokens: Vec<&str> = filter.split('.').collect();
        let bad_token = tokens.iter().enumerate().any(|(i, t)| {
            t.is_empty()
                || t.contains(|c: char| c.is_whitespace())
                || (*t == ">" && i + 1 != tokens.len())
        });
        if bad_token || tokens.first() != Some(&PREFIX) || tokens.len() < 2 {
            return Err(FilterError {
                filter: filter.to_string(),
            });
        }
        Ok(Filter(filter.to_string()))
    }

    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `subject` matches the NATS subject filter `filter` (`*` one token, `>` one or
/// more at the end), as the server decides for a consumer's filter or a permission.
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn builders_and_constants_agree() {
        let post = Nsid::parse("app.bsky.feed.post").unwrap();
        assert_eq!(collection(post), POSTS);
        assert_eq!(collection_of(POSTS), Some(post));
        assert_eq!(
            collection_of(IDENTITY),
            None,
            "two tokens are never a collection"
        );
        assert_eq!(ALL, format!("{PREFIX}.>"));
        assert_eq!(collection_of(ARCHIVE_GAP), None);
        for s in [IDENTITY, ACCOUNT, SYNC] {
            assert_eq!(s.split('.').count(), 2);
            assert!(Filter::parse(s).is_ok());
        }
    }

    #[test]
    fn matching_follows_nats() {
        assert!(matches(ALL, POSTS));
        assert!(matches(ALL, IDENTITY));
        assert!(!matches(ALL, "bsky"), "> needs one token at least");
        assert!(matches(ALL_COMMITS, POSTS));
        assert!(!matches(ALL_COMMITS, IDENTITY));
        assert!(matches("bsky.app.bsky.*.post", POSTS));
        assert!(!matches("bsky.app.bsky.*", POSTS));
        assert!(matches(POSTS, POSTS));
        assert!(!matches(POSTS, "bsky.app.bsky.feed.like"));
        assert!(!matches(POSTS, "bsky.app.bsky.feed.post.x"));
    }

    #[test]
    fn filters_lie_inside_the_stream() {
        for ok in [
            ALL,
            ALL_COMMITS,
            POSTS,
            "bsky.app.bsky.feed.>",
            "bsky.app.bsky.*.*",
        ] {
            assert_eq!(Filter::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "bsky.>.post",
            "other.>",
            "bsky",
            "bsky..post",
            "bsky.a b",
            ">",
            "",
        ] {
            assert!(Filter::parse(bad).is_err(), "{bad:?}");
        }
    }
}
