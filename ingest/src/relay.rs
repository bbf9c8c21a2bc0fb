//! The relay connection: one WebSocket to `com.atproto.sync.subscribeRepos`, read frame
//! by frame, decoded in place, handed to the publisher through a bounded channel.
//!
//! The channel is the backpressure: when JetStream is slower than the relay, `send`
//! waits, this task stops reading the socket, and TCP pushes back on the relay. Nothing
//! here buffers without bound.
//!
//! What ends a connection, and what happens next (log, count, back off with jitter,
//! reconnect after the last seq read):
//! - the socket closes or errors, or stays idle past `relay.idle_timeout`;
//! - an error frame: `ConsumerTooSlow`, or any other;
//! - `FutureCursor` (our cursor is ahead of the relay): the relay reset its sequence or
//!   another relay answers at this URL. After `relay.future_cursor_limit` such answers in
//!   a row the reader stops with [`RelayError::FutureCursor`]: the process exits non-zero
//!   rather than loop silently.
//!
//! A frame above `relay.max_frame_bytes` is skipped (counted, logged with its seq) and
//! reading goes on after it: the WebSocket layer accepts twice that, so the frame arrives
//! whole and its seq can be read. One even larger breaks the connection; the reader then
//! asks for the events after the seq that follows the last one read, so it is not
//! requested again forever.
//!
//! `#info OutdatedCursor` is logged and counted; the relay goes on from its oldest event.

use crate::config::Relay as RelayConfig;
use crate::metrics::{Metrics, Reconnect};
use crate::resume::StoredUntil;
use firehose::{Control, Decoded, SkipReason};
use futures_util::StreamExt;
use service::backoff::Backoff;
use service::nats::redact;
use service::telemetry::{Chain, RateLimit};
use std::time::Duration;
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

/// What stops the reader for good.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The relay keeps answering `FutureCursor`.
    #[error(
        "the relay answered FutureCursor to cursor {cursor} on {tries} connections in a row: it \
         reset its sequence numbers, or another relay answers at {url}. Set relay.start_cursor \
         (or remove the stored cursor: nats kv del <cursor.bucket> <cursor key>), then restart"
    )]
    FutureCursor {
        /// The cursor asked for.
        cursor: i64,
        /// How many times.
        tries: u32,
        /// The relay (redacted).
        url: String,
    },
}

/// The relay URL as compared with the stored one: no user-info, lower-case scheme and
/// host, no default port, no trailing slash.
pub fn normalize_url(raw: &str) -> String {
    let Ok(mut u) = url::Url::parse(raw.trim()) else {
        return raw.trim().trim_end_matches('/').to_string();
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let default = match u.scheme() {
        "ws" => Some(80),
        "wss" => Some(443),
        _ => None,
    };
    if u.port().is_some() && u.port() == default {
        let _ = u.set_port(None);
    }
    u.as_str().trim_end_matches('/').to_string()
}

/// Reads the relay until `shutdown`, reconnecting as needed. `cursor` is the seq to resume
/// after (`None`: the relay's live tail); frames up to `stored_until` are not sent again.
pub async fn run(
    config: RelayConfig,
    cursor: Option<i64>,
    stored_until: Option<StoredUntil>,
    tx: mpsc::Sender<Batch>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    let mut reader = Reader {
        backoff: Backoff::new(config.reconnect_min, config.reconnect_max),
        config,
        cursor,
        stored_until,
        tx,
        metrics,
        future_cursors: 0,
        warn_skip: RateLimit::new(Duration::from_secs(5)),
    };
    loop {
        let url = subscribe_url(&reader.config.url, reader.cursor);
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(reader.config.max_frame_bytes * 2))
            .max_frame_size(Some(reader.config.max_frame_bytes * 2));
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), true);
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = connect => match r {
                Ok((ws, _)) => {
                    info!(url = %redact(&url), "connected to relay");
                    reader.read(ws, &shutdown).await
                }
                Err(e) => End::Reconnect(Reconnect::ConnectFailed, e.to_string()),
            },
        };
        match outcome {
            End::Shutdown => return Ok(()),
            End::Reconnect(reason, detail) => {
                reader.metrics.reconnect(reason);
                if reason == Reconnect::FutureCursor {
                    reader.future_cursors += 1;
                    if reader.future_cursors >= reader.config.future_cursor_limit {
                        return Err(RelayError::FutureCursor {
                            cursor: reader.cursor.unwrap_or(0),
                            tries: reader.future_cursors,
                            url: redact(&reader.config.url),
                        });
                    }
                }
                let delay = reader.backoff.next_delay();
                warn!(reason = reason.as_str(), detail = %redact(&detail), cursor = ?reader.cursor, retry_in_ms = delay.as_millis() as u64, "relay connection ended; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
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

struct Reader {
    config: RelayConfig,
    /// The last seq read (the next connection asks for what follows).
    cursor: Option<i64>,
    stored_until: Option<StoredUntil>,
    tx: mpsc::Sender<Batch>,
    metrics: Metrics,
    backoff: Backoff,
    /// `FutureCursor` answers since the last event.
    future_cursors: u32,
    warn_skip: RateLimit,
}

impl Reader {
    async fn read<S>(&mut self, mut ws: S, shutdown: &CancellationToken) -> End
    where
        S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown,
                n = tokio::time::timeout(self.config.idle_timeout, ws.next()) => n,
            };
            let bytes = match next {
                Err(_) => {
                    return End::Reconnect(
                        Reconnect::Idle,
                        format!("no frame for {:?}", self.config.idle_timeout),
                    )
                }
                Ok(None) => {
                    return End::Reconnect(Reconnect::Closed, "relay closed the stream".into())
                }
                Ok(Some(Err(e))) => return self.on_socket_error(e),
                Ok(Some(Ok(WsMessage::Binary(b)))) => b,
                Ok(Some(Ok(WsMessage::Close(frame)))) => {
                    return End::Reconnect(Reconnect::Closed, format!("close frame {frame:?}"))
                }
                Ok(Some(Ok(_))) => continue, // ping/pong/text: tungstenite answers pings itself
            };
            if bytes.len() > self.config.max_frame_bytes {
                let seq = firehose::frame_seq(&bytes);
                self.metrics.skip(SkipReason::FrameTooLarge);
                if let Some(suppressed) = self.warn_skip.allow() {
                    warn!(seq = ?seq, bytes = bytes.len(), max = self.config.max_frame_bytes, suppressed, "skipping a frame above relay.max_frame_bytes");
                }
                if let Some(s) = seq {
                    self.cursor = Some(self.cursor.map_or(s, |c| c.max(s)));
                }
                continue;
            }
            let event = match firehose::decode(&bytes) {
                Decoded::Event(e) => e,
                Decoded::Control(control) => {
                    if let Some(end) = self.on_control(&control) {
                        return end;
                    }
                    continue;
                }
                Decoded::Skipped { seq, error } => {
                    self.metrics.skip(error.reason());
                    if let Some(suppressed) = self.warn_skip.allow() {
                        warn!(reason = error.reason().as_str(), error = %Chain(&error), seq = ?seq, after_seq = ?self.cursor, bytes = bytes.len(), suppressed, "skipping malformed frame");
                    }
                    if let Some(s) = seq {
                        self.cursor = Some(self.cursor.map_or(s, |c| c.max(s)));
                    }
                    continue;
                }
            };
            if let Some(batch) = self.on_event(event) {
                self.backoff.reset();
                self.future_cursors = 0;
                tokio::select! {
                    _ = shutdown.cancelled() => return End::Shutdown,
                    r = self.tx.send(batch) => if r.is_err() { return End::Shutdown },
                }
            }
        }
    }

    fn on_socket_error(&mut self, e: tokio_tungstenite::tungstenite::Error) -> End {
        use tokio_tungstenite::tungstenite::error::{CapacityError, Error};
        match e {
            Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                self.metrics.skip(SkipReason::FrameTooLarge);
                // Its seq is unknown: the next one after the last read is the best guess,
                // so a connection never asks for the same giant frame forever.
                self.cursor = self.cursor.map(|c| c + 1);
                End::Reconnect(
                    Reconnect::FrameTooLarge,
                    format!("a frame of {size} bytes is above the {max_size} the connection accepts (twice relay.max_frame_bytes); skipping to after seq {:?}", self.cursor),
                )
            }
            Error::ConnectionClosed | Error::AlreadyClosed => {
                End::Reconnect(Reconnect::Closed, e.to_string())
            }
            other => End::Reconnect(Reconnect::IoError, other.to_string()),
        }
    }

    fn on_control(&mut self, control: &Control) -> Option<End> {
        self.metrics
            .events
            .get_or_create(&crate::metrics::KindLabel {
                kind: control.kind().as_str(),
            })
            .inc();
        match control {
            Control::Info { name, message } => {
                self.metrics.relay_infos.inc();
                warn!(name = %name, message = ?message, cursor = ?self.cursor, "relay #info");
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

    /// Counts a decoded event and turns it into a batch; drops it when its seq is not past
    /// the cursor (the relay re-sent something we already have) or when the stream already
    /// holds it (`stored_until`).
    fn on_event(&mut self, mut d: firehose::Event) -> Option<Batch> {
        let seq = d.seq;
        if self.cursor.is_some_and(|c| seq <= c) {
            self.metrics.skip(SkipReason::StaleSeq);
            debug!(seq, cursor = ?self.cursor, "frame at or below the cursor; dropped");
            return None;
        }
        self.cursor = Some(seq);
        self.metrics
            .events
            .get_or_create(&crate::metrics::KindLabel {
                kind: d.kind.as_str(),
            })
            .inc();
        self.metrics.relay_seq.set(seq);
        self.metrics.last_event_us.set(d.time_us);
        for skip in &d.skipped {
            self.metrics.skip(skip.reason);
            if let Some(suppressed) = self.warn_skip.allow() {
                warn!(seq, reason = skip.reason.as_str(), path = %skip.path, suppressed, "skipping op");
            }
        }
        if d.too_big {
            warn!(
                seq,
                ops = d.messages.len(),
                "tooBig commit: ops published without records"
            );
        }
        if let Some(until) = self.stored_until {
            if seq > until.frame {
                self.stored_until = None;
            } else {
                let held = if seq < until.frame {
                    d.messages.len()
                } else {
                    until.ops.min(d.messages.len())
                };
                d.messages.drain(..held);
                self.metrics.already_stored.inc_by(held as u64);
            }
        }
        Some(Batch {
            seq,
            messages: d.messages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn urls_compare_after_normalising() {
        for same in [
            "wss://bsky.network",
            "wss://bsky.network/",
            "wss://bsky.network:443",
            "WSS://BSKY.network:443/",
            "wss://user:secret@bsky.network",
        ] {
            assert_eq!(normalize_url(same), "wss://bsky.network", "{same}");
        }
        assert_eq!(normalize_url("ws://127.0.0.1:80/"), "ws://127.0.0.1");
        assert_eq!(normalize_url("ws://127.0.0.1:2470"), "ws://127.0.0.1:2470");
        assert_ne!(
            normalize_url("wss://relay.one"),
            normalize_url("wss://relay.two")
        );
    }
}
