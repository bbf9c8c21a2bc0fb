//! What one commit does to the tables: the [`kit::Handler`] of charts.
//!
//! Every figure is keyed by the event's own `time_us` (UTC hours and days), never by the
//! clock: a catch-up burst and a live run give the same tables.
//!
//! | figure (column of `hourly`) | counted from |
//! |---|---|
//! | `posts`, `likes`, `reposts`, `follows`, `blocks` | `create` of `app.bsky.feed.post`, `.feed.like`, `.feed.repost`, `.graph.follow`, `.graph.block` |
//! | `profile_updates` | `update` of `app.bsky.actor.profile` |
//! | `new_accounts` | `create` of `app.bsky.actor.profile`: the Bluesky app writes the profile record when an account signs up (a migration or a re-created profile counts again) |
//! | `deletes` | `delete` of any collection |
//! | `daily.users` (DAU) | distinct DIDs with at least one commit op that day ([`crate::users`]) |
//! | `langs` (per day) | post creates by declared language: the primary subtag of each of the first 3 `langs`, lower-cased (`pt-BR` → `pt`); `none` when there is none, `other` when it is not 2–3 letters |
//!
//! Counts are aggregated in memory during a batch and written in [`Handler::flush`], in
//! the batch's transaction; a rollback forgets them.
//!
//! **Clock sanity.** An event's time comes from its host's clock, which can be wrong. A
//! commit dated more than `clock.future_skew` (default 10 min) ahead of the moment
//! JetStream stored it is *skipped* and counted under `future`; one dated before
//! `clock.floor` (default 2023-01-01) is skipped and counted under `too_old`
//! (`clock_skipped`, `bsky_charts_clock_skipped_events_total`, `/api/status`). The clock
//! is the storage time, not the clock of the moment charts applies the message: the two
//! agree for a live run, and only storage time gives a catch-up, a live run and a
//! rebuild the same tables. Skipping rather than placing the event at its storage time:
//! its real time is unknown, and a guess would add a lone spike at the hour it arrived;
//! skipped events are few and counted. The skew bound is also what makes a `--from-time`
//! rebuild exact ([`Handler::clock_skew_bound`]): every charted event dated in the rebuilt
//! days was stored at most `future_skew` before them. A `future` event is counted under
//! the day of its storage time plus the bound, so a rebuild re-counts exactly those it
//! reads again.

use crate::users::{Users, DAY_S};
use kit::event::Operation;
use kit::rusqlite::{self, Transaction};
use kit::{HandleError, Handler, Msg, Rebuild};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{counter::Counter, family::Family};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};

/// The hourly figures, in column order.
pub const FIGURES: [&str; 8] = [
    "posts",
    "likes",
    "reposts",
    "follows",
    "blocks",
    "profile_updates",
    "deletes",
    "new_accounts",
];

const POSTS: usize = 0;
const PROFILE_UPDATES: usize = 5;
const DELETES: usize = 6;
const NEW_ACCOUNTS: usize = 7;
const HOUR_S: i64 = 3600;

/// The tables (times are unix seconds, UTC, by event time).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hourly (
    hour INTEGER PRIMARY KEY,          -- start of the hour
    posts INTEGER NOT NULL DEFAULT 0, likes INTEGER NOT NULL DEFAULT 0,
    reposts INTEGER NOT NULL DEFAULT 0, follows INTEGER NOT NULL DEFAULT 0,
    blocks INTEGER NOT NULL DEFAULT 0, profile_updates INTEGER NOT NULL DEFAULT 0,
    deletes INTEGER NOT NULL DEFAULT 0, new_accounts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS daily (day INTEGER PRIMARY KEY, users INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS daily_user (     -- members of closed days (users.rs)
    day INTEGER NOT NULL, did_hash INTEGER NOT NULL, PRIMARY KEY (day, did_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS daily_user_open (   -- members of open days, in arrival order
    day INTEGER NOT NULL, did_hash INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS daily_user_open_day ON daily_user_open (day);
CREATE TABLE IF NOT EXISTS langs (
    day INTEGER NOT NULL, lang TEXT NOT NULL, posts INTEGER NOT NULL, PRIMARY KEY (day, lang)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS day_newest (     -- newest charted event time (µs) of each day
    day INTEGER PRIMARY KEY, newest_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS clock_skipped (  -- events kept out of the charts, by reason
    day INTEGER NOT NULL, reason TEXT NOT NULL, events INTEGER NOT NULL,
    PRIMARY KEY (day, reason)
) WITHOUT ROWID;";

/// Why an event is kept out of the charts (metric label, `clock_skipped.reason`).
pub const SKIP_REASONS: [&str; 2] = ["future", "too_old"];

/// The clock-sanity bounds, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// How far ahead of its storage time an event may be dated.
    pub future_skew_us: i64,
    /// Events dated before this are too old to be real.
    pub floor_us: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            future_skew_us: 600_000_000,
            floor_us: 1_672_531_200_000_000, // 2023-01-01T00:00:00Z
        }
    }
}

/// `bsky_charts_clock_skipped_events_total{reason}`, registered at zero.
#[derive(Clone, Default)]
pub struct SkipMetrics(Family<ReasonLabel, Counter>);

/// The label of [`SkipMetrics`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    reason: &'static str,
}

impl SkipMetrics {
    /// Registers the counter with every reason at zero.
    pub fn register(registry: &mut Registry) -> Self {
        let m = SkipMetrics::default();
        registry.register(
            "clock_skipped_events",
            "Commits kept out of the charts because their time cannot be right (future: dated past the skew bound after their storage time; too_old: before the floor)",
            m.0.clone(),
        );
        for reason in SKIP_REASONS {
            m.0.get_or_create(&ReasonLabel { reason }).inc_by(0);
        }
        m
    }
}

/// The figure a commit op adds to, if any.
fn figure(op: Operation, collection: &str) -> Option<usize> {
    use Operation::*;
    match (op, collection) {
        (Delete, _) => Some(DELETES),
        (Create, "app.bsky.feed.post") => Some(POSTS),
        (Create, "app.bsky.feed.like") => Some(1),
        (Create, "app.bsky.feed.repost") => Some(2),
        (Create, "app.bsky.graph.follow") => Some(3),
        (Create, "app.bsky.graph.block") => Some(4),
        (Update, "app.bsky.actor.profile") => Some(PROFILE_UPDATES),
        (Create, "app.bsky.actor.profile") => Some(NEW_ACCOUNTS),
        _ => None,
    }
}

/// The language a post's `langs` entry is counted under.
pub fn language(tag: &str) -> String {
    let primary = tag.split(['-', '_']).next().unwrap_or("");
    if (2..=3).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_alphabetic()) {
        primary.to_ascii_lowercase()
    } else {
        "other".into()
    }
}

/// The part of a post record charts reads.
#[derive(serde::Deserialize)]
struct Post {
    #[serde(default)]
    langs: serde_json::Value,
}

/// The charts handler.
#[derive(Default)]
pub struct Charts {
    clock: Clock,
    metrics: SkipMetrics,
    hours: BTreeMap<i64, [i64; 8]>,
    langs: HashMap<(i64, String), i64>,
    newest: HashMap<i64, i64>,
    /// Skipped events of the batch: (day, reason index) → events.
    skipped: HashMap<(i64, usize), i64>,
    /// The same, written and waiting for the commit to reach the metric.
    skipped_flushed: [u64; 2],
    users: Users,
}

impl Charts {
    /// A handler with these bounds, counting skipped events in `metrics`.
    pub fn new(clock: Clock, metrics: SkipMetrics) -> Self {
        Charts {
            clock,
            metrics,
            ..Charts::default()
        }
    }

    /// Why an event dated `time_us` and stored at `stored_us` is kept out of the charts
    /// (an index in [`SKIP_REASONS`]), and the day it is counted under.
    fn kept_out(&self, time_us: i64, stored_us: i64) -> Option<(usize, i64)> {
        let day_of = |us: i64| us.div_euclid(1_000_000).div_euclid(DAY_S) * DAY_S;
        let bound = stored_us.saturating_add(self.clock.future_skew_us);
        if time_us > bound {
            Some((0, day_of(bound)))
        } else if time_us < self.clock.floor_us {
            Some((1, day_of(time_us)))
        } else {
            None
        }
    }

    /// The post's languages (deduplicated), or poison if the record is not an object.
    fn post_langs(msg: &Msg<'_>) -> Result<Vec<String>, HandleError> {
        let Some(record) = msg.event.commit().and_then(|c| c.record_as::<Post>()) else {
            return Ok(vec!["none".into()]); // tooBig: no record
        };
        let post = record.map_err(|_| HandleError::Poison("bad_record"))?;
        let mut out: Vec<String> = post
            .langs
            .as_array()
            .map(|a| {
                a.iter()
                    .take(3)
                    .filter_map(|l| l.as_str())
                    .map(language)
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.dedup();
        if out.is_empty() {
            out.push("none".into());
        }
        Ok(out)
    }
}

impl Handler for Charts {
    const POISON_REASONS: &'static [&'static str] = &["bad_record"];

    fn init(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(SCHEMA)?;
        // A database from before `day_newest`: its newest event time per day, to the
        // hour, from the hourly figures (exact again once the day is rebuilt).
        tx.execute_batch(
            "INSERT INTO day_newest (day, newest_us)
             SELECT hour / 86400 * 86400, MAX(hour) * 1000000 FROM hourly
             WHERE NOT EXISTS (SELECT 1 FROM day_newest) GROUP BY hour / 86400",
        )
    }

    fn clock_skew_bound(&self) -> Option<i64> {
        Some(self.clock.future_skew_us)
    }

    fn rebuild_from(&self, t: i64) -> i64 {
        // A day's distinct users cannot be split: rebuild whole UTC days.
        let day_us = DAY_S * 1_000_000;
        t.div_euclid(day_us) * day_us
    }

    fn rebuild(&mut self, tx: &Transaction<'_>, from: Rebuild) -> rusqlite::Result<()> {
        let from_s = match from {
            Rebuild::All => i64::MIN,
            Rebuild::Since(t) => t.div_euclid(1_000_000),
        };
        for table in [
            "daily",
            "daily_user",
            "daily_user_open",
            "langs",
            "day_newest",
            "clock_skipped",
        ] {
            tx.execute(&format!("DELETE FROM {table} WHERE day >= ?1"), [from_s])?;
        }
        tx.execute("DELETE FROM hourly WHERE hour >= ?1", [from_s])?;
        self.users.forget_from(from_s);
        Ok(())
    }

    fn handle(&mut self, tx: &Transaction<'_>, msg: &Msg<'_>) -> Result<(), HandleError> {
        let Some(commit) = msg.event.commit() else {
            return Ok(()); // identity, account, sync: not charted
        };
        let stored_us = i64::try_from(msg.stored_ns / 1000).unwrap_or(i64::MAX);
        if let Some((reason, day)) = self.kept_out(msg.event.time_us, stored_us) {
            *self.skipped.entry((day, reason)).or_default() += 1;
            return Ok(());
        }
        let secs = msg.event.time_us.div_euclid(1_000_000);
        let day = secs.div_euclid(DAY_S) * DAY_S;
        let newest = self.newest.entry(day).or_insert(i64::MIN);
        *newest = (*newest).max(msg.event.time_us);
        let fig = figure(commit.operation, &commit.collection);
        let langs = if fig == Some(POSTS) {
            Self::post_langs(msg)?
        } else {
            Vec::new()
        };
        if let Some(i) = fig {
            self.hours
                .entry(secs.div_euclid(HOUR_S) * HOUR_S)
                .or_default()[i] += 1;
        }
        for lang in langs {
            *self.langs.entry((day, lang)).or_default() += 1;
        }
        self.users.seen(tx, day, &msg.event.did)?;
        Ok(())
    }

    fn flush(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let mut hour = tx.prepare_cached(
            "INSERT INTO hourly (hour, posts, likes, reposts, follows, blocks, profile_updates,
                deletes, new_accounts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(hour) DO UPDATE SET posts = posts + excluded.posts,
                likes = likes + excluded.likes, reposts = reposts + excluded.reposts,
                follows = follows + excluded.follows, blocks = blocks + excluded.blocks,
                profile_updates = profile_updates + excluded.profile_updates,
                deletes = deletes + excluded.deletes,
                new_accounts = new_accounts + excluded.new_accounts",
        )?;
        for (h, c) in std::mem::take(&mut self.hours) {
            hour.execute((h, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]))?;
        }
        let mut lang = tx.prepare_cached(
            "INSERT INTO langs (day, lang, posts) VALUES (?1, ?2, ?3)
             ON CONFLICT(day, lang) DO UPDATE SET posts = posts + excluded.posts",
        )?;
        for ((day, l), n) in self.langs.drain() {
            lang.execute((day, l, n))?;
        }
        let mut newest = tx.prepare_cached(
            "INSERT INTO day_newest (day, newest_us) VALUES (?1, ?2)
             ON CONFLICT(day) DO UPDATE SET newest_us = MAX(newest_us, excluded.newest_us)",
        )?;
        for (day, t) in self.newest.drain() {
            newest.execute((day, t))?;
        }
        let mut skipped = tx.prepare_cached(
            "INSERT INTO clock_skipped (day, reason, events) VALUES (?1, ?2, ?3)
             ON CONFLICT(day, reason) DO UPDATE SET events = events + excluded.events",
        )?;
        for ((day, reason), n) in self.skipped.drain() {
            skipped.execute((day, SKIP_REASONS[reason], n))?;
            self.skipped_flushed[reason] += n as u64;
        }
        self.users.flush(tx)
    }

    fn committed(&mut self) {
        for (reason, n) in SKIP_REASONS
            .iter()
            .zip(std::mem::take(&mut self.skipped_flushed))
        {
            self.metrics
                .0
                .get_or_create(&ReasonLabel { reason })
                .inc_by(n);
        }
        self.users.committed();
    }

    fn rolled_back(&mut self) {
        self.hours.clear();
        self.langs.clear();
        self.newest.clear();
        self.skipped.clear();
        self.skipped_flushed = [0; 2];
        self.users.rolled_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages() {
        assert_eq!(language("pt-BR"), "pt");
        assert_eq!(language("EN"), "en");
        assert_eq!(language("yue"), "yue");
        assert_eq!(language("x-pig-latin"), "other");
        assert_eq!(language("english"), "other");
        assert_eq!(language(""), "other");
    }

    #[test]
    fn clock_sanity() {
        let c = Charts::new(Clock::default(), SkipMetrics::default());
        let stored = 1_783_175_887_000_000; // 2026-07-04T14:38:07Z
        let skew = Clock::default().future_skew_us;
        assert_eq!(c.kept_out(stored + skew, stored), None, "at the bound");
        assert_eq!(
            c.kept_out(stored + skew + 1, stored),
            Some((0, 1_783_123_200)),
            "future: counted under the day of storage time + bound"
        );
        assert_eq!(c.kept_out(stored - 86_400_000_000 * 300, stored), None);
        let old = 1_546_300_800_000_000; // 2019-01-01
        assert_eq!(c.kept_out(old, stored), Some((1, 1_546_300_800)));
        assert_eq!(
            c.kept_out(Clock::default().floor_us, stored),
            None,
            "at the floor"
        );
    }

    #[test]
    fn figures() {
        use Operation::*;
        assert_eq!(figure(Create, "app.bsky.feed.post"), Some(POSTS));
        assert_eq!(figure(Delete, "app.bsky.feed.post"), Some(DELETES));
        assert_eq!(figure(Update, "app.bsky.feed.post"), None);
        assert_eq!(figure(Create, "app.bsky.actor.profile"), Some(NEW_ACCOUNTS));
        assert_eq!(
            FIGURES[figure(Create, "app.bsky.graph.block").unwrap_or(0)],
            "blocks"
        );
    }
}
