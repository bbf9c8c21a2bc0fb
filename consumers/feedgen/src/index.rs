//! The index: what one post op does to the feeds' tables, as the [`kit::Handler`] of
//! feedgen. kit calls it in stream order inside one SQLite transaction per batch, which
//! also stores the stream position: the index and the position never disagree, so a
//! crash (even `kill -9`) loses nothing and adds nothing twice.
//!
//! ```text
//! posts       (rkey, did) PRIMARY KEY → id = stream sequence of the create, sort_at, time_us,
//!             feeds bit set: one row per indexed post, found by a delete's (did, rkey)
//! feed_posts  (feed, sort_at, id) PRIMARY KEY → did, rkey: one row per post per feed, read
//!             newest first without a join
//! feeds       (id 0..63, name): the configured feeds, ids stable across restarts
//! ```
//!
//! - **Create**: the post's feeds ([`Matcher`]); one `posts` row and one `feed_posts` row
//!   per feed. Its `sort_at` is `min(createdAt, event time)` ([`crate::post::sort_at`]);
//!   its id, the stream sequence of the create, is unique and never changes: the two make
//!   the paging key ([`crate::query`]).
//! - **Delete**: by at-uri, from every feed at once (the `feeds` bit set says which).
//!
//! Both keys grow with time in live traffic (record keys are TIDs, `sort_at` is about now),
//! so inserts and retention's deletes land at the edges of the B-trees and a commit writes
//! few pages.
//! - **Update**: ignored (the app does not edit posts; the post stays as created).
//! - **Retention**, applied after every op, so the index is the same whatever the
//!   batches were (a restart after `kill -9` cuts them differently): `max_posts` removes
//!   a feed's oldest post as soon as it holds one too many; `max_days` removes the posts
//!   whose `sort_at` is older than the newest event time read so far minus the days,
//!   rounded down to the minute (a post that old is not even added). Event time, never the
//!   clock: a replay keeps what a live run keeps.
//!
//! A feed added to the configuration starts empty and fills from the position on (a
//! `--from-time` rebuild fills it from the past); a feed removed is dropped at start.

use crate::config::Feed;
use crate::matcher::Matcher;
use crate::metrics::{Evict, FeedLabel, Metrics, Op, ReasonLabel};
use crate::post::{self, Post};
use kit::event::{Commit, Operation};
use kit::rusqlite::{self, params, OptionalExtension, Transaction};
use kit::{HandleError, Handler, Msg, Rebuild};

/// The tables (times in µs since the epoch).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS feeds (
    id INTEGER PRIMARY KEY CHECK (id BETWEEN 0 AND 63),   -- bit of the feed in posts.feeds
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS posts (
    rkey TEXT NOT NULL, did TEXT NOT NULL,   -- at://did/app.bsky.feed.post/rkey
    id INTEGER NOT NULL,          -- stream sequence of the create: unique, immutable
    sort_at INTEGER NOT NULL,     -- min(createdAt, event time)
    time_us INTEGER NOT NULL,     -- event time of the create
    feeds INTEGER NOT NULL,       -- bit set of feeds.id
    PRIMARY KEY (rkey, did)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feed_posts (
    feed INTEGER NOT NULL, sort_at INTEGER NOT NULL, id INTEGER NOT NULL,
    did TEXT NOT NULL, rkey TEXT NOT NULL,
    PRIMARY KEY (feed, sort_at, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feedgen_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    max_time_us INTEGER NOT NULL  -- newest event time read (for max_days)
);";

/// The post collection, the only one indexed.
pub const POST: &str = "app.bsky.feed.post";
const MINUTE_US: i64 = 60_000_000;
/// WAL pages between automatic checkpoints (SQLite's default is 1,000).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 10_000;
const DAY_US: i64 = 86_400_000_000;

/// One configured feed and its state.
#[derive(Debug, Clone)]
struct FeedState {
    name: String,
    /// `feeds.id`, its bit in `posts.feeds`.
    id: i64,
    max_days: Option<u32>,
    max_posts: Option<u64>,
    /// Posts in the feed (this batch included).
    count: u64,
    /// Posts with `sort_at` below this were removed (`max_days`).
    cutoff: i64,
}

/// What the batch changed, undone on rollback.
#[derive(Debug, Clone, Default)]
struct Pending {
    ops: [u64; Op::ALL.len()],
    evicted: [u64; Evict::ALL.len()],
}

/// The feedgen handler.
pub struct Index {
    matcher: Matcher,
    feeds: Vec<FeedState>,
    max_time: Option<i64>,
    /// `feeds` and `max_time` as last committed.
    committed: (Vec<FeedState>, Option<i64>),
    pending: Pending,
    metrics: Metrics,
}

impl Index {
    /// The handler for `feeds` (the configuration, already checked).
    pub fn new(feeds: &[Feed], metrics: Metrics) -> Result<Index, crate::matcher::MatcherError> {
        let states: Vec<FeedState> = feeds
            .iter()
            .map(|f| FeedState {
                name: f.name.clone(),
                id: -1,
                max_days: f.max_days,
                max_posts: f.max_posts,
                count: 0,
                cutoff: i64::MIN,
            })
            .collect();
        Ok(Index {
            matcher: Matcher::new(feeds)?,
            committed: (states.clone(), None),
            feeds: states,
            max_time: None,
            pending: Pending::default(),
            metrics,
        })
    }

    /// Each configured feed's name and id (`feeds.id`), once [`Handler::init`] ran.
    pub fn feed_ids(&self) -> Vec<(String, i64)> {
        self.feeds.iter().map(|f| (f.name.clone(), f.id)).collect()
    }

    fn count(&mut self, op: Op) {
        self.pending.ops[op as usize] += 1;
    }

    /// The newest event time is now at least `t`: applies `max_days`.
    fn advance(&mut self, tx: &Transaction<'_>, t: i64) -> rusqlite::Result<()> {
        let now = self.max_time.map_or(t, |m| m.max(t));
        self.max_time = Some(now);
        for i in 0..self.feeds.len() {
            let Some(days) = self.feeds[i].max_days else {
                continue;
            };
            let cutoff = (now - i64::from(days) * DAY_US).div_euclid(MINUTE_US) * MINUTE_US;
            if cutoff <= self.feeds[i].cutoff {
                continue;
            }
            self.feeds[i].cutoff = cutoff;
            let gone: Vec<(String, String)> = tx
                .prepare_cached(
                    "DELETE FROM feed_posts WHERE feed = ?1 AND sort_at < ?2 RETURNING did, rkey",
                )?
                .query_map(params![self.feeds[i].id, cutoff], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            for (did, rkey) in &gone {
                unlink(tx, did, rkey, self.feeds[i].id)?;
            }
            self.feeds[i].count = self.feeds[i].count.saturating_sub(gone.len() as u64);
            self.pending.evicted[Evict::MaxDays as usize] += gone.len() as u64;
        }
        Ok(())
    }

    fn create(
        &mut self,
        tx: &Transaction<'_>,
        msg: &Msg<'_>,
        commit: &Commit<'_>,
    ) -> Result<(), HandleError> {
        let Some(record) = commit.record_as::<Post>() else {
            self.count(Op::NoRecord);
            return Ok(());
        };
        let post = record.map_err(|_| HandleError::Poison("bad_post"))?;
        let matched = self.matcher.matches(&msg.event.did, &post);
        let sort_at = post::sort_at(&post.created_at, msg.event.time_us);
        let feeds: Vec<usize> = (0..self.feeds.len())
            .filter(|&i| matched & (1 << i) != 0 && sort_at >= self.feeds[i].cutoff)
            .collect();
        if feeds.is_empty() {
            self.count(Op::Unmatched);
            return Ok(());
        }
        let bits = feeds.iter().fold(0i64, |b, &i| b | 1 << self.feeds[i].id);
        let id = i64::try_from(msg.seq).unwrap_or(i64::MAX);
        let (did, rkey) = (&*msg.event.did, &*commit.rkey);
        let added = tx
            .prepare_cached(
                "INSERT INTO posts (rkey, did, id, sort_at, time_us, feeds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )?
            .execute(params![rkey, did, id, sort_at, msg.event.time_us, bits])?;
        if added == 0 {
            self.count(Op::Duplicate);
            return Ok(());
        }
        let mut add = tx.prepare_cached(
            "INSERT INTO feed_posts (feed, sort_at, id, did, rkey) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for &i in &feeds {
            add.execute(params![self.feeds[i].id, sort_at, id, did, rkey])?;
            self.feeds[i].count += 1;
            while self.feeds[i]
                .max_posts
                .is_some_and(|m| self.feeds[i].count > m)
            {
                self.evict_oldest(tx, i)?;
            }
        }
        self.count(Op::Indexed);
        Ok(())
    }

    /// Removes feed `i`'s oldest post (`max_posts`).
    fn evict_oldest(&mut self, tx: &Transaction<'_>, i: usize) -> rusqlite::Result<()> {
        let feed = self.feeds[i].id;
        let oldest: Option<(i64, i64, String, String)> = tx
            .prepare_cached(
                "SELECT sort_at, id, did, rkey FROM feed_posts WHERE feed = ?1
                 ORDER BY sort_at, id LIMIT 1",
            )?
            .query_row([feed], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        let Some((sort_at, id, did, rkey)) = oldest else {
            self.feeds[i].count = 0;
            return Ok(());
        };
        tx.prepare_cached("DELETE FROM feed_posts WHERE feed = ?1 AND sort_at = ?2 AND id = ?3")?
            .execute(params![feed, sort_at, id])?;
        unlink(tx, &did, &rkey, feed)?;
        self.feeds[i].count -= 1;
        self.pending.evicted[Evict::MaxPosts as usize] += 1;
        Ok(())
    }

    fn delete(&mut self, tx: &Transaction<'_>, did: &str, rkey: &str) -> rusqlite::Result<()> {
        let row: Option<(i64, i64, i64)> = tx
            .prepare_cached(
                "DELETE FROM posts WHERE rkey = ?1 AND did = ?2 RETURNING id, sort_at, feeds",
            )?
            .query_row([rkey, did], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((post, sort_at, bits)) = row else {
            self.count(Op::DeleteUnindexed);
            return Ok(());
        };
        let mut del = tx.prepare_cached(
            "DELETE FROM feed_posts WHERE feed = ?1 AND sort_at = ?2 AND id = ?3",
        )?;
        for f in self.feeds.iter_mut().filter(|f| bits & (1 << f.id) != 0) {
            if del.execute(params![f.id, sort_at, post])? > 0 {
                f.count = f.count.saturating_sub(1);
            }
        }
        self.count(Op::Deleted);
        Ok(())
    }

    /// Counts every configured feed's posts, and reads the clock.
    fn load(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let mut count = tx.prepare("SELECT COUNT(*) FROM feed_posts WHERE feed = ?1")?;
        for f in &mut self.feeds {
            f.count = count.query_row([f.id], |r| r.get::<_, i64>(0))?.max(0) as u64;
            f.cutoff = i64::MIN;
        }
        self.max_time = tx
            .query_row(
                "SELECT max_time_us FROM feedgen_clock WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        self.pending = Pending::default();
        self.committed = (self.feeds.clone(), self.max_time);
        self.publish_sizes();
        Ok(())
    }

    fn publish_sizes(&self) {
        for f in &self.feeds {
            self.metrics
                .feed_posts
                .get_or_create(&FeedLabel {
                    feed: f.name.clone(),
                })
                .set(i64::try_from(f.count).unwrap_or(i64::MAX));
        }
    }
}

/// Takes feed `feed` out of the post's bit set; the post goes when no feed holds it.
fn unlink(tx: &Transaction<'_>, did: &str, rkey: &str, feed: i64) -> rusqlite::Result<()> {
    // Most posts are in one feed: then one statement removes the row.
    let gone = tx
        .prepare_cached("DELETE FROM posts WHERE rkey = ?1 AND did = ?2 AND feeds = 1 << ?3")?
        .execute(params![rkey, did, feed])?;
    if gone > 0 {
        return Ok(());
    }
    let left: Option<i64> = tx
        .prepare_cached(
            "UPDATE posts SET feeds = feeds & ~(1 << ?3) WHERE rkey = ?1 AND did = ?2
             RETURNING feeds",
        )?
        .query_row(params![rkey, did, feed], |r| r.get(0))
        .optional()?;
    if left == Some(0) {
        tx.prepare_cached("DELETE FROM posts WHERE rkey = ?1 AND did = ?2")?
            .execute([rkey, did])?;
    }
    Ok(())
}

/// Gives each configured feed its id: the stored one, or the lowest free one for a new
/// feed; drops the rows of feeds no longer configured.
fn sync_feeds(tx: &Transaction<'_>, feeds: &mut [FeedState]) -> rusqlite::Result<()> {
    let stored: Vec<(i64, String)> = tx
        .prepare("SELECT id, name FROM feeds")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, name) in &stored {
        if feeds.iter().any(|f| &f.name == name) {
            continue;
        }
        let gone: Vec<(String, String)> = tx
            .prepare("DELETE FROM feed_posts WHERE feed = ?1 RETURNING did, rkey")?
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (did, rkey) in &gone {
            unlink(tx, did, rkey, *id)?;
        }
        tx.execute("DELETE FROM feeds WHERE id = ?1", [id])?;
        tracing::warn!(feed = %name, posts = gone.len(), "feed no longer configured: its posts were dropped from the index");
    }
    let mut used: Vec<i64> = Vec::new();
    for f in feeds.iter_mut() {
        if let Some((id, _)) = stored.iter().find(|(_, n)| *n == f.name) {
            f.id = *id;
            used.push(*id);
        }
    }
    for f in feeds.iter_mut().filter(|f| f.id < 0) {
        let Some(id) = (0..64).find(|i| !used.contains(i)) else {
            // The configuration allows 64 feeds, and stale ones were dropped above.
            return Err(rusqlite::Error::ToSqlConversionFailure(
                "no free feed id: more than 64 feeds".into(),
            ));
        };
        tx.execute(
            "INSERT INTO feeds (id, name) VALUES (?1, ?2)",
            params![id, f.name],
        )?;
        used.push(id);
        f.id = id;
        tracing::info!(feed = %f.name, "new feed: filled from the current position on (rebuild with --from-time to fill it from the past)");
    }
    Ok(())
}

impl Handler for Index {
    const POISON_REASONS: &'static [&'static str] = &["bad_post"];

    fn init(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        // Checkpoint the WAL every ~40 MiB rather than 4 MiB: a catch-up rewrites the same
        // B-tree pages batch after batch, and each is then copied to the database once.
        tx.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        tx.execute_batch(SCHEMA)?;
        sync_feeds(tx, &mut self.feeds)?;
        self.load(tx)
    }

    fn rebuild(&mut self, tx: &Transaction<'_>, from: Rebuild) -> rusqlite::Result<()> {
        match from {
            Rebuild::All => {
                tx.execute_batch(
                    "DELETE FROM feed_posts; DELETE FROM posts; DELETE FROM feedgen_clock;",
                )?;
            }
            Rebuild::Since(t) => {
                let gone: Vec<(i64, i64, i64)> = tx
                    .prepare("DELETE FROM posts WHERE time_us >= ?1 RETURNING id, sort_at, feeds")?
                    .query_map([t], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                let mut del = tx.prepare_cached(
                    "DELETE FROM feed_posts WHERE feed = ?1 AND sort_at = ?2 AND id = ?3",
                )?;
                for (post, sort_at, bits) in gone {
                    for f in self.feeds.iter().filter(|f| bits & (1 << f.id) != 0) {
                        del.execute(params![f.id, sort_at, post])?;
                    }
                }
                // The newest event time kept is before t (an upper bound of it).
                tx.execute(
                    "UPDATE feedgen_clock SET max_time_us = MIN(max_time_us, ?1)",
                    [t.saturating_sub(1)],
                )?;
            }
        }
        self.load(tx)
    }

    fn handle(&mut self, tx: &Transaction<'_>, msg: &Msg<'_>) -> Result<(), HandleError> {
        let Some(commit) = msg.event.commit() else {
            return Ok(()); // not a post op: the filter lets none through
        };
        if commit.collection != POST {
            return Ok(());
        }
        self.advance(tx, msg.event.time_us)?;
        match commit.operation {
            Operation::Create => self.create(tx, msg, commit)?,
            Operation::Delete => self.delete(tx, &msg.event.did, &commit.rkey)?,
            Operation::Update => self.count(Op::Update),
        }
        Ok(())
    }

    fn flush(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.max_time != self.committed.1 {
            if let Some(t) = self.max_time {
                tx.prepare_cached(
                    "INSERT INTO feedgen_clock (id, max_time_us) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET max_time_us = excluded.max_time_us",
                )?
                .execute([t])?;
            }
        }
        Ok(())
    }

    fn committed(&mut self) {
        let p = std::mem::take(&mut self.pending);
        for (op, n) in Op::ALL.iter().zip(p.ops) {
            if n > 0 {
                self.metrics.op(*op, n);
            }
        }
        for (e, n) in Evict::ALL.iter().zip(p.evicted) {
            self.metrics
                .evicted
                .get_or_create(&ReasonLabel { reason: e.as_str() })
                .inc_by(n);
        }
        self.committed = (self.feeds.clone(), self.max_time);
        self.publish_sizes();
    }

    fn rolled_back(&mut self) {
        self.pending = Pending::default();
        (self.feeds, self.max_time) = self.committed.clone();
    }
}
