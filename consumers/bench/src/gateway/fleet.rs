//! N WebSocket clients of the gateway, in the benchmark process, all at once.
//!
//! Where it sits: stream `BSKY` → gateway (child process) → **fleet** (this process). Each
//! client connects to `/subscribe?cursor=0` (a cursor older than the stream: its first
//! message, every collection, no DID filter), counts the messages and their bytes (it
//! keeps none of them) until it has `want`, then closes. With zstd the bytes are the
//! compressed frames (the client does not decompress them); with permessage-deflate (a
//! yawc client, which inflates) the payload bytes. The fleet reports the wall time
//! from the first connect to the last client done, and each client's own figures.

use super::Encoding;
use anyhow::{anyhow, bail, Context as _};
use consumer_bench::STALL;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// A client adds its count to the shared progress counter every this many messages.
const FLUSH_EVERY: u64 = 1024;
/// Progress is printed this often.
const PROGRESS: Duration = Duration::from_secs(10);

/// What one client received.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub msgs: u64,
    pub bytes: u64,
    /// Seconds from the fleet's start to this client's last message.
    pub done_at: f64,
}

/// What the whole fleet received.
#[derive(Debug)]
pub struct Fleet {
    pub clients: Vec<Client>,
    /// Seconds from the first connect to the last client done.
    pub secs: f64,
}

impl Fleet {
    pub fn msgs(&self) -> u64 {
        self.clients.iter().map(|c| c.msgs).sum()
    }

    pub fn per_s(&self) -> f64 {
        self.msgs() as f64 / self.secs.max(1e-9)
    }

    /// (fastest, slowest) client's finishing time, seconds.
    pub fn spread(&self) -> (f64, f64) {
        self.clients.iter().fold((f64::MAX, 0.0f64), |(lo, hi), c| {
            (lo.min(c.done_at), hi.max(c.done_at))
        })
    }
}

/// Runs `n` clients on `url`, each until it has `want` messages; `sample` is called at
/// each progress line (the caller's view of the gateway, e.g. its RSS).
pub async fn run(
    url: &str,
    encoding: Encoding,
    n: usize,
    want: u64,
    sample: impl Fn() -> String,
) -> anyhow::Result<Fleet> {
    let delivered = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for id in 0..n {
        let (url, delivered) = (url.to_string(), delivered.clone());
        set.spawn(async move {
            let done = match encoding {
                Encoding::Deflate => deflate_client(&url, want, &delivered, start).await,
                Encoding::Plain | Encoding::Zstd => {
                    client(&url, encoding, want, &delivered, start).await
                }
            };
            done.with_context(|| format!("client {id}"))
        });
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS, PROGRESS);
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        tokio::select! {
            joined = set.join_next() => {
                let done = joined.context("a client task vanished")?.context("a client task")??;
                clients.push(done);
            }
            _ = tick.tick() => {
                let t = start.elapsed().as_secs_f64();
                let got = delivered.load(Ordering::Relaxed);
                println!(
                    "  {t:>5.0} s: {got} of {} delivered ({:.0} msgs/s), {} of {n} clients done; {}",
                    want * n as u64,
                    got as f64 / t,
                    clients.len(),
                    sample()
                );
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Fleet { clients, secs })
}

/// One client: connect, count `want` messages, close.
async fn client(
    url: &str,
    encoding: Encoding,
    want: u64,
    delivered: &AtomicU64,
    start: Instant,
) -> anyhow::Result<Client> {
    let (mut ws, _) = tokio::time::timeout(STALL, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| anyhow!("no WebSocket upgrade within {STALL:?}"))?
        .context("connecting")?;
    let (mut msgs, mut bytes, mut unflushed) = (0u64, 0u64, 0u64);
    while msgs < want {
        let frame = tokio::time::timeout(STALL, ws.next())
            .await
            .map_err(|_| anyhow!("nothing for {STALL:?} after {msgs} of {want} messages"))?;
        match frame {
            Some(Ok(Message::Text(t))) if encoding == Encoding::Plain => {
                msgs += 1;
                bytes += t.len() as u64;
                unflushed += 1;
                if unflushed == FLUSH_EVERY {
                    delivered.fetch_add(unflushed, Ordering::Relaxed);
                    unflushed = 0;
                }
            }
            Some(Ok(Message::Close(why))) => {
                bail!("closed by the gateway after {msgs} of {want} messages: {why:?}")
            }
            Some(Ok(Message::Binary(b))) if encoding == Encoding::Zstd => {
                msgs += 1;
                bytes += b.len() as u64;
                unflushed += 1;
                if unflushed == FLUSH_EVERY {
                    delivered.fetch_add(unflushed, Ordering::Relaxed);
                    unflushed = 0;
                }
            }
            Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                bail!("{encoding:?}: a frame of the other kind")
            }
            Some(Ok(_)) => {} // ping, pong
            Some(Err(e)) => return Err(e).context(format!("reading, after {msgs} messages")),
            None => bail!("connection ended after {msgs} of {want} messages"),
        }
    }
    let done_at = start.elapsed().as_secs_f64();
    delivered.fetch_add(unflushed, Ordering::Relaxed);
    // Best effort: the figures are taken; the gateway sees the close or the reset.
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(Client {
        msgs,
        bytes,
        done_at,
    })
}

/// One client negotiating permessage-deflate (yawc inflates each message).
async fn deflate_client(
    url: &str,
    want: u64,
    delivered: &AtomicU64,
    start: Instant,
) -> anyhow::Result<Client> {
    use yawc::{OpCode, Options, WebSocket};
    let options = Options::default()
        .with_balanced_compression()
        .with_max_payload_read(16 << 20);
    let mut ws = tokio::time::timeout(
        STALL,
        WebSocket::connect(url.parse()?).with_options(options),
    )
    .await
    .map_err(|_| anyhow!("no WebSocket upgrade within {STALL:?}"))?
    .context("connecting")?;
    let (mut msgs, mut bytes, mut unflushed) = (0u64, 0u64, 0u64);
    while msgs < want {
        let frame = tokio::time::timeout(STALL, ws.next())
            .await
            .map_err(|_| anyhow!("nothing for {STALL:?} after {msgs} of {want} messages"))?
            .ok_or_else(|| anyhow!("connection ended after {msgs} of {want} messages"))?;
        match frame.opcode() {
            OpCode::Text => {
                msgs += 1;
                bytes += frame.payload().len() as u64;
                unflushed += 1;
                if unflushed == FLUSH_EVERY {
                    delivered.fetch_add(unflushed, Ordering::Relaxed);
                    unflushed = 0;
                }
            }
            OpCode::Close => bail!("closed by the gateway after {msgs} of {want} messages"),
            OpCode::Binary => bail!("a binary frame: the gateway sends text"),
            _ => {}
        }
    }
    let done_at = start.elapsed().as_secs_f64();
    delivered.fetch_add(unflushed, Ordering::Relaxed);
    Ok(Client {
        msgs,
        bytes,
        done_at,
    })
}
