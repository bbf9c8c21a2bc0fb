//! The service's SQLite database, and kit's own row in it: the position.
//!
//! One database per service, in WAL mode (readers such as a web page never block the
//! writer). kit keeps one row, `kit_position`: the stream sequence of the last message
//! applied, written **in the same transaction** as the data derived from it, so the data
//! and the position can never disagree. After a crash, whatever the server delivers again
//! at or below that sequence is acknowledged and skipped: nothing is counted twice, and
//! nothing is skipped, since nothing above it was committed.
//!
//! The row also names the stream and its creation time: a database built from another
//! stream, or from a stream that has since been deleted and recreated (its sequences start
//! again at 1), is refused at start instead of being silently mixed. A `--from-time`
//! rebuild in progress is recorded there too ([`Rebuilding`]), so a crash during it loses
//! nothing.

use crate::config::{self, Synchronous};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kit_position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    stream TEXT NOT NULL,            -- stream name
    stream_created TEXT NOT NULL,    -- the stream's creation time, as the server reports it
    seq INTEGER NOT NULL,            -- last stream sequence applied (0: none)
    time_us INTEGER,                 -- event time of that message
    rebuild_from_us INTEGER,         -- --from-time rebuild in progress: its event time ...
    rebuild_until_seq INTEGER        -- ... and the position it started from
);";

/// Where a service stands in the stream, as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The stream's name.
    pub stream: String,
    /// The stream's creation time (tells a recreated stream from the one we read).
    pub stream_created: String,
    /// Stream sequence of the last message applied (0: none yet).
    pub seq: u64,
    /// Event time (`time_us`) of that message, when it had one.
    pub time_us: Option<i64>,
    /// A `--from-time` rebuild in progress.
    pub rebuilding: Option<Rebuilding>,
}

/// A `--from-time` rebuild in progress: messages at or below `until_seq` (read before the
/// rebuild) whose event time is before `from_us` are still counted in the kept state, so
/// they are skipped when read again; every other message is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilding {
    /// Event time from which the handler dropped its state.
    pub from_us: i64,
    /// The position when the rebuild started.
    pub until_seq: u64,
}

impl Rebuilding {
    /// Whether the message at `seq` with event time `time_us` is already counted.
    pub fn counted(&self, seq: u64, time_us: i64) -> bool {
        seq <= self.until_seq && time_us < self.from_us
    }
}

/// The database cannot be used. Each one means: stop, and tell the operator.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed (open, pragma, read, write).
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was built from another stream.
    #[error(
        "the state database holds stream {stored:?}, not {configured:?}: use another \
         state.path, or rebuild it with --from-seq 1"
    )]
    OtherStream {
        /// What the database holds.
        stored: String,
        /// What the configuration names.
        configured: String,
    },
    /// The stream was deleted and created again since the database was built.
    #[error(
        "stream {stream} was recreated since the state database was built (created \
         {stored}, now {now}): rebuild with --from-seq 1"
    )]
    Recreated {
        /// The stream.
        stream: String,
        /// Creation time stored.
        stored: String,
        /// Creation time now.
        now: String,
    },
}

/// Opens (creating it if needed) the service's database for writing: WAL,
/// `synchronous` as configured, a page cache of `cache_mib`, kit's table.
pub fn open(settings: &config::State) -> Result<Connection, StateError> {
    if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Let SQLite report a missing directory in its own words if this fails.
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = Connection::open(&settings.path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            mode,
            "SQLite refused WAL mode; readers may block the writer"
        );
    }
    conn.pragma_update(
        None,
        "synchronous",
        match settings.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "cache_size", -(i64::from(settings.cache_mib) * 1024))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

/// Opens the database read-only, for readers such as a web page (WAL: they never block
/// the writer, and see its last commit).
pub fn open_reader(path: &Path) -> Result<Connection, StateError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// The committed position, if the database has one.
pub fn load(conn: &Connection) -> Result<Option<Position>, StateError> {
    let row = conn
        .query_row(
            "SELECT stream, stream_created, seq, time_us, rebuild_from_us, rebuild_until_seq
             FROM kit_position WHERE id = 1",
            [],
            |r| {
                let from: Option<i64> = r.get(4)?;
                let until: Option<i64> = r.get(5)?;
                Ok(Position {
                    stream: r.get(0)?,
                    stream_created: r.get(1)?,
                    seq: r.get::<_, i64>(2)?.max(0) as u64,
                    time_us: r.get(3)?,
                    rebuilding: from.zip(until).map(|(from_us, until)| Rebuilding {
                        from_us,
                        until_seq: until.max(0) as u64,
                    }),
                })
            },
        )
        .optional()?;
    Ok(row)
}

/// Writes the position inside `tx` (the caller's transaction, with its data).
pub fn save(tx: &Transaction<'_>, p: &Position) -> Result<(), rusqlite::Error> {
    let seq = i64::try_from(p.seq).unwrap_or(i64::MAX);
    let (from, until) = match p.rebuilding {
        Some(r) => (
            Some(r.from_us),
            Some(i64::try_from(r.until_seq).unwrap_or(i64::MAX)),
        ),
        None => (None, None),
    };
    tx.prepare_cached(
        "INSERT INTO kit_position (id, stream, stream_created, seq, time_us, rebuild_from_us, rebuild_until_seq)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET stream = ?1, stream_created = ?2, seq = ?3, time_us = ?4,
             rebuild_from_us = ?5, rebuild_until_seq = ?6",
    )?
    .execute(params![p.stream, p.stream_created, seq, p.time_us, from, until])?;
    Ok(())
}

/// Refuses a database built from another stream, or from an earlier stream of that name.
///
/// A stream created since is accepted when `archive restore` rebuilt it from the archive
/// of the stored one and the position is inside what it restored (`restored`, from the
/// stream's metadata: [`contract::lineage`]): the same messages sit at the same sequences.
/// `Ok(true)` then, so the caller can say so.
pub fn check_stream(
    stored: &Position,
    name: &str,
    created: &str,
    restored: Option<&contract::lineage::Restored>,
) -> Result<bool, StateError> {
    if stored.stream != name {
        return Err(StateError::OtherStream {
            stored: stored.stream.clone(),
            configured: name.to_string(),
        });
    }
    if stored.stream_created == created {
        return Ok(false);
    }
    if restored.is_some_and(|r| r.continues(&stored.stream_created, stored.seq)) {
        return Ok(true);
    }
    Err(StateError::Recreated {
        stream: name.to_string(),
        stored: stored.stream_created.clone(),
        now: created.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trip_and_stream_identity() {
        let dir = tempfile::tempdir().expect("tmp");
        let settings = config::State {
            path: dir.path().join("sub/s.db"),
            ..config::State::default()
        };
        let mut conn = open(&settings).expect("open");
        assert_eq!(load(&conn).expect("load"), None);
        let p = Position {
            stream: "BSKY".into(),
            stream_created: "2026-07-04T00:00:00Z".into(),
            seq: 42,
            time_us: Some(7),
            rebuilding: Some(Rebuilding {
                from_us: 5,
                until_seq: 40,
            }),
        };
        let tx = conn.transaction().expect("tx");
        save(&tx, &p).expect("save");
        tx.commit().expect("commit");
        let reader = open_reader(&settings.path).expect("reader");
        assert_eq!(load(&reader).expect("load"), Some(p.clone()));
        assert!(matches!(
            check_stream(&p, "BSKY", "2026-07-04T00:00:00Z", None),
            Ok(false)
        ));
        assert!(matches!(
            check_stream(&p, "OTHER", "2026-07-04T00:00:00Z", None),
            Err(StateError::OtherStream { .. })
        ));
        assert!(matches!(
            check_stream(&p, "BSKY", "2026-07-05T00:00:00Z", None),
            Err(StateError::Recreated { .. })
        ));
        // Restored from the archive of the stored stream, through the position or not.
        let restored = |through| contract::lineage::Restored {
            from: vec!["x".into(), "2026-07-04T00:00:00Z".into()],
            through,
        };
        assert!(matches!(
            check_stream(&p, "BSKY", "2026-07-05T00:00:00Z", Some(&restored(42))),
            Ok(true)
        ));
        assert!(matches!(
            check_stream(&p, "BSKY", "2026-07-05T00:00:00Z", Some(&restored(41))),
            Err(StateError::Recreated { .. })
        ));
        let r = p.rebuilding.expect("rebuilding");
        assert!(r.counted(40, 4) && !r.counted(41, 4) && !r.counted(40, 5));
    }
}
