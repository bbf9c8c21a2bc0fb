//! The read side: the figures of a range, from a read-only connection (WAL: readers
//! never block the consumer). Used by the page, the JSON and CSV downloads, and the tests.
//!
//! **Ranges.** `2d` shows hours, `30d`, `1y` and `all` show UTC days. Every range ends at
//! the *anchor*: the newest charted event time, or the clock when that is later in the
//! future (an event is never charted more than `clock.future_skew` past its storage
//! time, and the page is never anchored past now). A range starts no earlier than the
//! oldest figure, so a young database is not drawn as mostly empty. Daily figures are
//! sums of the hourly rows by UTC day; the hourly rows are kept for ever, so the history
//! outlives the stream's retention.

use crate::handler::{FIGURES, SKIP_REASONS};
use kit::rusqlite::{self, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const HOUR_S: i64 = 3600;
const DAY_S: i64 = 86_400;

/// What a page or a download covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Range {
    /// The last 48 hours, hourly.
    #[default]
    #[serde(rename = "2d")]
    TwoDays,
    /// The last 30 UTC days, daily.
    #[serde(rename = "30d")]
    Month,
    /// The last 365 UTC days, daily.
    #[serde(rename = "1y")]
    Year,
    /// Everything in the database, daily.
    #[serde(rename = "all")]
    All,
}

impl Range {
    /// Every range, in the order the page offers them.
    pub const EVERY: [Range; 4] = [Range::TwoDays, Range::Month, Range::Year, Range::All];

    /// The query-string value (`?range=30d`).
    pub fn as_str(self) -> &'static str {
        match self {
            Range::TwoDays => "2d",
            Range::Month => "30d",
            Range::Year => "1y",
            Range::All => "all",
        }
    }

    /// How people call it.
    pub fn label(self) -> &'static str {
        match self {
            Range::TwoDays => "2 days (hourly)",
            Range::Month => "30 days",
            Range::Year => "1 year",
            Range::All => "all",
        }
    }

    /// Whether it is drawn by hour.
    pub fn hourly(self) -> bool {
        self == Range::TwoDays
    }
}

/// The hourly figures of one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hour {
    /// Start of the hour, unix seconds.
    pub hour: i64,
    /// The same, as `YYYY-MM-DDTHH:00Z`.
    pub utc: String,
    /// Posts, likes, reposts, follows, blocks, profile updates, deletes, new accounts
    /// ([`FIGURES`] order).
    pub counts: [i64; 8],
}

/// The figures of one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    /// Midnight, unix seconds.
    pub day: i64,
    /// The same, as `YYYY-MM-DD`.
    pub utc: String,
    /// Distinct DIDs with at least one commit that day (DAU).
    pub users: i64,
    /// The day's sums of the hourly figures ([`FIGURES`] order).
    pub counts: [i64; 8],
}

/// Posts in one language over the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lang {
    /// Primary language subtag, `none` or `other`.
    pub lang: String,
    /// Post creates.
    pub posts: i64,
}

/// Everything a page or a download shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Start (unix seconds) of the window.
    pub from: i64,
    /// End (exclusive) of the window.
    pub to: i64,
    /// Hours with data, in order.
    pub hours: Vec<Hour>,
    /// Days overlapping the window with data, in order.
    pub days: Vec<Day>,
    /// Languages, most posts first.
    pub langs: Vec<Lang>,
}

/// What the figures say about themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    /// The newest event time (µs) charted.
    pub newest_us: Option<i64>,
    /// Events kept out of the charts, per reason ([`SKIP_REASONS`] order).
    pub skipped: [i64; 2],
}

/// The newest charted event time and the skipped counts.
pub fn figures(conn: &Connection) -> rusqlite::Result<Figures> {
    let newest_us = conn.query_row("SELECT MAX(newest_us) FROM day_newest", [], |r| r.get(0))?;
    let mut skipped = [0; 2];
    for (i, reason) in SKIP_REASONS.iter().enumerate() {
        skipped[i] = conn.query_row(
            "SELECT COALESCE(SUM(events), 0) FROM clock_skipped WHERE reason = ?1",
            [reason],
            |r| r.get(0),
        )?;
    }
    Ok(Figures { newest_us, skipped })
}

/// The window of `range`, anchored at the newest event time charted but never past
/// `now_s` (unix seconds).
pub fn window(conn: &Connection, range: Range, now_s: i64) -> rusqlite::Result<Window> {
    let newest: Option<i64> =
        conn.query_row("SELECT MAX(newest_us) FROM day_newest", [], |r| r.get(0))?;
    let oldest: Option<i64> = conn
        .query_row("SELECT MIN(hour) FROM hourly", [], |r| r.get(0))
        .optional()?
        .flatten();
    let (Some(newest), Some(oldest)) = (newest, oldest) else {
        return Ok(Window {
            from: 0,
            to: 0,
            hours: Vec::new(),
            days: Vec::new(),
            langs: Vec::new(),
        });
    };
    let anchor = newest.div_euclid(1_000_000).min(now_s);
    let (from, to) = if range.hourly() {
        let to = anchor.div_euclid(HOUR_S) * HOUR_S + HOUR_S;
        ((to - 48 * HOUR_S).max(oldest), to)
    } else {
        let to = anchor.div_euclid(DAY_S) * DAY_S + DAY_S;
        let span = match range {
            Range::Month => 30,
            Range::Year => 365,
            _ => i64::MAX / DAY_S / 2,
        };
        let first = oldest.div_euclid(DAY_S) * DAY_S;
        (to.saturating_sub(span * DAY_S).max(first), to)
    };
    between(conn, from, to, range.hourly())
}

/// The figures of `[from, to)` (unix seconds): hours (when `hours` is set), the days the
/// window touches, and the languages of those days.
pub fn between(conn: &Connection, from: i64, to: i64, hours: bool) -> rusqlite::Result<Window> {
    let cols = FIGURES.join(", ");
    let hour_rows = if hours {
        let mut st = conn.prepare_cached(&format!(
            "SELECT hour, {cols} FROM hourly WHERE hour >= ?1 AND hour < ?2 ORDER BY hour"
        ))?;
        let rows = st.query_map([from, to], |r| {
            let mut counts = [0i64; 8];
            for (i, c) in counts.iter_mut().enumerate() {
                *c = r.get(i + 1)?;
            }
            let hour: i64 = r.get(0)?;
            Ok(Hour {
                hour,
                utc: utc_hour(hour),
                counts,
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let first_day = from.div_euclid(DAY_S) * DAY_S;
    let sums = FIGURES
        .iter()
        .map(|f| format!("SUM({f})"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut days: BTreeMap<i64, Day> = BTreeMap::new();
    let blank = |day: i64| Day {
        day,
        utc: utc_day(day),
        users: 0,
        counts: [0; 8],
    };
    let mut st = conn.prepare_cached(&format!(
        "SELECT hour / {DAY_S} * {DAY_S} AS d, {sums} FROM hourly
         WHERE hour >= ?1 AND hour < ?2 GROUP BY d"
    ))?;
    let mut rows = st.query([first_day, to])?;
    while let Some(r) = rows.next()? {
        let day: i64 = r.get(0)?;
        let d = days.entry(day).or_insert_with(|| blank(day));
        for (i, c) in d.counts.iter_mut().enumerate() {
            *c = r.get(i + 1)?;
        }
    }
    let mut st =
        conn.prepare_cached("SELECT day, users FROM daily WHERE day >= ?1 AND day < ?2")?;
    let mut rows = st.query([first_day, to])?;
    while let Some(r) = rows.next()? {
        let day: i64 = r.get(0)?;
        days.entry(day).or_insert_with(|| blank(day)).users = r.get(1)?;
    }
    let mut st = conn.prepare_cached(
        "SELECT lang, SUM(posts) AS n FROM langs WHERE day >= ?1 AND day < ?2
         GROUP BY lang ORDER BY n DESC, lang",
    )?;
    let langs = st
        .query_map([first_day, to], |r| {
            Ok(Lang {
                lang: r.get(0)?,
                posts: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Window {
        from,
        to,
        hours: hour_rows,
        days: days.into_values().collect(),
        langs,
    })
}

/// Formats unix seconds with a `time` format description; the number itself when it is
/// out of the calendar's range.
fn format(secs: i64, f: &[time::format_description::BorrowedFormatItem<'_>]) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(f).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// `YYYY-MM-DD` of unix seconds.
pub fn utc_day(secs: i64) -> String {
    format(
        secs,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
}

/// `YYYY-MM-DDTHH:00Z` of unix seconds.
pub fn utc_hour(secs: i64) -> String {
    format(
        secs,
        time::macros::format_description!("[year]-[month]-[day]T[hour]:00Z"),
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` of unix seconds.
pub fn utc_rfc3339(secs: i64) -> String {
    format(
        secs,
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"),
    )
}

/// `YYYY-MM-DD HH:MM UTC` of unix seconds.
pub fn utc_minute(secs: i64) -> String {
    format(
        secs,
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc() {
        assert_eq!(utc_hour(1_783_175_887), "2026-07-04T14:00Z");
        assert_eq!(utc_minute(1_783_175_887), "2026-07-04 14:38 UTC");
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(-86_400), "1969-12-31");
    }
}
