//! Where a rebuild from an event time starts (`--from-time`, [`crate::Start::FromTime`]):
//! sought in the stream when it reaches back that far, else in the archive
//! ([`crate::history`]); refused, with the times in RFC 3339, when neither does, since the
//! state between would be deleted and never counted again.

use crate::config;
use crate::history::{History, Since};
use crate::run::RunError;
use async_nats::jetstream::{self, stream::Stream};

/// The first stream sequence a rebuild from event time `from` must read (`None`: the live
/// tail). By storage time for a handler that bounds the clock skew
/// ([`crate::Handler::clock_skew_bound`]), else by event time less `consumer.seek_margin`.
pub(crate) async fn seek_time(
    stream: &Stream,
    state: &jetstream::stream::State,
    cfg: &config::Consumer,
    history: Option<&dyn History>,
    clock_skew_bound: Option<i64>,
    from: i64,
) -> Result<Option<u64>, RunError> {
    let (since, reaches) = match clock_skew_bound {
        Some(bound) => {
            let since = from.saturating_sub(bound);
            let reaches = check_holds(stream, state, from, since).await;
            (Since::StoredTime(since), reaches)
        }
        None => {
            let margin = i64::try_from(cfg.seek_margin.as_micros()).unwrap_or(i64::MAX);
            let reaches = check_reaches(stream, state, from).await;
            (Since::EventTime(from.saturating_sub(margin)), reaches)
        }
    };
    let seek = match (reaches, history) {
        (Ok(()), _) => None,
        (Err(refused), None) => return Err(refused),
        (Err(_), Some(history)) => seek_history(history, since, from).await?,
    };
    match seek {
        Some(seq) => Ok(Some(seq)),
        None => seek_stream(stream, since)
            .await
            .map_err(|e| RunError::Stream {
                stream: cfg.stream.clone(),
                source: e.into(),
            }),
    }
}

/// Refuses a `--from-time` older than the stream's oldest event: the state between would
/// be deleted and never counted again.
async fn check_reaches(
    stream: &Stream,
    state: &jetstream::stream::State,
    from: i64,
) -> Result<(), RunError> {
    if state.messages == 0 {
        return Ok(());
    }
    let oldest = stream
        .direct_get_next_for_subject(contract::subject::ALL, Some(state.first_sequence))
        .await
        .ok()
        .and_then(|m| crate::event::time_us(&m.payload).ok());
    match oldest {
        Some(oldest) if oldest > from => Err(RunError::Rebuild(format!(
            "the stream's oldest event is dated {}, after {}: the state between would be \
             lost; give a later time",
            crate::seek::rfc3339(oldest),
            crate::seek::rfc3339(from)
        ))),
        _ => Ok(()),
    }
}

/// Where `since` starts in the stream.
async fn seek_stream(stream: &Stream, since: Since) -> Result<Option<u64>, crate::seek::SeekError> {
    match since {
        Since::Seq(n) => Ok(Some(n)),
        Since::EventTime(t) => crate::seek::seq_at_time(stream, t).await,
        Since::StoredTime(t) => crate::seek::seq_at_stored_time(stream, t).await,
    }
}

/// Where `since` starts in the archive, for a `--from-time` (`from`) the stream no longer
/// reaches: refused, as by the stream, when the archive does not reach back either (it
/// began after sequence 1 and its oldest message is younger); `None` when every archived
/// message is older (the stream has the start).
async fn seek_history(
    history: &dyn History,
    since: Since,
    from: i64,
) -> Result<Option<u64>, RunError> {
    let first = history.first().await.map_err(RunError::History)?;
    let reaches = first.as_ref().is_some_and(|k| {
        k.seq <= 1
            || match since {
                Since::Seq(n) => k.seq <= n,
                Since::StoredTime(t) => k.stored_ns / 1000 <= t,
                Since::EventTime(_) => crate::event::time_us(&k.payload).is_ok_and(|t| t <= from),
            }
    });
    if !reaches {
        return Err(RunError::Rebuild(format!(
            "neither the stream nor the archive ({}) reaches back to {}: the state between \
             would be lost; give a later time",
            history.describe(),
            crate::seek::rfc3339(from)
        )));
    }
    let mut reader = history.read(since).await.map_err(RunError::History)?;
    Ok(reader
        .next()
        .await
        .map_err(RunError::History)?
        .map(|k| k.seq))
}

/// For a handler with a clock-skew bound: refuses a `--from-time` whose messages (those
/// stored at or after `since`) the stream no longer holds all of: it dropped messages
/// (its first sequence is above 1) and its oldest one was stored after `since`. A stream
/// that never dropped anything holds every message, however early `from` is.
async fn check_holds(
    stream: &Stream,
    state: &jetstream::stream::State,
    from: i64,
    since: i64,
) -> Result<(), RunError> {
    if state.messages == 0 || state.first_sequence <= 1 {
        return Ok(());
    }
    let oldest = stream
        .direct_get_next_for_subject(contract::subject::ALL, Some(state.first_sequence))
        .await
        .ok()
        .map(|m| crate::seek::stored_us(m.time));
    match oldest {
        Some(oldest) if oldest > since => Err(RunError::Rebuild(format!(
            "the stream dropped its messages stored before {} (retention), and a rebuild \
             from {} needs those stored from {} on: the figures between would be lost; \
             give a later time",
            crate::seek::rfc3339(oldest),
            crate::seek::rfc3339(from),
            crate::seek::rfc3339(since)
        ))),
        _ => Ok(()),
    }
}
