//! Measures replay throughput: serves a capture at full speed to N in-process clients and
//! reports frames/s and MB/s per client.
//!
//! ```sh
//! cargo run --release -p staging --example replay_throughput -- CAPTURE [CLIENTS]
//! ```

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use staging::capture::Capture;
use staging::replay::{self, ReplayOptions};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: replay_throughput CAPTURE [CLIENTS]"))?;
    let clients: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1);
    let started = Instant::now();
    let capture = Arc::new(Capture::load(&path)?);
    println!(
        "loaded {} frames, {} bytes in {:.2} s",
        capture.len(),
        capture.total_bytes(),
        started.elapsed().as_secs_f64()
    );
    let relay = replay::spawn(capture.clone(), ReplayOptions::default()).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let url = relay.url();
        let want = capture.len();
        tasks.push(tokio::spawn(async move {
            let config = WebSocketConfig::default()
                .max_message_size(Some(16 << 20))
                .max_frame_size(Some(16 << 20));
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
            let (mut frames, mut bytes) = (0usize, 0u64);
            while frames < want {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        frames += 1;
                        bytes += b.len() as u64;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(anyhow::Error::from(e)),
                    None => break,
                }
            }
            Ok::<_, anyhow::Error>((frames, bytes))
        }));
    }
    let mut total = (0usize, 0u64);
    for t in tasks {
        let (f, b) = t.await??;
        total.0 += f;
        total.1 += b;
    }
    let secs = started.elapsed().as_secs_f64();
    relay.shutdown().await?;
    println!(
        "{clients} client(s): {} frames, {} bytes in {secs:.2} s: {:.0} frames/s, {:.0} MB/s in total",
        total.0,
        total.1,
        total.0 as f64 / secs,
        total.1 as f64 / secs / 1e6
    );
    Ok(())
}
