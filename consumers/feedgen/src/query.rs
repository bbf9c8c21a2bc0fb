//! The read side: a feed's posts, newest first, a page at a time, through read-only
//! SQLite connections (WAL: a read never blocks the consumer's writes, and sees its last
//! commit).
//!
//! **Paging.** A feed is ordered by the key `(sort_at, id)`, descending, where `id` is the
//! stream sequence of the post's create: unique, and neither part ever changes. A page is
//! `WHERE (sort_at, id) < cursor ORDER BY sort_at DESC, id DESC LIMIT n`, and its cursor
//! is the key of its last post. Hence, for one walk of a feed from its first page:
//!
//! - no post is ever returned twice (each page's keys are below every earlier page's);
//! - no post is skipped that was in the feed when the walk began and is still in it
//!   (every key below the cursor is read by a later page);
//! - a post added during the walk is returned if its key is below the cursor the walk has
//!   reached, and missed by that walk otherwise: a new post sorts at its creation time,
//!   usually above the cursor, and a reader sees it by starting again from the top.
//!   Posts deleted, or removed by retention, during the walk are not returned.
//!
//! The cursor is opaque to clients: base64url of the two numbers, checked when it comes
//! back ([`Cursor::decode`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use kit::rusqlite::{self, params, Connection};
use std::path::PathBuf;
use std::sync::Mutex;

/// Where a page starts: below this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last post's `sort_at` (µs).
    pub sort_at: i64,
    /// The last post's id (stream sequence of its create).
    pub post: i64,
}

impl Cursor {
    /// The cursor as clients see it.
    pub fn encode(&self) -> String {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.sort_at.to_be_bytes());
        b[8..].copy_from_slice(&self.post.to_be_bytes());
        URL_SAFE_NO_PAD.encode(b)
    }

    /// A cursor this service gave out, or `None` for anything else.
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() != 22 {
            return None;
        }
        let b: [u8; 16] = URL_SAFE_NO_PAD.decode(s).ok()?.try_into().ok()?;
        let (mut t, mut p) = ([0u8; 8], [0u8; 8]);
        t.copy_from_slice(&b[..8]);
        p.copy_from_slice(&b[8..]);
        let c = Cursor {
            sort_at: i64::from_be_bytes(t),
            post: i64::from_be_bytes(p),
        };
        (c.post > 0).then_some(c)
    }
}

/// One page of a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The posts' at-uris, newest first.
    pub posts: Vec<String>,
    /// Where the next page starts; `None` when this page is the feed's end.
    pub cursor: Option<Cursor>,
}

/// The index cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The database cannot be opened.
    #[error(transparent)]
    Open(#[from] kit::state::StateError),
    /// A query failed.
    #[error("reading the index: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Read-only connections to the index, reused across requests.
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl Readers {
    /// Readers of the database at `path`, keeping up to `keep` connections open.
    pub fn new(path: PathBuf, keep: usize) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// Runs `f` on an idle connection (or a new one); blocking.
    pub fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, ReadError>,
    ) -> Result<T, ReadError> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let conn = match idle {
            Some(c) => c,
            None => kit::state::open_reader(&self.path)?,
        };
        let out = f(&conn);
        if out.is_ok() {
            if let Ok(mut v) = self.idle.lock() {
                if v.len() < self.keep {
                    v.push(conn);
                }
            }
        }
        out
    }

    /// Up to `limit` posts of feed `feed` (its `feeds.id`) below `after`, newest first.
    pub fn page(&self, feed: i64, limit: u32, after: Option<Cursor>) -> Result<Page, ReadError> {
        self.with(|conn| page(conn, feed, limit, after))
    }
}

/// [`Readers::page`] on a given connection.
pub fn page(
    conn: &Connection,
    feed: i64,
    limit: u32,
    after: Option<Cursor>,
) -> Result<Page, ReadError> {
    let after = after.unwrap_or(Cursor {
        sort_at: i64::MAX,
        post: i64::MAX,
    });
    let mut stmt = conn.prepare_cached(
        "SELECT did, rkey, sort_at, id FROM feed_posts
         WHERE feed = ?1 AND (sort_at, id) < (?2, ?3)
         ORDER BY sort_at DESC, id DESC LIMIT ?4",
    )?;
    let mut posts = Vec::with_capacity(limit as usize);
    let mut last = None;
    let mut rows = stmt.query(params![feed, after.sort_at, after.post, limit])?;
    while let Some(r) = rows.next()? {
        let (did, rkey): (String, String) = (r.get(0)?, r.get(1)?);
        posts.push(format!("at://{did}/{}/{rkey}", crate::index::POST));
        last = Some(Cursor {
            sort_at: r.get(2)?,
            post: r.get(3)?,
        });
    }
    let cursor = if posts.len() == limit as usize {
        last
    } else {
        None
    };
    Ok(Page { posts, cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let c = Cursor {
            sort_at: 1_783_175_886_240_000,
            post: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        let negative = Cursor {
            sort_at: -5,
            post: 1,
        };
        assert_eq!(Cursor::decode(&negative.encode()), Some(negative));
        for bad in [
            "",
            "abc",
            "1783175886240000::42",
            &"A".repeat(22),
            "!!!!!!!!!!!!!!!!!!!!!!",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_page_query_walks_the_primary_key() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(crate::index::SCHEMA).expect("schema");
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT did, rkey FROM feed_posts
                 WHERE feed = 1 AND (sort_at, id) < (5, 5)
                 ORDER BY sort_at DESC, id DESC LIMIT 10",
            )
            .expect("plan")
            .query_map([], |r| r.get::<_, String>(3))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        let plan = plan.join("; ");
        assert!(plan.contains("PRIMARY KEY"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");
    }
}
