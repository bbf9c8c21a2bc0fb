//! The recovery round: after a lost, refused or unanswered publish, find where the stream
//! really ends, check that its last message is this ingestor's, and send the rest again in
//! order (per message, or in a new batch).

use super::ack::{Failure, Retry};
use super::window::{Window, BACKOFF_MAX};
use super::{PublishError, Publisher, SEQ_HEADER};
use crate::cursor::Position;
use async_nats::jetstream::context::GetStreamError;
use async_nats::jetstream::stream::{DirectGetError, InfoError};
use futures_util::StreamExt;
use service::telemetry::Chain;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// JetStream could not say where the stream ends (unavailable, stalled, electing a
/// leader): the next round asks again.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("looking up the stream")]
    Stream(#[from] GetStreamError),
    #[error("reading the stream's state")]
    Info(#[from] InfoError),
    #[error("reading back the stream's last message")]
    Read(#[from] DirectGetError),
}

impl Publisher {
    /// One recovery round (see the module docs).
    pub(super) async fn recover(
        &self,
        w: &mut Window,
        acks: &mut async_nats::Subscriber,
        reason: &Retry,
        cursor: &watch::Sender<Position>,
        shutdown: &CancellationToken,
    ) -> Result<(), PublishError> {
        self.metrics.publish_rounds.inc();
        // Whatever the open batch still says, the stream is asked instead.
        w.open = None;
        if let Some(suppressed) = w.warn.allow() {
            warn!(reason = %Chain(reason), unacked = w.unacked, suppressed, "JetStream publish failed; checking what the stream holds, then sending the rest again in order");
        }
        // Back off once per round, taking the acks that still arrive.
        let pause = tokio::time::sleep(w.backoff);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                _ = shutdown.cancelled() => return Ok(()),
                Some(ack) = acks.next() => {
                    if let Err(Failure::Permanent { code, description }) = self.on_ack(w, &ack) {
                        return Err(self.permanent(code, description));
                    }
                    self.complete_front(w, cursor);
                }
            }
        }
        w.backoff = (w.backoff * 2).min(BACKOFF_MAX);
        let last = match self.stream_last().await {
            Ok(last) => last,
            Err(e) => {
                if let Some(suppressed) = w.warn.allow() {
                    warn!(error = %Chain(&e), suppressed, "JetStream unavailable; retrying");
                }
                // Nothing is sent while the stream cannot be asked: the next round will.
                w.round += 1;
                return Ok(());
            }
        };
        let first = w
            .pending
            .iter()
            .find_map(|p| p.msg.as_ref().map(|m| m.stream_seq))
            .unwrap_or(w.next_seq);
        if last + 1 < first {
            return Err(PublishError::WentBack {
                stream: self.stream.clone(),
                last,
                stored: first - 1,
            });
        }
        if last >= w.next_seq {
            return Err(PublishError::OtherWriter {
                stream: self.stream.clone(),
                last,
            });
        }
        if last >= first {
            match self.is_ours(w, last).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(PublishError::Foreign {
                        stream: self.stream.clone(),
                        seq: last,
                    })
                }
                Err(e) => {
                    // Not readable right now: the next round checks again.
                    info!(seq = last, error = %Chain(&e), "could not read back the stream's last message");
                    w.round += 1;
                    return Ok(());
                }
            }
        }
        self.mark_acked(w, last);
        self.complete_front(w, cursor);
        w.round += 1;
        let resent = w
            .pending
            .iter()
            .take(w.send_at)
            .filter(|p| p.msg.as_ref().is_some_and(|m| !m.acked))
            .count();
        self.metrics.publish_retries.inc_by(resent as u64);
        w.send_at = 0;
        if let Err(Failure::Retry(e)) = self.pump(w).await {
            info!(error = %Chain(&e), "resend interrupted; the next round goes on");
        }
        Ok(())
    }

    /// The stream's last sequence, asked of JetStream.
    async fn stream_last(&self) -> Result<u64, Unavailable> {
        let stream = self.js.get_stream_no_info(&self.stream).await?;
        Ok(stream.get_info().await?.state.last_sequence)
    }

    /// Whether the message at `seq` is the one this ingestor sent there.
    async fn is_ours(&self, w: &Window, seq: u64) -> Result<bool, Unavailable> {
        let Some(ours) = w
            .pending
            .iter()
            .find_map(|p| p.msg.as_ref().filter(|m| m.stream_seq == seq))
        else {
            return Ok(true);
        };
        let stream = self.js.get_stream_no_info(&self.stream).await?;
        let held = stream.direct_get(seq).await?;
        let relay = held
            .headers
            .get(SEQ_HEADER)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        Ok(held.subject == ours.subject
            && relay == *ours.relay_seq_text
            && held.payload == ours.payload)
    }
}
