//! The SQLite side of the loop: the connection and the handler, moved onto a blocking
//! thread for each batch (`spawn_blocking`) and back. One batch = one transaction that
//! holds the handler's writes and the new position ([`crate::state`]).

use crate::event::{Event, EventError};
use crate::handler::{BoxError, HandleError, Handler, Msg, Rebuild};
use crate::state::{self, Position, Rebuilding};
use bytes::Bytes;
use rusqlite::Connection;

/// A message's part that the worker needs (the ack handle stays on the async side).
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub seq: u64,
    pub subject: async_nats::Subject,
    pub payload: Bytes,
    pub stored_ns: i128,
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Poison messages: (stream sequence, reason).
    pub poison: Vec<(u64, &'static str)>,
    /// Messages skipped as already counted in the state a rebuild kept.
    pub kept: u64,
}

/// Why a batch was not committed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    /// Rolled back; may pass: NAK and retry.
    #[error("{0}")]
    Transient(BoxError),
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> Self {
        ApplyError::Transient(Box::new(e))
    }
}

pub(crate) struct Worker<H> {
    pub conn: Connection,
    pub handler: H,
    /// The committed position.
    pub position: Position,
}

/// kit's poison reason for a payload that is not a contract event.
fn reason(e: &EventError) -> &'static str {
    match e {
        EventError::Kind(_) => "unknown_kind",
        EventError::Json(_) | EventError::Record(_) => "bad_payload",
    }
}

impl<H: Handler> Worker<H> {
    /// Applies `batch` (in stream order, every sequence above the position) in one
    /// transaction; on success the position is the batch's last message, or `through` if
    /// that is higher (messages passed over without reaching the handler).
    pub fn apply(&mut self, batch: &[Raw], through: u64) -> Result<Applied, ApplyError> {
        let result = self.try_apply(batch, through);
        match &result {
            Ok(_) => self.handler.committed(),
            Err(_) => self.handler.rolled_back(),
        }
        result
    }

    fn try_apply(&mut self, batch: &[Raw], through: u64) -> Result<Applied, ApplyError> {
        let tx = self.conn.transaction()?;
        let mut out = Applied::default();
        let mut next = self.position.clone();
        for raw in batch {
            next.seq = raw.seq;
            let event = match Event::parse(&raw.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(seq = raw.seq, subject = %raw.subject, error = %e, "poison message: terminated");
                    out.poison.push((raw.seq, reason(&e)));
                    continue;
                }
            };
            next.time_us = Some(event.time_us);
            if next
                .rebuilding
                .is_some_and(|r| r.counted(raw.seq, event.time_us))
            {
                out.kept += 1;
                continue;
            }
            let msg = Msg {
                seq: raw.seq,
                subject: &raw.subject,
                event,
                payload: &raw.payload,
                stored_ns: raw.stored_ns,
            };
            match self.handler.handle(&tx, &msg) {
                Ok(()) => {}
                Err(HandleError::Poison(why)) => {
                    tracing::warn!(seq = raw.seq, subject = %raw.subject, reason = why, "poison message: terminated");
                    out.poison.push((raw.seq, why));
                }
                Err(HandleError::Transient(e)) => return Err(ApplyError::Transient(e)),
            }
        }
        next.seq = next.seq.max(through);
        if next.rebuilding.is_some_and(|r| next.seq >= r.until_seq) {
            tracing::info!(
                seq = next.seq,
                "rebuild caught up with the position it started from"
            );
            next.rebuilding = None;
        }
        self.handler.flush(&tx)?;
        state::save(&tx, &next)?;
        tx.commit()?;
        self.position = next;
        Ok(out)
    }

    /// Creates the handler's tables.
    pub fn init(&mut self) -> Result<(), rusqlite::Error> {
        let tx = self.conn.transaction()?;
        self.handler.init(&tx)?;
        tx.commit()
    }

    /// Rebuild: the handler forgets what `from` says, and the new position (`start - 1`,
    /// with the rebuild marker for [`Rebuild::Since`]) is committed with it. A rebuild
    /// started while another is in progress covers both: from the earlier time, keeping
    /// the later position.
    pub fn rebuild(&mut self, from: Rebuild, start: u64) -> Result<Rebuild, rusqlite::Error> {
        let (from, marker) = match (from, self.position.rebuilding) {
            (Rebuild::All, _) => (Rebuild::All, None),
            (Rebuild::Since(t), None) => (
                Rebuild::Since(t),
                Some(Rebuilding {
                    from_us: t,
                    until_seq: self.position.seq,
                }),
            ),
            (Rebuild::Since(t), Some(r)) => {
                let from_us = t.min(r.from_us);
                (
                    Rebuild::Since(from_us),
                    Some(Rebuilding {
                        from_us,
                        until_seq: r.until_seq.max(self.position.seq),
                    }),
                )
            }
        };
        let tx = self.conn.transaction()?;
        self.handler.rebuild(&tx, from)?;
        let mut next = self.position.clone();
        next.rebuilding = marker;
        next.seq = start.saturating_sub(1);
        if from == Rebuild::All {
            next.time_us = None;
        }
        state::save(&tx, &next)?;
        tx.commit()?;
        self.position = next;
        Ok(from)
    }
}
