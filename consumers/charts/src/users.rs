//! Daily active users: distinct DIDs with at least one commit in a UTC day (event time).
//!
//! **Exact, in bounded memory.** Each DID is reduced to a 64-bit hash (the first 8 bytes
//! of its SHA-256: stable across runs and machines, and no one can aim for a collision
//! cheaply). Two of the ~3 million DIDs active in a day of the real network share a hash
//! with probability n²/2⁶⁵ ≈ 2.4·10⁻⁷ per day, so the count is exact but for that
//! chance of being one short.
//!
//! The members of each day are stored with the stream position, so a day's set survives
//! restarts and its count (`daily.users`) is committed with the position. The newest
//! [`OPEN_DAYS`] days are *open*: held in memory as hash sets (about 9 bytes per member in
//! a `HashSet<u64>` sized for it, ≈ 36 MiB for 3 million), so a DID seen again that day
//! costs no SQL, and their new members are appended to `daily_user_open` in arrival order.
//! When a newer day makes a day leave memory it is *closed*: its rows move, sorted, into
//! `daily_user` (primary key `(day, did_hash)`), against which an event of a closed day (a
//! late one) is checked. Appending keeps a batch's writes on a few pages at the end of the
//! table; inserting a day's random hashes straight into the keyed table dirtied about one
//! page per new member, which made a 3-million-DID day read at 0.14 of a plain consumer
//! (BENCHMARKS.md). Memory is bounded by two days of the real network (≈ 72 MiB, twice that
//! while a set grows), whatever the backlog: a catch-up moves through days one after the
//! other, and a day leaves memory when two newer ones arrived.
//!
//! Invariant: no day at or before the newest open day minus [`OPEN_DAYS`] has rows in
//! `daily_user_open`. Such days are closed as the newest moves, whether this process
//! opened them or a crashed one did, and only they are checked against `daily_user`
//! alone; any later day is opened, loading the rows of both tables, when its first event
//! arrives.

use kit::rusqlite::{self, Transaction};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Days of members kept in memory: the newest day seen and the one before.
pub const OPEN_DAYS: i64 = 2;
/// A UTC day in seconds.
pub const DAY_S: i64 = 86_400;

/// Closes `day`, whose whole set of members is `members`: they are written into
/// `daily_user` in key order, so the keyed table is written page after page rather than
/// one random page per member, and the day's rows leave `daily_user_open`.
///
/// Sorted here, in sixteen slices by the key's top four bits, so the sort holds a
/// sixteenth of the day at a time (≈ 1.5 MiB for 3 million members) where sorting the
/// whole day would hold 8 bytes per member (24 MiB). SQLite's own sorter (`ORDER BY`)
/// raised the peak RSS of a 3-million-DID day from 138 to 164 MiB.
fn close_day(tx: &Transaction<'_>, day: i64, members: Members) -> rusqlite::Result<()> {
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO daily_user (day, did_hash) VALUES (?1, ?2)")?;
    // SQLite orders the stored values as signed integers: slices -8 (the most negative
    // keys) to 7.
    let mut keys = Vec::with_capacity(members.len() / 12);
    for top in -8..8 {
        keys.clear();
        keys.extend(members.iter().map(|h| *h as i64).filter(|k| k >> 60 == top));
        keys.sort_unstable();
        for k in &keys {
            insert.execute((day, k))?;
        }
    }
    tx.prepare_cached("DELETE FROM daily_user_open WHERE day = ?1")?
        .execute([day])?;
    Ok(())
}

/// Closes every day up to `last` (unix seconds of its midnight) that still has rows in
/// `daily_user_open` without being in memory (left open by a process before a restart):
/// they move into `daily_user` in key order.
fn close(tx: &Transaction<'_>, last: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO daily_user (day, did_hash)
         SELECT day, did_hash FROM daily_user_open WHERE day <= ?1 ORDER BY day, did_hash",
    )?
    .execute([last])?;
    tx.prepare_cached("DELETE FROM daily_user_open WHERE day <= ?1")?
        .execute([last])?;
    Ok(())
}

/// The 64-bit hash of a DID.
pub fn did_hash(did: &str) -> u64 {
    let digest = Sha256::digest(did.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The keys are already uniform hashes: use them as they are.
#[derive(Default)]
pub struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Members = HashSet<u64, BuildHasherDefault<Identity>>;

/// The distinct users of each day, as counted so far.
#[derive(Default)]
pub struct Users {
    /// Committed members of the newest days (loaded from the table on first use).
    open: BTreeMap<i64, Members>,
    /// Members new in the current batch, by day (written at flush).
    pending: HashMap<i64, Vec<u64>>,
    /// The same, for membership tests during the batch.
    pending_set: HashSet<(i64, u64)>,
    /// New members of days not held in memory, already inserted in this batch.
    pending_counts: HashMap<i64, i64>,
}

impl Users {
    /// Counts `did` active on `day` (unix seconds of its midnight, UTC).
    pub fn seen(&mut self, tx: &Transaction<'_>, day: i64, did: &str) -> rusqlite::Result<()> {
        let hash = did_hash(did);
        if self.pending_set.contains(&(day, hash)) {
            return Ok(());
        }
        if self.ensure_open(tx, day)? {
            let known = self.open.get(&day).is_some_and(|m| m.contains(&hash));
            if !known {
                self.pending_set.insert((day, hash));
                self.pending.entry(day).or_default().push(hash);
            }
            return Ok(());
        }
        // A day older than those in memory: the table decides.
        let added = tx
            .prepare_cached("INSERT OR IGNORE INTO daily_user (day, did_hash) VALUES (?1, ?2)")?
            .execute((day, hash as i64))?;
        if added == 1 {
            self.pending_set.insert((day, hash));
            *self.pending_counts.entry(day).or_default() += 1;
        }
        Ok(())
    }

    /// Whether `day` is (now) held in memory: one of the [`OPEN_DAYS`] newest seen.
    fn ensure_open(&mut self, tx: &Transaction<'_>, day: i64) -> rusqlite::Result<bool> {
        if self.open.contains_key(&day) {
            return Ok(true);
        }
        let newest = self.open.keys().next_back().copied().unwrap_or(i64::MIN);
        if day <= newest.saturating_sub(OPEN_DAYS * DAY_S) {
            return Ok(false);
        }
        // A newer day: load what the tables hold of it (rows of this batch included,
        // hence the whole cache is dropped on rollback).
        let mut members = Members::default();
        let mut st = tx.prepare_cached(
            "SELECT did_hash FROM daily_user WHERE day = ?1
             UNION ALL SELECT did_hash FROM daily_user_open WHERE day = ?1",
        )?;
        for h in st.query_map([day], |r| r.get::<_, i64>(0))? {
            members.insert(h? as u64);
        }
        self.open.insert(day, members);
        let last_closed = newest.max(day).saturating_sub(OPEN_DAYS * DAY_S);
        while let Some(entry) = self.open.first_entry().filter(|e| *e.key() <= last_closed) {
            let (d, members) = entry.remove_entry();
            close_day(tx, d, members)?;
        }
        // Days a process before a restart left open and this one never opened.
        close(tx, last_closed)?;
        Ok(true)
    }

    /// Writes the batch's new members and the days' counts.
    pub fn flush(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let mut append =
            tx.prepare_cached("INSERT INTO daily_user_open (day, did_hash) VALUES (?1, ?2)")?;
        let mut insert =
            tx.prepare_cached("INSERT OR IGNORE INTO daily_user (day, did_hash) VALUES (?1, ?2)")?;
        let mut counts = std::mem::take(&mut self.pending_counts);
        for (day, hashes) in &self.pending {
            let mut added = 0;
            if self.open.contains_key(day) {
                // New to the day's complete set in memory: new to the day.
                for h in hashes {
                    append.execute((day, *h as i64))?;
                }
                added = hashes.len() as i64;
            } else {
                // Closed during this batch, after these members were seen.
                for h in hashes {
                    added += insert.execute((day, *h as i64))? as i64;
                }
            }
            *counts.entry(*day).or_default() += added;
        }
        let mut add = tx.prepare_cached(
            "INSERT INTO daily (day, users) VALUES (?1, ?2)
             ON CONFLICT(day) DO UPDATE SET users = users + excluded.users",
        )?;
        for (day, n) in counts {
            if n > 0 {
                add.execute((day, n))?;
            }
        }
        Ok(())
    }

    /// The batch is committed: its members join the days in memory.
    pub fn committed(&mut self) {
        for (day, hashes) in self.pending.drain() {
            if let Some(m) = self.open.get_mut(&day) {
                m.extend(hashes);
            }
        }
        self.pending_set.clear();
        self.pending_counts.clear();
    }

    /// The batch was rolled back: forget it, and the days loaded during it.
    pub fn rolled_back(&mut self) {
        self.pending.clear();
        self.pending_set.clear();
        self.pending_counts.clear();
        self.open.clear();
    }

    /// Forgets the days from `day` on (a rebuild).
    pub fn forget_from(&mut self, day: i64) {
        self.open.retain(|d, _| *d < day);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable() {
        assert_eq!(did_hash("did:plc:abc"), did_hash("did:plc:abc"));
        assert_ne!(did_hash("did:plc:abc"), did_hash("did:plc:abd"));
        // The first 8 bytes of SHA-256("did:plc:abc"), little-endian: fixed forever,
        // since stored hashes must keep meaning the same DID.
        let d = Sha256::digest(b"did:plc:abc");
        assert_eq!(did_hash("did:plc:abc").to_le_bytes(), d[..8]);
    }

    const D0: i64 = 20_000 * DAY_S;

    fn db() -> rusqlite::Connection {
        let conn = rusqlite::Connection::open_in_memory().expect("db");
        conn.execute_batch(crate::handler::SCHEMA).expect("schema");
        conn
    }

    /// One batch: `events` (day index, DID) seen, flushed and committed.
    fn batch(conn: &mut rusqlite::Connection, users: &mut Users, events: &[(i64, &str)]) {
        let tx = conn.transaction().expect("tx");
        for (day, did) in events {
            users.seen(&tx, D0 + day * DAY_S, did).expect("seen");
        }
        users.flush(&tx).expect("flush");
        tx.commit().expect("commit");
        users.committed();
    }

    /// (DAU of each day 0..days, rows in daily_user_open, rows in daily_user).
    fn state(conn: &rusqlite::Connection, days: i64) -> (Vec<i64>, i64, i64) {
        let dau = (0..days)
            .map(|d| {
                conn.query_row(
                    "SELECT COALESCE(SUM(users), 0) FROM daily WHERE day = ?1",
                    [D0 + d * DAY_S],
                    |r| r.get(0),
                )
                .expect("dau")
            })
            .collect();
        let rows = |t: &str| {
            conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .expect("rows")
        };
        (dau, rows("daily_user_open"), rows("daily_user"))
    }

    #[test]
    fn open_days_append_and_close_into_the_keyed_table() {
        let mut conn = db();
        let mut users = Users::default();
        batch(
            &mut conn,
            &mut users,
            &[(0, "a"), (0, "b"), (0, "a"), (1, "a")],
        );
        assert_eq!(state(&conn, 3), (vec![2, 1, 0], 3, 0));
        // Day 2 closes day 0 (two newer days): its rows move, day 1's stay open.
        batch(&mut conn, &mut users, &[(2, "c"), (0, "b"), (0, "d")]);
        assert_eq!(state(&conn, 3), (vec![3, 1, 1], 2, 3));
        // A late event of the closed day is checked against the keyed table.
        batch(
            &mut conn,
            &mut users,
            &[(0, "a"), (0, "d"), (0, "e"), (1, "b")],
        );
        assert_eq!(state(&conn, 3), (vec![4, 2, 1], 3, 4));
    }

    #[test]
    fn a_day_closed_mid_batch_keeps_the_members_seen_before() {
        let mut conn = db();
        let mut users = Users::default();
        // "b" of day 0 is pending when day 2 closes day 0 in the same batch; "a" was
        // committed before.
        batch(&mut conn, &mut users, &[(0, "a")]);
        batch(
            &mut conn,
            &mut users,
            &[(0, "b"), (2, "x"), (0, "b"), (0, "a"), (0, "c")],
        );
        assert_eq!(state(&conn, 3), (vec![3, 0, 1], 1, 3));
    }

    #[test]
    fn after_a_restart_rows_of_open_days_are_found_and_old_ones_closed() {
        let mut conn = db();
        let mut users = Users::default();
        batch(&mut conn, &mut users, &[(0, "a"), (1, "a"), (1, "b")]);
        // A new process: its first event is of day 5, so days 0 and 1 (left open by the
        // last one) are closed before anything of theirs is checked.
        let mut users = Users::default();
        batch(
            &mut conn,
            &mut users,
            &[(5, "a"), (1, "b"), (1, "c"), (0, "a")],
        );
        assert_eq!(state(&conn, 6).0, vec![1, 3, 0, 0, 0, 1]);
        assert_eq!(state(&conn, 6).1, 1);
        // Another: its first event is of day 4, still open, whose set is loaded.
        let mut users = Users::default();
        batch(
            &mut conn,
            &mut users,
            &[(4, "z"), (5, "a"), (5, "b"), (4, "z")],
        );
        assert_eq!(state(&conn, 6), (vec![1, 3, 0, 0, 1, 2], 3, 4));
    }

    #[test]
    fn a_rolled_back_batch_counts_nothing_and_closes_nothing() {
        let mut conn = db();
        let mut users = Users::default();
        batch(&mut conn, &mut users, &[(0, "a")]);
        {
            let tx = conn.transaction().expect("tx");
            users.seen(&tx, D0 + 3 * DAY_S, "b").expect("seen");
            users.flush(&tx).expect("flush");
            // dropped: rolled back
        }
        users.rolled_back();
        assert_eq!(state(&conn, 4), (vec![1, 0, 0, 0], 1, 0));
        batch(&mut conn, &mut users, &[(0, "a"), (0, "c")]);
        assert_eq!(state(&conn, 4), (vec![2, 0, 0, 0], 2, 0));
    }

    #[test]
    fn memory_per_member() {
        // 3 million members fit in a table of 4 Mi buckets of 9 bytes: ≈ 36 MiB per day.
        let mut m = Members::default();
        m.reserve(3_000_000);
        assert!(
            m.capacity() >= 3_000_000 && m.capacity() < 4_000_000,
            "{}",
            m.capacity()
        );
    }
}
