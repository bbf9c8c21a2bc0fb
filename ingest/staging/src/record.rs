//! Records a relay's `subscribeRepos` stream into a capture file.
//!
//! Each WebSocket binary message is written byte for byte (never decoded and re-encoded);
//! its `seq` is only read, for the report. Recording stops at the first of: the frame limit,
//! the time limit, the shutdown future (Ctrl-C in the binary), or the relay closing.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::capture::{CaptureError, CaptureWriter};
use crate::frame;
use crate::{MAX_RECEIVED_FRAME_BYTES, SUBSCRIBE_REPOS_PATH};

/// The public Bluesky relay.
pub const DEFAULT_RELAY: &str = "wss://bsky.network";

/// What to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Relay URL: `ws://` or `wss://`, either a bare host (the subscribeRepos path is added)
    /// or a full URL to the endpoint.
    pub url: String,
    /// Start after this `seq` (`cursor` query parameter).
    pub cursor: Option<u64>,
    /// Stop after this many frames.
    pub max_frames: Option<u64>,
    /// Stop after this long.
    pub max_duration: Option<Duration>,
}

impl Default for RecordOptions {
    fn default() -> Self {
        Self {
            url: DEFAULT_RELAY.to_owned(),
            cursor: None,
            max_frames: None,
            max_duration: None,
        }
    }
}

/// Why recording stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// [`RecordOptions::max_frames`] reached.
    FrameLimit,
    /// [`RecordOptions::max_duration`] elapsed.
    TimeLimit,
    /// The shutdown future completed.
    Shutdown,
    /// The relay closed the connection.
    RelayClosed,
}

/// What was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordReport {
    /// Frames written.
    pub frames: u64,
    /// Frame bytes written (without length prefixes).
    pub bytes: u64,
    /// `seq` of the first frame that had one.
    pub first_seq: Option<u64>,
    /// `seq` of the last frame that had one: the cursor to resume from.
    pub last_seq: Option<u64>,
    /// Text messages received and skipped (the firehose sends none).
    pub text_messages: u64,
    /// Why it stopped.
    pub stop: StopReason,
}

/// Why recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The URL is not `ws://` or `wss://`.
    #[error("relay URL must start with ws:// or wss://, got {0:?}")]
    Url(String),
    /// Connecting or the WebSocket handshake failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The WebSocket error.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// No WebSocket handshake within the time given ([`probe`]).
    #[error("no answer from {url} within {after:?}")]
    Timeout {
        /// The URL requested.
        url: String,
        /// How long it waited.
        after: Duration,
    },
    /// The connection failed while recording (after `frames` frames).
    #[error("connection failed after {frames} frames: {source}")]
    Stream {
        /// Frames already written.
        frames: u64,
        /// The WebSocket error.
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// Writing the capture failed.
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

/// Builds the subscribeRepos URL: adds the XRPC path to a bare host URL, and the cursor.
pub fn subscribe_url(base: &str, cursor: Option<u64>) -> Result<String, RecordError> {
    let rest = base
        .strip_prefix("ws://")
        .or_else(|| base.strip_prefix("wss://"))
        .ok_or_else(|| RecordError::Url(base.to_owned()))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(RecordError::Url(base.to_owned()));
    }
    let mut url = base.trim_end_matches('/').to_owned();
    if !rest.trim_end_matches('/').contains('/') {
        url.push_str(SUBSCRIBE_REPOS_PATH);
    }
    if let Some(cursor) = cursor {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("cursor={cursor}"));
    }
    Ok(url)
}

/// Is the relay reachable? Opens its subscribeRepos WebSocket (the handshake only, no
/// cursor) within `timeout`, then closes it. `deploy/run.sh` asks this before choosing
/// the live relay over the staging one.
pub async fn probe(base: &str, timeout: Duration) -> Result<(), RecordError> {
    let url = subscribe_url(base, None)?;
    match tokio::time::timeout(timeout, tokio_tungstenite::connect_async(url.as_str())).await {
        Ok(Ok((mut ws, _response))) => {
            // A polite close; the answer does not matter any more.
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
            Ok(())
        }
        Ok(Err(e)) => Err(RecordError::Connect {
            url,
            source: Box::new(e),
        }),
        Err(_) => Err(RecordError::Timeout {
            url,
            after: timeout,
        }),
    }
}

/// Connects to the relay and writes every binary message to `writer` until a limit, the
/// relay closing, or `shutdown`. The writer is flushed (not finished) before returning.
pub async fn record<W: Write>(
    opts: &RecordOptions,
    writer: &mut CaptureWriter<W>,
    shutdown: impl Future<Output = ()>,
) -> Result<RecordReport, RecordError> {
    let url = subscribe_url(&opts.url, opts.cursor)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_RECEIVED_FRAME_BYTES))
        .max_frame_size(Some(MAX_RECEIVED_FRAME_BYTES));
    let (ws, _response) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true)
            .await
            .map_err(|e| RecordError::Connect {
                url: url.clone(),
                source: Box::new(e),
            })?;
    tracing::info!(%url, "recording");
    let (_sink, mut stream) = ws.split();
    let mut report = RecordReport {
        frames: 0,
        bytes: 0,
        first_seq: None,
        last_seq: None,
        text_messages: 0,
        stop: StopReason::RelayClosed,
    };
    let deadline = opts.max_duration.map(|d| tokio::time::Instant::now() + d);
    let time_limit = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, time_limit);
    loop {
        if opts.max_frames.is_some_and(|max| report.frames >= max) {
            report.stop = StopReason::FrameLimit;
            break;
        }
        let msg = tokio::select! {
            () = &mut shutdown => { report.stop = StopReason::Shutdown; break; }
            () = &mut time_limit => { report.stop = StopReason::TimeLimit; break; }
            msg = stream.next() => msg,
        };
        match msg {
            None | Some(Ok(Message::Close(_))) => break,
            Some(Err(source)) => {
                writer.flush()?;
                return Err(RecordError::Stream {
                    frames: report.frames,
                    source: Box::new(source),
                });
            }
            Some(Ok(Message::Binary(bytes))) => {
                writer.write_frame(&bytes)?;
                if let Some(seq) = frame::parse_meta(&bytes).ok().and_then(|m| m.seq) {
                    report.first_seq.get_or_insert(seq);
                    report.last_seq = Some(seq);
                }
                report.frames += 1;
                report.bytes += bytes.len() as u64;
            }
            Some(Ok(Message::Text(_))) => report.text_messages += 1,
            Some(Ok(_)) => {} // ping/pong/raw frames: handled by tungstenite
        }
    }
    writer.flush()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = |b: &str, c| subscribe_url(b, c).unwrap_or_else(|e| e.to_string());
        assert_eq!(
            u("wss://bsky.network", None),
            "wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos"
        );
        assert_eq!(
            u("ws://127.0.0.1:9/", Some(5)),
            "ws://127.0.0.1:9/xrpc/com.atproto.sync.subscribeRepos?cursor=5"
        );
        assert_eq!(
            u("ws://h/xrpc/com.atproto.sync.subscribeRepos", Some(1)),
            "ws://h/xrpc/com.atproto.sync.subscribeRepos?cursor=1"
        );
        assert!(subscribe_url("http://h", None).is_err());
        assert!(subscribe_url("ws://", None).is_err());
    }
}
