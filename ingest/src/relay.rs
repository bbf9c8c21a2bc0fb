//! The relay connection: one WebSocket to `com.atproto.sync.subscribeRepos`, read frame
//! by frame, decoded in place, handed to the publisher through a bounded channel.
//!
//! The channel is the backpressure: when JetStream is slower than the relay, `send`
//! waits, this task stops reading the socket, and TCP pushes back on the relay. Nothing
//! here buffers without bound.
//!
//! What ends a connection, and what happens next (always: log once, count, back off with
//! jitter, reconnect from the last seq read):
//! - the socket closes or errors, or stays idle past `relay.idle_timeout`;
//! - an error frame: `FutureCursor` (our cursor is ahead of the relay), `ConsumerTooSlow`,
//!   or any other.
//!
//! `#info OutdatedCursor` is logged and counted; the relay goes on from its oldest event.

use crate::config::Relay as RelayConfig;
use crate::metrics::{Metrics, Reconnect};
use firehose::{Control, Decoded, SkipReason};
use futures_util::StreamExt;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// One relay frame's worth of messages, in relay order.
#[derive(Debug)]
pub struct Batch {
    pub seq: i64,
    pub messages: Vec<firehose::Message>,
}

/// Reads the relay until `shutdown`, reconnecting as needed. `cursor` is the seq to
/// resume after (`None`: the relay's live tail).
pub async fn run(
    config: RelayConfig,
    mut cursor: Option<i64>,
    tx: mpsc::Sender<Batch>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
    loop {
        let url = subscribe_url(&config.url, cursor);
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_frame_bytes))
            .max_frame_size(Some(config.max_frame_bytes));
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), true);
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connect => match r {
                Ok((ws, _)) => {
                    info!(url = %url, "connected to relay");
                    read(ws, &config, &mut cursor, &tx, &metrics, &shutdown, &mut backoff).await
                }
                Err(e) => End::Reconnect(Reconnect::ConnectFailed, e.to_string()),
            },
        };
        match outcome {
            End::Shutdown => return,
            End::Reconnect(reason, detail) => {
                metrics.reconnect(reason);
                let delay = backoff.next_delay();
                warn!(reason = reason.as_str(), detail = %detail, cursor = ?cursor, retry_in_ms = delay.as_millis() as u64, "relay connection ended; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

enum End {
    Shutdown,
    Reconnect(Reconnect, String),
}

fn subscribe_url(base: &str, cursor: Option<i64>) -> String {
    let base = base.trim_end_matches('/');
    match cursor {
        Some(c) => format!("{base}/xrpc/com.atproto.sync.subscribeRepos?cursor={c}"),
        None => format!("{base}/xrpc/com.atproto.sync.subscribeRepos"),
    }
}

async fn read<S>(
    mut ws: S,
    config: &RelayConfig,
    cursor: &mut Option<i64>,
    tx: &mpsc::Sender<Batch>,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> End
where
    S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            n = tokio::time::timeout(config.idle_timeout, ws.next()) => n,
        };
        let bytes = match next {
            Err(_) => {
                return End::Reconnect(
                    Reconnect::Idle,
                    format!("no frame for {:?}", config.idle_timeout),
                )
            }
            Ok(None) => return End::Reconnect(Reconnect::Closed, "relay closed the stream".into()),
            Ok(Some(Err(e))) => {
                use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
                return match e {
                    Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                        metrics.skip(SkipReason::FrameTooLarge);
                        End::Reconnect(
                            Reconnect::FrameTooLarge,
                            format!(
                                "frame of {size} bytes is above relay.max_frame_bytes = {max_size}"
                            ),
                        )
                    }
                    Error::ConnectionClosed | Error::AlreadyClosed => {
                        End::Reconnect(Reconnect::Closed, e.to_string())
                    }
                    other => End::Reconnect(Reconnect::IoError, other.to_string()),
                };
            }
            Ok(Some(Ok(WsMessage::Binary(b)))) => b,
            Ok(Some(Ok(WsMessage::Close(frame)))) => {
                return End::Reconnect(Reconnect::Closed, format!("close frame {frame:?}"))
            }
            Ok(Some(Ok(_))) => continue, // ping/pong/text: tungstenite answers pings itself
        };
        let event = match firehose::decode(&bytes) {
            Decoded::Event(e) => e,
            Decoded::Control(control) => {
                if let Some(end) = on_control(&control, metrics, *cursor) {
                    return end;
                }
                continue;
            }
            Decoded::Skipped { seq, error } => {
                metrics.skip(error.reason());
                warn!(reason = error.reason().as_str(), error = %error, seq = ?seq, after_seq = ?cursor, bytes = bytes.len(), "skipping malformed frame");
                continue;
            }
        };
        match on_event(event, cursor, metrics) {
            Some(batch) => {
                backoff.reset();
                tokio::select! {
                    _ = shutdown.cancelled() => return End::Shutdown,
                    r = tx.send(batch) => if r.is_err() { return End::Shutdown },
                }
            }
            None => continue,
        }
    }
}

fn on_control(control: &Control, metrics: &Metrics, cursor: Option<i64>) -> Option<End> {
    metrics
        .events
        .get_or_create(&crate::metrics::KindLabel {
            kind: control.kind().as_str(),
        })
        .inc();
    match control {
        Control::Info { name, message } => {
            metrics.relay_infos.inc();
            warn!(name = %name, message = ?message, cursor = ?cursor, "relay #info");
            None
        }
        Control::Error { error, message } => {
            let reason = match error.as_str() {
                "FutureCursor" => Reconnect::FutureCursor,
                "ConsumerTooSlow" => Reconnect::ConsumerTooSlow,
                _ => Reconnect::RelayError,
            };
            Some(End::Reconnect(
                reason,
                format!("error frame {error}: {}", message.as_deref().unwrap_or("")),
            ))
        }
    }
}

/// Counts a decoded event and turns it into a batch, or drops it when its seq is not
/// past the cursor (the relay re-sent something we already have).
fn on_event(d: firehose::Event, cursor: &mut Option<i64>, metrics: &Metrics) -> Option<Batch> {
    let seq = d.seq;
    if cursor.is_some_and(|c| seq <= c) {
        metrics.skip(SkipReason::StaleSeq);
        debug!(seq, cursor = ?cursor, "frame at or below the cursor; dropped");
        return None;
    }
    *cursor = Some(seq);
    metrics
        .events
        .get_or_create(&crate::metrics::KindLabel {
            kind: d.kind.as_str(),
        })
        .inc();
    metrics.relay_seq.set(seq);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    metrics.lag_seconds.set((now - d.time_us) as f64 / 1e6);
    for skip in &d.skipped {
        metrics.skip(skip.reason);
        warn!(seq, reason = skip.reason.as_str(), path = %skip.path, "skipping op");
    }
    if d.too_big {
        warn!(
            seq,
            ops = d.messages.len(),
            "tooBig commit: ops published without records"
        );
    }
    Some(Batch {
        seq,
        messages: d.messages,
    })
}

/// Exponential backoff with jitter: each delay is drawn between `min / 2` and a ceiling
/// that starts at `min` and doubles up to `max`.
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: SmallRng,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        // Seeded per process, so several ingestors do not retry in lockstep.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Backoff {
            min,
            max,
            current: min,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let span = ceiling.saturating_sub(self.min / 2).as_millis() as u64;
        self.min / 2 + Duration::from_millis(self.rng.random_range(0..=span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let delays: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_millis(50) && *d <= Duration::from_millis(800)));
        assert_eq!(b.current, Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn url_carries_the_cursor() {
        assert_eq!(
            subscribe_url("ws://127.0.0.1:1/", Some(5)),
            "ws://127.0.0.1:1/xrpc/com.atproto.sync.subscribeRepos?cursor=5"
        );
        assert_eq!(
            subscribe_url("wss://bsky.network", None),
            "wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos"
        );
    }
}
