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
use crate::{MAX_FRAME_BYTES, SUBSCRIBE_REPOS_PATH};

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
    #[error("listener: {0}")]
    Listener(std::io::Error),
    /// The relay task panicked or was cancelled.
    #[error("relay task failed: {0}")]
    Task(String),
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
        self.task
            .await
            .map_err(|e| ReplayError::Task(e.to_string()))?
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
        .max_message_size(Some(MAX_FRAME_BYTES.max(8 << 20)))
        .max_frame_size(Some(MAX_FRAME_BYTES.max(8 << 20)))
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

/// Where a connection reads: looped pass and index in the capture.
#[derive(Debug, Clone, Copy)]
struct Pos {
    pass: u64,
    index: usize,
}

enum Start {
    Future,
    From { pos: Pos, outdated: bool },
}

impl Shared {
    fn plan(&self, cursor: Option<u64>) -> Start {
        let len = self.capture.len();
        let looping = self.opts.looping;
        let Some(cursor) = cursor else {
            let pos = match (self.opts.live_tail, looping) {
                (false, _) => Pos { pass: 0, index: 0 },
                (true, false) => Pos {
                    pass: 0,
                    index: len,
                },
                (true, true) => Pos { pass: 1, index: 0 },
            };
            return Start::From {
                pos,
                outdated: false,
            };
        };
        let (Some(first), Some(last)) = (self.first_seq, self.last_seq) else {
            return Start::From {
                pos: Pos { pass: 0, index: 0 },
                outdated: false,
            };
        };
        if cursor.saturating_add(1) < first {
            return Start::From {
                pos: Pos { pass: 0, index: 0 },
                outdated: true,
            };
        }
        if !looping {
            if cursor > last {
                return Start::Future;
            }
            let index = self.capture.start_after(cursor);
            return Start::From {
                pos: Pos { pass: 0, index },
                outdated: false,
            };
        }
        let pass = (cursor + 1 - first) / self.seq_span;
        let index = self.capture.start_after(cursor - pass * self.seq_span);
        Start::From {
            pos: Pos { pass, index },
            outdated: false,
        }
    }

    /// The frame at `pos` (advancing it), or `None` at the end of a non-looping capture.
    fn next_frame(&self, pos: &mut Pos) -> Option<(Bytes, Option<i64>)> {
        let frames = self.capture.frames();
        loop {
            if pos.index >= frames.len() {
                if !self.opts.looping || frames.is_empty() {
                    return None;
                }
                pos.pass += 1;
                pos.index = 0;
            }
            let f = &frames[pos.index];
            pos.index += 1;
            let time = f
                .meta
                .time_micros
                .map(|t| t.saturating_add(self.time_span.saturating_mul(pos.pass as i64)));
            if pos.pass == 0 {
                return Some((f.bytes.clone(), time));
            }
            let Some(seq) = f.meta.seq else {
                return Some((f.bytes.clone(), time));
            };
            let new_seq = self.seq_span.checked_mul(pos.pass)?.checked_add(seq)?;
            match frame::rewrite_seq(&f.bytes, new_seq) {
                Ok(bytes) => return Some((Bytes::from(bytes), time)),
                Err(error) => {
                    tracing::warn!(index = pos.index - 1, %error, "cannot renumber frame; skipped");
                }
            }
        }
    }
}

/// Paces frames by event time.
struct Pacer {
    factor: Option<f64>,
    base: Option<(Instant, i64)>,
}

impl Pacer {
    fn deadline(&mut self, time: Option<i64>) -> Option<Instant> {
        let factor = self.factor?;
        let time = time?;
        match self.base {
            None => {
                self.base = Some((Instant::now(), time));
                None
            }
            Some((start, base_time)) => {
                let micros = (time - base_time).max(0) as f64 / factor;
                let deadline = start + Duration::from_micros(micros as u64);
                (deadline > Instant::now()).then_some(deadline)
            }
        }
    }
}

/// How a connection's sending loop ended.
enum End {
    /// Shutdown, client gone, or end of what to send: close politely if still possible.
    Close(Option<CloseFrame>),
    /// Drop the socket without a close frame.
    Abrupt,
}

// The handshake callback must return tungstenite's (large) `ErrorResponse`.
#[allow(clippy::result_large_err)]
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    root: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut requested: Option<Result<Option<u64>, String>> = None;
    let callback = |req: &Request, response: Response| {
        if req.uri().path() != SUBSCRIBE_REPOS_PATH {
            return Err(reject(StatusCode::NOT_FOUND, "not found"));
        }
        match parse_cursor(req.uri().query()) {
            Ok(cursor) => {
                requested = Some(Ok(cursor));
                Ok(response)
            }
            Err(message) => {
                requested = Some(Err(message.clone()));
                Err(reject(StatusCode::BAD_REQUEST, &message))
            }
        }
    };
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(websocket_config()));
    let ws = tokio::select! {
        () = root.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "handshake timed out");
                return;
            }
        },
    };
    let Some(Ok(cursor)) = requested else { return };
    // Connections are numbered once their handshake succeeds: rejected requests (404, 400)
    // do not shift the fault schedule.
    let index = shared.connections.fetch_add(1, Ordering::Relaxed) as usize;
    tracing::info!(%peer, index, ?cursor, "client connected");

    let (mut sink, source) = ws.split();
    // The connection stops when the relay shuts down or the client goes away.
    let stop = root.child_token();
    let reader = tokio::spawn(read_until_closed(source, stop.clone()));

    let end = send_frames(&mut sink, index, cursor, &shared, &stop).await;
    stop.cancel();
    let source = reader.await.ok().flatten();
    match end {
        End::Abrupt => {
            tracing::info!(%peer, index, "dropping connection (fault injection)");
            // Dropping both halves closes the TCP connection without a close frame.
        }
        End::Close(frame) => {
            let frame = frame.or_else(|| {
                root.is_cancelled().then(|| CloseFrame {
                    code: CloseCode::Away,
                    reason: "relay shutting down".into(),
                })
            });
            if let (Some(frame), Some(source)) = (frame, source) {
                if let Ok(mut ws) = sink.reunite(source) {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(Some(frame))).await;
                }
            }
        }
    }
    tracing::info!(%peer, index, "client disconnected");
}

/// Reads (and so answers pings) until the client closes, the socket fails, or `stop`; gives
/// the stream half back if the client did not go away.
async fn read_until_closed(
    mut source: SplitStream<WebSocketStream<TcpStream>>,
    stop: CancellationToken,
) -> Option<SplitStream<WebSocketStream<TcpStream>>> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Some(source),
            msg = source.next() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    stop.cancel();
                    return None;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Feeds `msg`, giving up if `stop` fires; `false` when the connection is finished.
async fn feed(sink: &mut Sink, msg: Message, stop: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        r = sink.feed(msg) => r.is_ok(),
    }
}

async fn flush(sink: &mut Sink, stop: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        r = sink.flush() => r.is_ok(),
    }
}

async fn send_error(sink: &mut Sink, error: &str, message: &str, stop: &CancellationToken) -> End {
    let bytes = Bytes::from(frame::error_frame(error, message));
    if feed(sink, Message::Binary(bytes), stop).await {
        flush(sink, stop).await;
    }
    End::Close(Some(CloseFrame {
        code: CloseCode::Policy,
        reason: error.to_owned().into(),
    }))
}

async fn send_frames(
    sink: &mut Sink,
    index: usize,
    cursor: Option<u64>,
    shared: &Shared,
    stop: &CancellationToken,
) -> End {
    let faults = &shared.opts.faults;
    if faults.future_cursor_on == Some(index) {
        return send_error(
            sink,
            "FutureCursor",
            "cursor in the future (fault injection)",
            stop,
        )
        .await;
    }
    let mut pos = match shared.plan(cursor) {
        Start::Future => {
            let message = format!(
                "cursor {} is after the relay's last seq {}",
                cursor.unwrap_or_default(),
                shared.last_seq.unwrap_or_default()
            );
            return send_error(sink, "FutureCursor", &message, stop).await;
        }
        Start::From { pos, outdated } => {
            if outdated {
                let message = format!(
                    "cursor {} is older than the oldest event kept ({}); sending from the oldest",
                    cursor.unwrap_or_default(),
                    shared.first_seq.unwrap_or_default()
                );
                let info = Bytes::from(frame::info_frame("OutdatedCursor", &message));
                if !feed(sink, Message::Binary(info), stop).await {
                    return End::Close(None);
                }
            }
            pos
        }
    };
    let drop_after = faults.drop_after.get(index).copied();
    let too_slow = faults
        .too_slow
        .filter(|f| f.connection == index)
        .map(|f| f.after_frames);
    let mut pacer = Pacer {
        factor: match shared.opts.speed {
            Speed::Max => None,
            Speed::Factor(f) => Some(f),
        },
        base: None,
    };
    let mut sent = 0u64;
    let mut pending = 0usize;
    loop {
        if drop_after == Some(sent) {
            if pending > 0 {
                flush(sink, stop).await;
                shared
                    .frames_sent
                    .fetch_add(pending as u64, Ordering::Relaxed);
            }
            return End::Abrupt;
        }
        if too_slow == Some(sent) {
            shared
                .frames_sent
                .fetch_add(pending as u64, Ordering::Relaxed);
            return send_error(
                sink,
                "ConsumerTooSlow",
                "consumer too slow (fault injection)",
                stop,
            )
            .await;
        }
        let Some((bytes, time)) = shared.next_frame(&mut pos) else {
            // Caught up with the capture: stay connected, like a quiet live relay.
            let flushed = pending == 0 || flush(sink, stop).await;
            shared
                .frames_sent
                .fetch_add(pending as u64, Ordering::Relaxed);
            if flushed {
                stop.cancelled().await;
            }
            return End::Close(None);
        };
        if let Some(deadline) = pacer.deadline(time) {
            if pending > 0 {
                if !flush(sink, stop).await {
                    return End::Close(None);
                }
                shared
                    .frames_sent
                    .fetch_add(pending as u64, Ordering::Relaxed);
                pending = 0;
            }
            tokio::select! {
                () = stop.cancelled() => return End::Close(None),
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
        if !feed(sink, Message::Binary(bytes), stop).await {
            return End::Close(None);
        }
        sent += 1;
        pending += 1;
        if pending >= FLUSH_EVERY {
            if !flush(sink, stop).await {
                return End::Close(None);
            }
            shared
                .frames_sent
                .fetch_add(pending as u64, Ordering::Relaxed);
            pending = 0;
        }
    }
}
