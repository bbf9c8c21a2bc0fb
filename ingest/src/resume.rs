//! Where to start: the stream is the truth, the stored cursor fills in what it cannot say.
//!
//! The publisher keeps the stream in strict relay order, each message carrying the relay
//! seq of its frame in `Bsky-Seq` (see `publish.rs`). So the last message the stream holds
//! says it all: if it belongs to frame X and the k messages before it in the stream do
//! too, every frame before X is stored whole and frame X's first k+1 ops are. The relay is
//! asked for frame X again and those ops are not sent twice. This holds however long the
//! ingestor was down, whatever the stored cursor says, and whether the stream is ahead of
//! the cursor (the usual unsaved second) or behind it (a lost tail, a restored backup).
//!
//! Without any message (a new, purged or expired stream) the stored cursor says where to
//! go on. A stream that lost messages this ingestor had stored, or was recreated, is a fact
//! to report, once: a log line and `bsky_ingest_stream_gap_messages_total`.
//!
//! Reading it costs a few direct gets (at most one frame's ops), whatever the stream holds.

use crate::cursor::{Position, Stored};
use async_nats::jetstream::stream::{DirectGetError, DirectGetErrorKind, Info, Stream};
use contract::header::SEQ as SEQ_HEADER;
use tracing::{info, warn};

/// Frames already in the stream, as far as the start goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredUntil {
    /// Frames with a lower relay seq are stored whole.
    pub frame: i64,
    /// Of this frame, the first `ops` messages are stored.
    pub ops: usize,
}

/// The plan for this start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Ask the relay for events after this seq (`None`: its live tail).
    pub relay_cursor: Option<i64>,
    /// What not to publish again.
    pub stored_until: Option<StoredUntil>,
    /// The stream's last sequence: the first publish expects it.
    pub last_sequence: u64,
    /// Where the cursor starts.
    pub position: Position,
    /// Messages this ingestor had stored that the stream no longer holds.
    pub gap: u64,
}

/// Why the plan could not be made: JetStream did not answer (retry, or stop at start).
#[derive(Debug, thiserror::Error)]
#[error("reading the stream's last messages (message {seq})")]
pub struct ResumeError {
    /// The stream sequence asked for (0: the last message of the stream).
    pub seq: u64,
    /// What JetStream said.
    #[source]
    pub source: DirectGetError,
}

/// The stream message at `seq`'s relay seq, `None` if it is gone or has no `Bsky-Seq`.
async fn frame_of(stream: &Stream, seq: u64) -> Result<Option<i64>, ResumeError> {
    match stream.direct_get(seq).await {
        Ok(m) => Ok(relay_seq(&m.headers)),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(source) => Err(ResumeError { seq, source }),
    }
}

fn relay_seq(headers: &async_nats::HeaderMap) -> Option<i64> {
    headers.get(SEQ_HEADER)?.as_str().parse().ok()
}

/// The last message the stream holds: (its stream sequence, its frame's relay seq), and how
/// many messages of the same frame come right before it.
async fn last_frame(
    stream: &Stream,
    info: &Info,
) -> Result<Option<(u64, i64, usize)>, ResumeError> {
    if info.state.messages == 0 {
        return Ok(None);
    }
    let last = match stream
        .direct_get_last_for_subject(contract::subject::ALL)
        .await
    {
        Ok(m) => m,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ResumeError { seq: 0, source }),
    };
    let Some(frame) = relay_seq(&last.headers) else {
        warn!(
            seq = last.sequence,
            "the stream's last message has no {SEQ_HEADER} header (not published by ingest?)"
        );
        return Ok(None);
    };
    let mut before = 0;
    let mut seq = last.sequence;
    while before < contract::limits::MAX_OPS && seq > info.state.first_sequence {
        seq -= 1;
        if frame_of(stream, seq).await? != Some(frame) {
            break;
        }
        before += 1;
    }
    Ok(Some((last.sequence, frame, before)))
}

/// Microseconds since the epoch of the stream's creation.
pub fn created_us(info: &Info) -> i64 {
    (info.created.unix_timestamp_nanos() / 1000) as i64
}

/// Works out the start from the stream, the stored record and the configuration.
pub async fn plan(
    stream: &Stream,
    info: &Info,
    stored: Option<&Stored>,
    relay: &str,
    start_cursor: Option<i64>,
) -> Result<Start, ResumeError> {
    let last_sequence = info.state.last_sequence;
    let same_relay = stored.is_none_or(|s| s.relay == relay);
    if !same_relay {
        if let Some(s) = stored {
            warn!(stored_relay = %s.relay, relay = %relay, "the stored cursor belongs to another relay (their seq numbers differ): starting from this relay's live tail, or relay.start_cursor");
        }
    }
    let held = if same_relay {
        last_frame(stream, info).await?
    } else {
        None
    };

    // Messages this ingestor stored that the stream no longer holds.
    let mut gap = 0;
    if let Some(s) = stored.filter(|s| s.relay_seq.is_some()) {
        let recreated = s.stream_created_us.is_some_and(|c| c != created_us(info));
        let held_last = held.map_or(0, |h| h.0);
        if recreated {
            gap = s.stream_seq;
            warn!(stored_up_to = s.stream_seq, "the stream was deleted and created again since the cursor was stored: it lacks the messages this ingestor had stored");
        } else if last_sequence < s.stream_seq {
            gap = s.stream_seq - last_sequence;
            warn!(stream_last = last_sequence, stored_up_to = s.stream_seq, "the stream ends below the stored cursor (restored from a backup, or a server lost its unsynced tail): it lacks messages this ingestor had stored");
        } else if held.is_some() && held_last < s.stream_seq {
            gap = s.stream_seq - held_last;
            warn!(held_last, stored_up_to = s.stream_seq, "the stream's last messages were deleted: it lacks messages this ingestor had stored");
        } else if held.is_none() && info.state.messages == 0 && last_sequence > 0 {
            info!(stream_last = last_sequence, "the stream holds no message (purged, or expired by max_age): going on from the stored cursor");
        }
        if gap > 0 {
            warn!(missing = gap, "stream gap: these messages are not in the stream any more; counted in bsky_ingest_stream_gap_messages_total");
        }
    }

    let start = match held {
        Some((seq, frame, before)) => {
            let stored_until = StoredUntil {
                frame,
                ops: before + 1,
            };
            Start {
                relay_cursor: start_cursor.or(Some(frame - 1)),
                stored_until: Some(stored_until),
                last_sequence,
                position: Position {
                    relay_seq: Some(frame - 1),
                    stream_seq: seq - (before as u64) - 1,
                },
                gap,
            }
        }
        None => {
            let relay_seq = if same_relay {
                stored.and_then(|s| s.relay_seq)
            } else {
                None
            };
            Start {
                relay_cursor: start_cursor.or(relay_seq),
                stored_until: None,
                last_sequence,
                position: Position {
                    relay_seq,
                    stream_seq: last_sequence,
                },
                gap,
            }
        }
    };
    Ok(start)
}
