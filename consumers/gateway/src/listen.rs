//! The gateway's listening socket: every accepted connection gets `TCP_NODELAY`, and a first
//! request whose URI is too long for the HTTP stack is answered with a 414 that says why.
//!
//! Where it sits: TCP accept → **listen** → hyper/axum (`GET /subscribe`). Without
//! `TCP_NODELAY`, Nagle's algorithm holds small WebSocket frames for up to 40 ms behind an
//! unacknowledged one. hyper refuses a URI over [`MAX_URI`] bytes (a limit it does not let
//! anyone raise) with an empty 414; 10,000 `wantedDids` in the query are about 440 KB. So
//! this layer watches the first request line of each connection as it is read: past the
//! limit it reads the rest of the request head, answers 414 with a body naming the limit and
//! the way out (`options_update`), and closes. Later requests on a kept-alive connection are
//! not watched (hyper's empty 414 then), nor is anything after a WebSocket upgrade.

use prometheus_client::metrics::counter::Counter;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The longest URI hyper accepts (`http::uri`'s `MAX_LEN`).
pub const MAX_URI: usize = 65_534;
/// Most bytes of a refused request head read (and dropped) before the answer.
const MAX_DRAIN: usize = 4 << 20;

/// The body of the 414.
const TOO_LONG: &str = "URI too long: this gateway reads at most 65534 bytes of URI (about 1,450 \
wantedDids). Connect without wantedDids (add requireHello=true to receive nothing before them) \
and send the list in an options_update message: \
{\"type\":\"options_update\",\"payload\":{\"wantedDids\":[...]}} (up to 10,000 DIDs).\n";

/// The whole 414 response.
fn answer() -> &'static [u8] {
    static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ANSWER.get_or_init(|| {
        format!(
            "HTTP/1.1 414 URI Too Long\r\ncontent-type: text/plain; charset=utf-8\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{TOO_LONG}",
            TOO_LONG.len()
        )
        .into_bytes()
    })
}

/// Accepts connections for axum, with `TCP_NODELAY` and the URI guard.
pub struct Listener {
    inner: TcpListener,
    rejected: Counter,
}

impl Listener {
    /// `rejected` counts the requests answered 414 here.
    pub fn new(inner: TcpListener, rejected: Counter) -> Listener {
        Listener { inner, rejected }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((socket, addr)) => {
                    if let Err(e) = socket.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    let io = Guarded {
                        inner: socket,
                        state: State::Method,
                        rejected: self.rejected.clone(),
                    };
                    return (io, addr);
                }
                // Out of file descriptors and the like: wait, as axum's own listener does.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Reading the first request line's method.
    Method,
    /// Reading its URI: bytes so far.
    Uri(usize),
    /// The line was fine: everything passes.
    Passing,
    /// Too long: reading the rest of the head (bytes dropped, last four bytes seen).
    Draining { dropped: usize, tail: [u8; 4] },
    /// Writing the 414 (bytes written).
    Answering(usize),
    /// Answered: the connection reads as closed.
    Done,
}

/// An accepted connection, watched until its first request line is through.
pub struct Guarded {
    inner: TcpStream,
    state: State,
    rejected: Counter,
}

impl Guarded {
    /// Follows the request line through `bytes`; `true` when the URI is too long.
    fn watch(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            self.state = match self.state {
                State::Method if b == b' ' => State::Uri(0),
                State::Method if b == b'\n' => State::Passing,
                State::Uri(_) if b == b' ' || b == b'\r' || b == b'\n' => State::Passing,
                State::Uri(n) if n + 1 > MAX_URI => return true,
                State::Uri(n) => State::Uri(n + 1),
                other => other,
            };
            if self.state == State::Passing {
                return false;
            }
        }
        false
    }

    /// Drops request bytes until the end of the head; `true` once it is reached.
    fn drain(dropped: &mut usize, tail: &mut [u8; 4], bytes: &[u8]) -> bool {
        for &b in bytes {
            *tail = [tail[1], tail[2], tail[3], b];
            *dropped += 1;
            if tail == b"\r\n\r\n" || *dropped > MAX_DRAIN {
                return true;
            }
        }
        false
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Passing => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::Method | State::Uri(_) => {
                    let before = buf.filled().len();
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                    let new = buf.filled()[before..].to_vec();
                    if !this.watch(&new) {
                        return Poll::Ready(Ok(()));
                    }
                    // hyper never sees this request.
                    buf.set_filled(before);
                    this.rejected.inc();
                    let (mut dropped, mut tail) = (0, [0; 4]);
                    this.state = if Self::drain(&mut dropped, &mut tail, &new) {
                        State::Answering(0)
                    } else {
                        State::Draining { dropped, tail }
                    };
                }
                State::Draining {
                    mut dropped,
                    mut tail,
                } => {
                    let mut scratch = [0u8; 8192];
                    let mut rb = ReadBuf::new(&mut scratch);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
                    if rb.filled().is_empty() {
                        this.state = State::Done;
                        continue;
                    }
                    let end = Self::drain(&mut dropped, &mut tail, rb.filled());
                    this.state = if end {
                        State::Answering(0)
                    } else {
                        State::Draining { dropped, tail }
                    };
                }
                State::Answering(written) if written < answer().len() => {
                    let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &answer()[written..]))?;
                    if n == 0 {
                        this.state = State::Done;
                    } else {
                        this.state = State::Answering(written + n);
                    }
                }
                State::Answering(_) => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.state = State::Done;
                }
                State::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_well_formed() {
        let text = std::str::from_utf8(answer()).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(
            body.contains("options_update") && body.contains("65534"),
            "{body}"
        );
    }
}
