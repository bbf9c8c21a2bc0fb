//! One client connection: the handshake's cursor, where to start in the capture, pacing,
//! faults, and the frames written until the client leaves or the relay stops.

use super::*;

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

    /// The frame at `pos` (advancing it) with its event time and `seq`, or `None` at the
    /// end of a non-looping capture.
    fn next_frame(&self, pos: &mut Pos) -> Option<(Bytes, Option<i64>, Option<u64>)> {
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
                return Some((f.bytes.clone(), time, f.meta.seq));
            }
            let Some(seq) = f.meta.seq else {
                return Some((f.bytes.clone(), time, None));
            };
            let new_seq = self.seq_span.checked_mul(pos.pass)?.checked_add(seq)?;
            match frame::rewrite_seq(&f.bytes, new_seq) {
                Ok(bytes) => return Some((Bytes::from(bytes), time, Some(new_seq))),
                Err(error) => {
                    tracing::warn!(index = pos.index - 1, %error, "cannot renumber frame; skipped");
                }
            }
        }
    }

    /// Counts the pending frames as sent (in [`ServeReport::frames_sent`]; the callers flush
    /// them first) and reports their `seq`s to [`ReplayOptions::on_sent`].
    fn flushed(&self, pending: &mut Pending) {
        self.frames_sent
            .fetch_add(pending.frames as u64, Ordering::Relaxed);
        if let Some(on_sent) = &self.opts.on_sent {
            for seq in pending.seqs.drain(..) {
                (on_sent.0)(seq);
            }
        }
        pending.frames = 0;
    }
}

/// Frames fed to the socket and not yet flushed; their `seq`s only when someone listens
/// ([`ReplayOptions::on_sent`]), so the vector never allocates otherwise.
#[derive(Default)]
struct Pending {
    frames: usize,
    seqs: Vec<u64>,
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
pub(super) async fn connection(
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
    let mut pending = Pending::default();
    loop {
        if drop_after == Some(sent) {
            if pending.frames > 0 {
                flush(sink, stop).await;
                shared.flushed(&mut pending);
            }
            return End::Abrupt;
        }
        if too_slow == Some(sent) {
            shared.flushed(&mut pending);
            return send_error(
                sink,
                "ConsumerTooSlow",
                "consumer too slow (fault injection)",
                stop,
            )
            .await;
        }
        let Some((bytes, time, seq)) = shared.next_frame(&mut pos) else {
            // Caught up with the capture: stay connected, like a quiet live relay.
            let flushed = pending.frames == 0 || flush(sink, stop).await;
            shared.flushed(&mut pending);
            if flushed {
                stop.cancelled().await;
            }
            return End::Close(None);
        };
        if let Some(deadline) = pacer.deadline(time) {
            if pending.frames > 0 {
                if !flush(sink, stop).await {
                    return End::Close(None);
                }
                shared.flushed(&mut pending);
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
        pending.frames += 1;
        if shared.opts.on_sent.is_some() {
            pending.seqs.extend(seq);
        }
        if pending.frames >= FLUSH_EVERY {
            if !flush(sink, stop).await {
                return End::Close(None);
            }
            shared.flushed(&mut pending);
        }
    }
}
