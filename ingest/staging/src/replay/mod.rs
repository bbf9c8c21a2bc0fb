//! The replay relay: serves a [`Capture`] as `GET /xrpc/com.atproto.sync.subscribeRepos`
//! over WebSocket, with the cursor semantics of the real relay and injectable faults.
//!
//! Cursor semantics (as the real relay):
//! - no cursor: every frame from the start of the capture; with
//!   [`ReplayOptions::live_tail`], only what comes "live" after connecting (nothing, unless
//!   [`ReplayOptions::looping`] produces new passes);
//! - `cursor=N`: the frames with `seq > N` (`N` = last seq: nothing yet, the connection
//!   stays open);
//! - `N` greater than the capture's last seq: an error frame `FutureCursor`, then close;
//! - `N < first seq − 1` (older than the capture): an `#info` frame `OutdatedCursor`, then
//!   every frame from the oldest.
//!
//! Each frame is one `Message::Binary` holding the capture's bytes unchanged (a cheap
//! [`Bytes`] clone, no copy). Looped passes renumber `seq` (`seq + pass × span`, span =
//! last − first + 1) so it stays strictly increasing; only those frames are re-encoded, and
//! only their `seq` integer changes. With looping, cursors are read in that renumbered
//! sequence and are never "future".
//!
//! Connections are numbered 0, 1, 2… in the order their WebSocket handshake succeeds
//! (rejected requests get no number); [`Faults`] refer to those numbers.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::Capture;
use crate::frame;
use crate::{MAX_RECEIVED_FRAME_BYTES, SUBSCRIBE_REPOS_PATH};

/// Frames written between two explicit flushes at full speed (the socket still applies
/// backpressure: a slow reader slows the writer).
const FLUSH_EVERY: usize = 64;
/// How long a client may take to finish the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the relay waits for a close frame to be written at shutdown (a client that
/// stopped reading would otherwise hold the shutdown).
const CLOSE_TIMEOUT: Duration = Duration::from_millis(250);

/// Replay pace.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Speed {
    /// As fast as the client reads (socket backpressure only).
    #[default]
    Max,
    /// Paced by the frames' `time`: gaps of event time divided by the factor (1.0 = real
    /// time, 10.0 = ten times faster). Frames without `time` are sent at once.
    Factor(f64),
}

/// A fault on one connection after some frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAt {
    /// 0-based connection number (handshake order).
    pub connection: usize,
    /// Frames sent on that connection before the fault.
    pub after_frames: u64,
}

/// Faults to inject, by connection number (0-based, in handshake order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// `drop_after[i] = N`: connection `i` is closed abruptly (no close frame) after `N`
    /// frames. Connections past the end of the list are not dropped.
    pub drop_after: Vec<u64>,
    /// On that connection, after that many frames, send the error frame `ConsumerTooSlow`
    /// and close, as the real relay does to a reader that falls behind.
    pub too_slow: Option<FaultAt>,
    /// That connection gets the `FutureCursor` error frame whatever its cursor.
    pub future_cursor_on: Option<usize>,
}

/// How the relay replays its capture.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplayOptions {
    /// Pace of replay.
    pub speed: Speed,
    /// Without a cursor, start at the end of the capture (like a live relay) instead of the
    /// beginning.
    pub live_tail: bool,
    /// After the last frame, start again from the first, renumbering `seq` so it keeps
    /// increasing. Needs a capture whose `seq` is strictly increasing.
    pub looping: bool,
    /// Faults to inject.
    pub faults: Faults,
    /// Told the relay `seq` of each frame as it is written to a client's socket.
    pub on_sent: Option<OnSent>,
}

/// An observer of the frames a relay sends, for benchmarks that time an event from the
/// moment the relay sends it: called with the frame's relay `seq` (after looping's
/// renumbering) right after the flush that writes it to the socket, where the relay counts
/// it in [`ServeReport::frames_sent`]; on every connection, from the connection's task.
/// Frames without a `seq`, and error or info frames, are not reported. Left `None` (the
/// default), the relay does no extra work.
///
/// The callback runs on the relay's send path: it should only record (push onto a
/// `Mutex<Vec<_>>`, send on a channel), never block.
#[derive(Clone)]
pub struct OnSent(pub Arc<dyn Fn(u64) + Send + Sync>);

impl OnSent {
    /// Wraps `f`.
    pub fn new(f: impl Fn(u64) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for OnSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnSent(..)")
    }
}

/// The same observer (the same `Arc`), not the same behaviour.
impl PartialEq for OnSent {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// What a relay did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// WebSocket connections accepted (handshake done).
    pub connections: u64,
    /// Frames written to clients, all connections together.
    pub frames_sent: u64,
}

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The options are not usable.
    #[error("invalid replay options: {0}")]
    Options(String),
    /// Binding or inspecting the listening socket failed.
    #[error("listener")]
    Listener(#[source] std::io::Error),
    /// The relay task panicked or was cancelled.
    #[error("relay task failed")]
    Task(#[source] tokio::task::JoinError),
}

struct Shared {
    capture: Arc<Capture>,
    opts: ReplayOptions,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// `last - first + 1`: how much `seq` grows per looped pass.
    seq_span: u64,
    /// How much `time` grows per looped pass, in microseconds.
    time_span: i64,
    frames_sent: AtomicU64,
    connections: AtomicU64,
}

/// Serves `capture` on `listener` until `shutdown` completes, then closes every connection
/// (close frame "going away") and returns what it did.
///
/// Each connection runs in its own task; the capture is shared, frames are not copied.
pub async fn serve(
    listener: TcpListener,
    capture: Arc<Capture>,
    opts: ReplayOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<ServeReport, ReplayError> {
    if let Speed::Factor(f) = opts.speed {
        if !(f.is_finite() && f > 0.0) {
            return Err(ReplayError::Options(format!(
                "speed factor must be a positive number, got {f}"
            )));
        }
    }
    if opts.looping && !capture.seq_strictly_increasing() {
        return Err(ReplayError::Options(
            "looping needs a capture whose seq is strictly increasing".into(),
        ));
    }
    let first_seq = capture.first_seq();
    let last_seq = capture.last_seq();
    let seq_span = match (first_seq, last_seq) {
        (Some(f), Some(l)) => l - f + 1,
        _ => 0,
    };
    let time_span = match capture.time_range() {
        Some((lo, hi)) => {
            let timed = capture
                .frames()
                .iter()
                .filter(|f| f.meta.time_micros.is_some())
                .count() as i64;
            let gap = if timed > 1 {
                (hi - lo) / (timed - 1)
            } else {
                1000
            };
            hi - lo + gap.max(1)
        }
        None => 0,
    };
    let shared = Arc::new(Shared {
        capture,
        opts,
        first_seq,
        last_seq,
        seq_span,
        time_span,
        frames_sent: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(connection(stream, peer, shared.clone(), root.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    root.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(ServeReport {
        connections: shared.connections.load(Ordering::Relaxed),
        frames_sent: shared.frames_sent.load(Ordering::Relaxed),
    })
}

/// A relay running in the background on `127.0.0.1`, for tests and benchmarks.
#[derive(Debug)]
pub struct RelayHandle {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<ServeReport, ReplayError>>,
}

impl RelayHandle {
    /// The address the relay listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/xrpc/com.atproto.sync.subscribeRepos`
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.addr, SUBSCRIBE_REPOS_PATH)
    }

    /// Stops the relay (closing every connection) and returns its report.
    pub async fn shutdown(self) -> Result<ServeReport, ReplayError> {
        self.stop.cancel();
        self.task.await.map_err(ReplayError::Task)?
    }
}

/// Binds `127.0.0.1:0` and runs [`serve`] in a background task.
pub async fn spawn(capture: Arc<Capture>, opts: ReplayOptions) -> Result<RelayHandle, ReplayError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(ReplayError::Listener)?;
    let addr = listener.local_addr().map_err(ReplayError::Listener)?;
    let stop = CancellationToken::new();
    let signal = stop.clone();
    let task = tokio::spawn(serve(listener, capture, opts, async move {
        signal.cancelled().await
    }));
    Ok(RelayHandle { addr, stop, task })
}

/// Server-side WebSocket settings: room for the largest frames, small enough write buffer
/// that backpressure reaches the relay quickly.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_RECEIVED_FRAME_BYTES.max(8 << 20)))
        .max_frame_size(Some(MAX_RECEIVED_FRAME_BYTES.max(8 << 20)))
        .write_buffer_size(128 * 1024)
}

fn reject(status: StatusCode, message: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message.to_owned()));
    *response.status_mut() = status;
    response
}

/// Reads `cursor` from a query string: `Ok(None)` when absent, `Err` when not an integer.
pub fn parse_cursor(query: Option<&str>) -> Result<Option<u64>, String> {
    let Some(query) = query else { return Ok(None) };
    let mut cursor = None;
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("cursor=") {
            let value: u64 = value
                .parse()
                .map_err(|_| format!("cursor must be a non-negative integer, got {value:?}"))?;
            cursor = Some(value);
        }
    }
    Ok(cursor)
}

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;

mod conn;

use conn::connection;
