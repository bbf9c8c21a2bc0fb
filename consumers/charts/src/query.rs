//! The read side: the figures of a time window, from a read-only connection (WAL: readers
//! never block the consumer). Used by the page, the JSON API and the tests.

use crate::handler::FIGURES;
use kit::rusqlite::{self, Connection};
use serde::Serialize;

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

/// Distinct active users of one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Day {
    /// Midnight, unix seconds.
    pub day: i64,
    /// The same, as `YYYY-MM-DD`.
    pub utc: String,
    /// Distinct DIDs with at least one commit that day.
    pub users: i64,
}

/// Posts in one language over the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lang {
    /// Primary language subtag, `none` or `other`.
    pub lang: String,
    /// Post creates.
    pub posts: i64,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// First hour (unix seconds) of the window.
    pub from: i64,
    /// End (exclusive) of the window.
    pub to: i64,
    /// Hours with data, in order.
    pub hours: Vec<Hour>,
    /// Days overlapping the window, in order.
    pub days: Vec<Day>,
    /// Languages, most posts first.
    pub langs: Vec<Lang>,
}

/// The figures of the `days` days (24 h each) up to the newest hour with data, or from
/// the oldest hour with data if that is later.
pub fn window(conn: &Connection, days: u32) -> rusqlite::Result<Window> {
    let (oldest, newest): (Option<i64>, Option<i64>) =
        conn.query_row("SELECT MIN(hour), MAX(hour) FROM hourly", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let to = newest.map_or(0, |h| h + 3600);
    let from = (to - i64::from(days) * 86_400).max(oldest.unwrap_or(0));
    window_between(conn, from, to)
}

/// The figures of hours in `[from, to)` (unix seconds) and the days they touch.
pub fn window_between(conn: &Connection, from: i64, to: i64) -> rusqlite::Result<Window> {
    let cols = FIGURES.join(", ");
    let mut st = conn.prepare(&format!(
        "SELECT hour, {cols} FROM hourly WHERE hour >= ?1 AND hour < ?2 ORDER BY hour"
    ))?;
    let hours = st
        .query_map([from, to], |r| {
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
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let first_day = from.div_euclid(86_400) * 86_400;
    let mut st =
        conn.prepare("SELECT day, users FROM daily WHERE day >= ?1 AND day < ?2 ORDER BY day")?;
    let days = st
        .query_map([first_day, to], |r| {
            let day: i64 = r.get(0)?;
            Ok(Day {
                day,
                utc: utc_day(day),
                users: r.get(1)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut st = conn.prepare(
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
        hours,
        days,
        langs,
    })
}

/// (year, month, day) of a day number since 1970-01-01 (proleptic Gregorian).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD` of unix seconds.
pub fn utc_day(secs: i64) -> String {
    let (y, m, d) = civil(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:00Z` of unix seconds.
pub fn utc_hour(secs: i64) -> String {
    format!(
        "{}T{:02}:00Z",
        utc_day(secs),
        secs.rem_euclid(86_400) / 3600
    )
}

/// `YYYY-MM-DD HH:MM UTC` of unix seconds.
pub fn utc_minute(secs: i64) -> String {
    let s = secs.rem_euclid(86_400);
    format!("{} {:02}:{:02} UTC", utc_day(secs), s / 3600, s % 3600 / 60)
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
