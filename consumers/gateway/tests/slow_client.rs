//! A client that reads nothing, against the real `gateway` binary: its memory stays within
//! what its buffer allows (not a timing assertion: a bound on bytes), another client
//! receives everything meanwhile, and the stuck one is closed with reason "stuck": when it
//! reads again, it finds a close frame (1008, "too slow…") behind what its socket held.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{filtered, metric, raw_events, stream_events, PATIENCE};
use std::time::{Duration, Instant};

const BUFFER_BYTES: u64 = 256 << 10;

/// (VmRSS, VmHWM) of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn capture() -> staging::capture::Capture {
    use staging::synth::{synthesize, Source, SynthConfig};
    let source = Source::load(staging::fixtures::calabro()).unwrap();
    let cfg = SynthConfig {
        ops: 40_000,
        seed: 3,
        repos: 500,
        big_every: 0,
        max_ops_every: 0,
        ..SynthConfig::default()
    };
    let mut w = staging::capture::CaptureWriter::new(Vec::new(), None).unwrap();
    synthesize(&source, cfg, &mut w).unwrap();
    staging::capture::Capture::from_bytes(w.finish().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_costs_no_more_than_its_buffer() {
    let pipeline = common::pipeline(capture()).await;
    let url = pipeline.nats.url();
    let all = stream_events(&url).await;
    let every = filtered(&all, |_| true);
    let total: usize = every.iter().map(|v| v.to_string().len()).sum();

    let port = testkit::free_port().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .env("BSKY_GATEWAY_HTTP__LISTEN", addr.to_string())
        .env("BSKY_GATEWAY_NATS__URL", &url)
        .env(
            "BSKY_GATEWAY_CLIENT__BUFFER_BYTES",
            BUFFER_BYTES.to_string(),
        )
        .env("BSKY_GATEWAY_CLIENT__PULL_BATCH", "64")
        .env("BSKY_GATEWAY_CLIENT__STUCK_TIMEOUT", "10s")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let mut gateway = testkit::ChildGuard(child);
    let start = Instant::now();
    while common::http_get(addr, "/healthz").await.0 != 200 {
        assert!(start.elapsed() < PATIENCE, "gateway not healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (baseline, _) = memory(gateway.id());

    // The slow client: a small receive buffer, and it never reads after the handshake.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/subscribe?cursor=0"), stream)
            .await
            .unwrap();
    // Wait until the gateway can write no more to it.
    let (mut last, mut still) = (-1.0, 0);
    while still < 8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sent = metric(addr, "bsky_gateway_messages_sent_total").await;
        (still, last) = if sent == last && sent > 0.0 {
            (still + 1, sent)
        } else {
            (0, sent)
        };
        assert!(
            start.elapsed() < PATIENCE * 2,
            "the slow client's writes never stopped"
        );
    }
    let (rss, peak) = memory(gateway.id());
    let sent = last as usize;
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "slow client: {sent} of {} events ({} MB) written before its socket filled; \
         gateway RSS {} MB -> {} MB, peak {} MB (growth {} KB)",
        every.len(),
        total >> 20,
        baseline >> 20,
        rss >> 20,
        peak >> 20,
        growth >> 10
    );
    assert!(
        sent < every.len() / 2,
        "the socket took too much for this test to mean anything"
    );
    // What the buffer allows: one pull and one buffer of payload, the socket writer's own
    // buffer, and a fixed allowance for the allocator and the runtime. Far below the
    // stream's size, which an unbounded gateway would hold.
    let bound = 4 * BUFFER_BYTES + (4 << 20);
    assert!(total as u64 > 3 * bound, "stream too small: {total}");
    assert!(growth < bound, "RSS grew {growth} bytes, bound {bound}");

    // Another client receives everything meanwhile.
    let gw_url = format!("ws://{addr}/subscribe?cursor=0");
    let mut fast = tokio_tungstenite::connect_async(gw_url).await.unwrap().0;
    let want = every.len();
    let fast = tokio::spawn(async move { raw_events(&mut fast, want).await });

    // The stuck one is closed with its reason ...
    let stuck = "bsky_gateway_clients_closed_total{reason=\"stuck\"}";
    while metric(addr, stuck).await < 1.0 {
        assert!(
            start.elapsed() < PATIENCE * 3,
            "the stuck client was never closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... and, reading again at once, finds what its socket held, then the close frame.
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let close = loop {
        match tokio::time::timeout(PATIENCE, slow.next()).await.unwrap() {
            Some(Ok(Message::Text(_))) => {}
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Policy);
    assert!(close.reason.contains("too slow"), "{}", close.reason);

    let got = fast.await.unwrap();
    assert!(got == every, "the other client got {} events", got.len());
    let status = gateway.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "{status}");
    pipeline.stop().await.unwrap();
}
