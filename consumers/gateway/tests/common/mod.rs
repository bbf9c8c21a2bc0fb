//! What the gateway's integration tests share: the gateway in-process on its own port, the
//! stream read back, real Jetstream client libraries (node) and a raw WebSocket client.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // test code: a panic is a failed test

use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// How long any wait in these tests may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// How long a client keeps listening after the expected events, to catch extra ones.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// The gateway, served by `gateway::serve` in this process.
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), gateway::RunError>>,
}

/// A test configuration: this NATS server, quiet, a short stuck timeout.
pub fn config(nats_url: &str) -> gateway::config::Config {
    let mut c = gateway::config::Config::default();
    c.nats.url = nats_url.to_string();
    c
}

impl Gateway {
    pub async fn start(config: gateway::config::Config) -> Gateway {
        Self::start_at(config, "127.0.0.1:0".parse().unwrap()).await
    }

    /// The same on a given address (port 0: any), e.g. the address of one just stopped.
    pub async fn start_at(config: gateway::config::Config, addr: SocketAddr) -> Gateway {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway::serve(listener, config, shutdown.clone()));
        let gw = Gateway {
            addr,
            shutdown,
            task,
        };
        let start = Instant::now();
        while http_get(addr, "/healthz").await.0 != 200 {
            assert!(!gw.task.is_finished(), "the gateway stopped at start");
            assert!(start.elapsed() < PATIENCE, "gateway not healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gw
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A metric's value from `GET /metrics` (first sample whose name and labels match).
    pub async fn metric(&self, sample: &str) -> f64 {
        metric(self.addr, sample).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// A metric from `/metrics` at `addr`; 0 when absent.
pub async fn metric(addr: SocketAddr, sample: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `GET path`: (status, body); status 0 when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    testkit::http::get(addr, path)
        .await
        .unwrap_or((0, String::new()))
}

/// Every message of stream `BSKY`, in order: (sequence, payload as JSON as the gateway
/// must send it: `time_us` the storage time in microseconds, `cursor` the sequence). The
/// stored payload itself carries the event's own time; [`event_times`] reads those.
pub async fn stream_events(nats_url: &str) -> Vec<(u64, Value)> {
    stored(nats_url)
        .await
        .into_iter()
        .map(|(seq, mut v, stored_us)| {
            v["time_us"] = stored_us.into();
            v["cursor"] = seq.into();
            (seq, v)
        })
        .collect()
}

/// The event's own time (`time_us` in the stream payload) of every message, in order.
pub async fn event_times(nats_url: &str) -> Vec<i64> {
    stored(nats_url)
        .await
        .iter()
        .map(|(_, v, _)| v["time_us"].as_i64().unwrap())
        .collect()
}

/// (sequence, stored payload, storage time in microseconds), read back with direct gets.
pub async fn stored(nats_url: &str) -> Vec<(u64, Value, i64)> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.direct_get(seq).await.unwrap();
        let stored_us = i64::try_from(m.time.unix_timestamp_nanos() / 1000).unwrap();
        out.push((seq, serde_json::from_slice(&m.payload).unwrap(), stored_us));
    }
    out
}

/// A stored message as the ingestor published it: (subject, payload bytes).
pub type Raw = (String, bytes::Bytes);

/// Publishes raw messages again, as the ingestor would.
pub async fn publish(nats_url: &str, messages: &[Raw]) {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    for (subject, body) in messages {
        js.publish(subject.clone(), body.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// Every stored message, raw (event times, no cursor).
pub async fn payloads(nats_url: &str) -> Vec<Raw> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.direct_get(seq).await.unwrap();
        out.push((m.subject.to_string(), m.payload));
    }
    out
}

/// The events of `all` a Jetstream client with these filters must get (sync excluded).
pub fn filtered(all: &[(u64, Value)], keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    all.iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] != "sync" && keep(v))
        .cloned()
        .collect()
}

/// The stream filled from a capture by the real ingestor.
pub async fn pipeline(capture: staging::capture::Capture) -> ingest::testing::Pipeline {
    pipeline_with(capture, Default::default()).await
}

/// The same, the relay replaying with `opts` (e.g. at live pace).
pub async fn pipeline_with(
    capture: staging::capture::Capture,
    opts: staging::replay::ReplayOptions,
) -> ingest::testing::Pipeline {
    let n = capture.len() as u64;
    let p = ingest::testing::Pipeline::start(Arc::new(capture), opts)
        .await
        .expect("pipeline");
    // Every frame gives at least one message; then wait for the stream to stop growing.
    p.wait_stored(n, PATIENCE).await.expect("stored");
    let js = async_nats::jetstream::new(async_nats::connect(p.nats.url()).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    let (mut held, mut still) = (0, 0);
    while still < 4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = stream.get_info().await.unwrap().state.messages;
        (held, still) = if now == held {
            (now, still + 1)
        } else {
            (now, 0)
        };
    }
    p
}

/// The real-frame corpus in the stream: all 152 messages.
pub async fn corpus_pipeline() -> ingest::testing::Pipeline {
    let p = pipeline(staging::fixtures::corpus().unwrap()).await;
    p.wait_stored(152, PATIENCE).await.expect("152 stored");
    p
}

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Whether the node client libraries can run; installs them once (deploy script) when
/// node and npm are there. Without them: `false` outside CI, a failure under `CI=true`.
pub fn node_ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = std::process::Command::new("bash")
            .arg(root.join("deploy/setup-node-clients.sh"))
            .status()
            .map_err(|e| format!("cannot run deploy/setup-node-clients.sh: {e}"))?;
        if !status.success() {
            return Err(format!("deploy/setup-node-clients.sh failed: {status}"));
        }
        if !js_dir().join("node_modules/@skyware/jetstream").is_dir() {
            return Err(
                "node or npm not found, the Jetstream client libraries are not installed".into(),
            );
        }
        Ok(())
    });
    match ready {
        Ok(()) => true,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{why}; under CI the client-library tests must run")
        }
        Err(why) => {
            eprintln!("SKIPPED: {why} (run bash deploy/setup-node-clients.sh)");
            false
        }
    }
}

/// One node process running `tests/js/client.mjs` with a real client library.
pub struct NodeClient {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl NodeClient {
    /// Starts a client with `options` (see client.mjs); waits until it is connected.
    pub async fn start(options: Value) -> NodeClient {
        let mut child = tokio::process::Command::new("node")
            .arg(js_dir().join("client.mjs"))
            .arg(options.to_string())
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut c = NodeClient {
            child,
            stdin,
            lines,
        };
        let open = c.next_line(PATIENCE).await.expect("client never connected");
        assert_eq!(open, serde_json::json!({"$open": true}), "{options}");
        c
    }

    async fn next_line(&mut self, wait: Duration) -> Option<Value> {
        match tokio::time::timeout(wait, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Some(serde_json::from_str(&line).unwrap()),
            Ok(Ok(None)) => panic!("the node client exited: {:?}", self.child.try_wait()),
            Ok(Err(e)) => panic!("reading the node client: {e}"),
            Err(_) => None,
        }
    }

    /// Reads `n` events (failing after [`PATIENCE`]), then whatever else comes within
    /// [`SETTLE`]: every event received.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let start = Instant::now();
        while out.len() < n {
            let left = PATIENCE.saturating_sub(start.elapsed());
            match self.next_line(left).await {
                Some(v) if v.get("$close").is_some() => panic!("closed: {v}"),
                // A reconnect (skyware reconnects by itself, with its cursor).
                Some(v) if v.get("$open").is_some() => {}
                Some(v) => out.push(v),
                None => panic!("{} of {n} events after {PATIENCE:?}", out.len()),
            }
        }
        while let Some(v) = self.next_line(SETTLE).await {
            if v.get("$open").is_none() {
                out.push(v);
            }
        }
        out
    }

    /// Sends an `options_update` through the library.
    pub async fn update(&mut self, payload: Value) {
        let line = serde_json::json!({ "update": payload }).to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).await.unwrap();
    }

    /// Ends the client: its summary (events, payload and wire bytes, extensions).
    pub async fn finish(mut self) -> Value {
        self.stdin.write_all(b"{\"exit\":true}\n").await.unwrap();
        loop {
            let v = self.next_line(PATIENCE).await.expect("no summary");
            if let Some(s) = v.get("$summary") {
                return s.clone();
            }
        }
    }
}

/// Events as a sorted list of keys (time-independent), to compare with expected_v1.
pub fn keys(events: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = events.iter().map(staging::fixtures::event_key).collect();
    k.sort();
    k
}

/// A raw WebSocket client (tokio-tungstenite: no compression) on `/subscribe?query`.
pub async fn raw_client(
    gw: &Gateway,
    query: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/subscribe?{query}", gw.url());
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Reads `n` text events from a raw client (failing when nothing comes for [`PATIENCE`]),
/// then whatever else comes within [`SETTLE`].
pub async fn raw_events<S>(ws: &mut S, n: usize) -> Vec<Value>
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let start = Instant::now();
    loop {
        // A stall, not a slow machine, fails the read: PATIENCE without a message.
        let wait = if out.len() < n { PATIENCE } else { SETTLE };
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                out.push(serde_json::from_str(t.as_str()).unwrap())
            }
            Ok(Some(Ok(other))) => panic!("unexpected frame {other:?}"),
            Ok(Some(Err(e))) => panic!("client error: {e}"),
            Ok(None) => panic!("closed after {} events", out.len()),
            Err(_) if out.len() < n => panic!(
                "{} of {n} events, then nothing for {PATIENCE:?} ({:?} in all)",
                out.len(),
                start.elapsed()
            ),
            Err(_) => return out,
        }
    }
}

/// Connects with `?query` and reads until the message whose `cursor` is `last`: on a stream
/// that no longer grows, everything the client will ever get, without waiting for more.
pub async fn read_until(gw: &Gateway, query: &str, last: u64) -> Vec<Value> {
    use futures_util::StreamExt;
    let mut ws = raw_client(gw, query).await;
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{query}: {} events, then nothing", out.len()));
        match frame {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                let done = v["cursor"].as_u64() == Some(last);
                out.push(v);
                if done {
                    let _ = ws.close(None).await;
                    return out;
                }
            }
            other => panic!("{query}: unexpected {other:?}"),
        }
    }
}
