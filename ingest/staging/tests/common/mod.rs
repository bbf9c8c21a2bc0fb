//! Shared helpers of the staging integration tests: fixture paths, the real corpus, and a
//! plain tokio-tungstenite client.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use staging::capture::Capture;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use staging::fixtures::{calabro as calabro_path, corpus_path};

/// The 150 real production frames.
pub fn corpus() -> Arc<Capture> {
    Arc::new(Capture::load(corpus_path()).expect("load the real corpus"))
}

/// The corpus decompressed: `[u32 LE len][frame]…`.
pub fn corpus_plain_bytes() -> Vec<u8> {
    let raw = std::fs::read(corpus_path()).expect("read corpus");
    zstd::decode_all(&raw[..]).expect("decompress corpus")
}

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(url: &str) -> Client {
    let config = WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// What the client saw next.
#[derive(Debug)]
pub enum Next {
    Binary(Bytes),
    /// A close frame arrived (its code and reason).
    Closed(Option<(u16, String)>),
    /// The connection ended without a close frame.
    Dropped(String),
    /// Nothing within the wait.
    Quiet,
}

pub async fn next(ws: &mut Client, wait: Duration) -> Next {
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return Next::Quiet,
            Ok(None) => return Next::Dropped("stream ended".into()),
            Ok(Some(Err(e))) => return Next::Dropped(e.to_string()),
            Ok(Some(Ok(Message::Binary(b)))) => return Next::Binary(b),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Next::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Reads `n` binary messages (panics on anything else or a 5 s stall).
pub async fn take(ws: &mut Client, n: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next(ws, Duration::from_secs(5)).await {
            Next::Binary(b) => out.push(b),
            other => panic!("after {} messages: {other:?}", out.len()),
        }
    }
    out
}

/// A frame's header and body as generic maps of key -> value, decoded with serde_ipld_dagcbor
/// (strict DAG-CBOR: canonical key order is checked by the decoder).
pub fn split_frame<'a, H, B>(frame: &'a [u8]) -> (H, B)
where
    H: serde::Deserialize<'a>,
    B: serde::Deserialize<'a>,
{
    let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(frame);
    let h = H::deserialize(&mut de).expect("header");
    let b = B::deserialize(&mut de).expect("body");
    de.end().expect("nothing after the body");
    (h, b)
}

#[derive(Debug, serde::Deserialize)]
pub struct Header {
    pub op: i64,
    #[serde(default)]
    pub t: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct ErrorOrInfo {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub struct SeqOnly {
    #[serde(default)]
    pub seq: Option<u64>,
}

pub fn seq_of(frame: &[u8]) -> Option<u64> {
    split_frame::<Header, SeqOnly>(frame).1.seq
}
