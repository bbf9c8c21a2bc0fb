//! The WebSocket side of one client: writes its events, reads its `options_update`s,
//! closes it with a reason.
//!
//! Where it sits: pump (NATS) → bounded buffer → **session** → client socket. One task per
//! client runs [`run`]: it waits for the hello when `requireHello` asks for one, starts the
//! [`Pump`], then writes what the buffer holds, a few messages per flush: text messages, or
//! for a client that asked for zstd, each one a binary message compressed alone
//! ([`crate::zstd`]). A write the
//! socket does not accept within `client.stuck_timeout` closes the client ("stuck"): that
//! is the only way a client is dropped, never because the gateway is busy.

use crate::metrics::{CloseReason, Metrics};
use crate::params::{self, ClientMessage, Filters, Request};
use crate::pump::{self, Budget, Outgoing, Pump, PumpError};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use yawc::close::CloseCode;
use yawc::{Frame, HttpWebSocket, OpCode};

/// Messages written before one flush.
const WRITE_BATCH: usize = 64;
/// How long the pump may take to delete its consumer when the client leaves.
const PUMP_EXIT: Duration = Duration::from_secs(2);
/// How long a close frame may take to leave: a stuck client that starts reading again
/// within this time still gets it, behind what its socket already held.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every session shares.
pub struct Shared {
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub stream: async_nats::jetstream::stream::Stream,
    pub client: crate::config::Client,
    /// `[archive]`, for cursors older than the stream.
    pub history: Option<Arc<dyn kit::history::History>>,
    /// `client.archive_readers`: one permit per client reading the archive.
    pub archive_slots: Arc<tokio::sync::Semaphore>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

/// Why a session ends, with the text of the close frame.
struct Ended {
    reason: CloseReason,
    text: String,
}

impl Ended {
    fn new(reason: CloseReason, text: impl Into<String>) -> Self {
        Ended {
            reason,
            text: text.into(),
        }
    }

    fn code(&self) -> CloseCode {
        match self.reason {
            CloseReason::Client => CloseCode::Normal,
            CloseReason::Stuck | CloseReason::BadMessage => CloseCode::Policy,
            CloseReason::Stream => CloseCode::Error,
            CloseReason::Shutdown => CloseCode::Away,
        }
    }
}

/// Awaits one socket operation, bounded by the stuck timeout and the shutdown.
async fn progress(
    shared: &Shared,
    op: impl std::future::Future<Output = yawc::Result<()>>,
) -> Result<(), Ended> {
    let limit = shared.client.stuck_timeout;
    let started = Instant::now();
    tokio::select! {
        r = tokio::time::timeout(limit, op) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Ended::new(CloseReason::Client, e.to_string())),
            Err(_) => {
                tracing::info!(waited = ?started.elapsed(), "client stuck: closing it");
                Err(Ended::new(
                    CloseReason::Stuck,
                    format!("too slow: nothing read for {}s", limit.as_secs_f64()),
                ))
            }
        },
        _ = shared.shutdown.cancelled() => {
            Err(Ended::new(CloseReason::Shutdown, "gateway stopping"))
        }
    }
}

/// A close reason fits in 123 bytes.
fn truncate(text: &str) -> &str {
    let mut end = text.len().min(120);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Serves one upgraded client until it leaves, gets stuck, or the gateway stops.
pub async fn run(mut ws: HttpWebSocket, request: Request, shared: Arc<Shared>) {
    shared.metrics.clients.inc();
    let zstd = match request.zstd.then(crate::zstd::Zstd::new).transpose() {
        Ok(z) => z,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a zstd compressor");
            shared.metrics.close(CloseReason::Stream);
            shared.metrics.clients.dec();
            return;
        }
    };
    let ended = Session {
        ws: &mut ws,
        shared: &shared,
        sent: None,
        zstd,
    }
    .serve(request)
    .await;
    tracing::debug!(reason = ended.reason.as_str(), text = %ended.text, "client closed");
    // Counted first: the close frame may wait for the client to read again.
    shared.metrics.close(ended.reason);
    if ended.reason != CloseReason::Client {
        let frame = Frame::close(ended.code(), truncate(&ended.text));
        if tokio::time::timeout(CLOSE_TIMEOUT, ws.send(frame))
            .await
            .is_err()
        {
            tracing::debug!("the close frame could not be sent: socket dropped");
        }
    }
    shared.metrics.clients.dec();
}

struct Session<'a> {
    ws: &'a mut HttpWebSocket,
    shared: &'a Shared,
    /// (pending, storage time) of the last event written, for the lag metrics.
    sent: Option<(u64, i64)>,
    /// Set when the client asked for Jetstream's zstd.
    zstd: Option<crate::zstd::Zstd>,
}

impl Session<'_> {
    async fn serve(&mut self, request: Request) -> Ended {
        let filters = if request.require_hello {
            match self.hello().await {
                Ok(f) => f,
                Err(e) => return e,
            }
        } else {
            request.filters
        };
        let start = match pump::start(
            &self.shared.stream,
            request.cursor,
            self.shared.history.is_some(),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => return Ended::new(CloseReason::Stream, e.to_string()),
        };
        if start.clamped {
            self.shared.metrics.cursor_clamped.inc();
        }
        tracing::debug!(?start, cursor = ?request.cursor, "client starts");
        let budget = Budget::new(self.shared.client.buffer_bytes);
        let (filters_tx, filters_rx) = watch::channel(Arc::new(filters));
        let (tx, rx) = mpsc::channel(self.shared.client.pull_batch.max(WRITE_BATCH));
        let pump = Pump {
            nats: self.shared.nats.clone(),
            js: self.shared.js.clone(),
            stream: self.shared.stream.clone(),
            start,
            history: self.shared.history.clone(),
            archive_slots: self.shared.archive_slots.clone(),
            pull_batch: self.shared.client.pull_batch,
            budget: budget.clone(),
            consumer_prefix: self.shared.client.consumer_prefix.clone(),
            clamped: self.shared.metrics.cursor_clamped.clone(),
        };
        let mut task = tokio::spawn(pump.run(filters_rx, tx));
        let ended = self.pipe(rx, &filters_tx, &budget, &mut task).await;
        // The pump sees both ends gone, deletes its consumer and returns.
        drop(filters_tx);
        match tokio::time::timeout(PUMP_EXIT, &mut task).await {
            Ok(Err(e)) if e.is_panic() => tracing::error!(error = %e, "client pump panicked"),
            Ok(_) => {}
            Err(_) => task.abort(),
        }
        ended
    }

    /// Waits for the first `options_update` (`requireHello=true`).
    async fn hello(&mut self) -> Result<Filters, Ended> {
        loop {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => {
                    return Err(Ended::new(CloseReason::Shutdown, "gateway stopping"));
                }
                frame = self.ws.next() => {
                    if let Some(filters) = self.on_frame(frame)? {
                        self.shared.metrics.options_updates.inc();
                        return Ok(filters);
                    }
                }
            }
        }
    }

    /// Handles one frame from the client: new filters, nothing, or the end.
    fn on_frame(&mut self, frame: Option<Frame>) -> Result<Option<Filters>, Ended> {
        let Some(frame) = frame else {
            return Err(Ended::new(CloseReason::Client, "gone"));
        };
        match frame.opcode() {
            OpCode::Text => match params::parse_client_message(frame.payload()) {
                Ok(ClientMessage::OptionsUpdate(f)) => {
                    tracing::debug!(subjects = ?f.subjects(), dids = f.dids.len(), "options_update");
                    Ok(Some(f))
                }
                Ok(ClientMessage::Unknown(kind)) => {
                    tracing::debug!(%kind, "unknown subscriber message ignored");
                    Ok(None)
                }
                Err(e) => Err(Ended::new(CloseReason::BadMessage, e.to_string())),
            },
            OpCode::Binary => Err(Ended::new(
                CloseReason::BadMessage,
                "binary messages are not understood; send options_update as text",
            )),
            OpCode::Close => Err(Ended::new(CloseReason::Client, "closed by the client")),
            _ => Ok(None), // ping (answered by yawc), pong, continuation
        }
    }

    /// Writes the pump's events and reads the client's messages until one side ends.
    async fn pipe(
        &mut self,
        mut rx: mpsc::Receiver<Outgoing>,
        filters: &watch::Sender<Arc<Filters>>,
        budget: &Budget,
        task: &mut tokio::task::JoinHandle<Result<(), PumpError>>,
    ) -> Ended {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => {
                    return Ended::new(CloseReason::Shutdown, "gateway stopping");
                }
                frame = self.ws.next() => match self.on_frame(frame) {
                    Ok(Some(f)) => {
                        // Counted once the pump can see it: tests wait on this counter.
                        let _ = filters.send(Arc::new(f));
                        self.shared.metrics.options_updates.inc();
                    }
                    Ok(None) => {}
                    Err(e) => return e,
                },
                out = rx.recv() => match out {
                    Some(first) => {
                        if let Err(e) = self.write(first, &mut rx).await {
                            return e;
                        }
                    }
                    None => {
                        let why = match (&mut *task).await {
                            Ok(Err(e)) => service::telemetry::Chain(&e).to_string(),
                            Ok(Ok(())) => "stream reader stopped".into(),
                            Err(e) => format!("stream reader failed: {e}"),
                        };
                        tracing::warn!(error = %why, "client's stream reader stopped");
                        return Ended::new(CloseReason::Stream, why);
                    }
                },
                _ = tick.tick() => self.sample_lag(budget),
            }
        }
    }

    /// Writes `first` and what else is ready (up to [`WRITE_BATCH`]), then flushes; each
    /// step must make progress within the stuck timeout.
    async fn write(
        &mut self,
        first: Outgoing,
        rx: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), Ended> {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            let (len, pending, time_us) = (out.payload.len(), out.pending, out.time_us);
            // The buffer share (`out`'s permit) is released once the socket took the frame.
            let frame = match &mut self.zstd {
                None => Frame::text(out.payload.clone()),
                Some(z) => match z.compress(&out.payload) {
                    Ok(c) => Frame::binary(c),
                    Err(e) => {
                        let why = format!("zstd compression failed: {e}");
                        return Err(Ended::new(CloseReason::Stream, why));
                    }
                },
            };
            progress(self.shared, self.ws.feed(frame)).await?;
            drop(out);
            self.shared.metrics.messages_sent.inc();
            self.shared.metrics.bytes_sent.inc_by(len as u64);
            self.sent = Some((pending, time_us));
            n += 1;
            if n < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        progress(self.shared, self.ws.flush()).await
    }

    fn sample_lag(&self, budget: &Budget) {
        let m = &self.shared.metrics;
        match self.sent {
            Some((0, _)) if budget.used() == 0 => {
                m.lag_messages.observe(0.0);
                m.lag_seconds.observe(0.0);
            }
            Some((pending, time_us)) => {
                m.lag_messages.observe(pending as f64);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as f64)
                    .unwrap_or(0.0);
                m.lag_seconds
                    .observe(((now - time_us as f64) / 1e6).max(0.0));
            }
            None => {}
        }
    }
}
