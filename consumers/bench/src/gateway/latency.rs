//! `consumer-bench gateway-latency`: how long an event takes from its publish into the
//! stream to (a) a core NATS subscriber, (b) a JetStream pull consumer, (c) a gateway
//! WebSocket client, at a paced rate, all three reading live at once.
//!
//! Where it sits: this process publishes (paced, like the ingestor on a live relay) →
//! stream `BSKY` (fresh nats-server) → the three readers, the gateway being the real binary
//! (child process, `TCP_NODELAY`, default settings). Each payload has the shape of a real
//! like (~400 bytes) and carries its publish time in the record (`sent_us`), which the
//! gateway passes through unchanged; a reader's latency is its arrival time minus that.
//! The relay → ingestor hop is the same for every path and is left out.

use anyhow::{anyhow, bail, Context as _};
use consumer_bench as cb;
use futures_util::StreamExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::ChildGuard;

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The publish time a payload carries.
fn sent_us(payload: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"sent_us\":";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn payload(i: u64) -> Vec<u8> {
    let t = now_us();
    format!(
        r#"{{"did":"did:plc:latencybench{:012}","time_us":{t},"kind":"commit","commit":{{"rev":"3lbench{i}","operation":"create","collection":"app.bsky.feed.like","rkey":"3l{i}","record":{{"$type":"app.bsky.feed.like","createdAt":"2026-12-07T10:00:00.000Z","sent_us":{t},"subject":{{"cid":"bafyreidc6sydkkbchcyg62v77wbhzvb2mvytlmsychqgwf2xojjtirmzj4","uri":"at://did:plc:wa7b35aakoll7hugkrjtf3xf/app.bsky.feed.post/3l3pte3p2e325"}}}},"cid":"bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi"}}}}"#,
        i % 1000
    )
    .into_bytes()
}

/// p50, p99, max of latencies in microseconds.
fn summary(mut v: Vec<i64>) -> (f64, f64, f64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    (at(0.5), at(0.99), at(1.0))
}

type Latencies = tokio::task::JoinHandle<anyhow::Result<Vec<i64>>>;

/// Runs one rate for `secs`; (core, JetStream, gateway) latencies in microseconds.
async fn one_rate(
    nats_url: &str,
    gateway: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<[Vec<i64>; 3]> {
    let total = rate * secs;
    let nats = async_nats::connect(nats_url).await?;
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js.get_stream(cb::STREAM).await?;
    let start_seq = stream.get_info().await?.state.last_sequence + 1;

    let mut core_sub = nats.subscribe("bsky.>").await?;
    let core: Latencies = tokio::spawn(async move {
        let mut out = Vec::with_capacity(total as usize);
        while (out.len() as u64) < total {
            let m = tokio::time::timeout(cb::STALL, core_sub.next())
                .await
                .map_err(|_| anyhow!("core subscriber stalled"))?
                .ok_or_else(|| anyhow!("core subscription ended"))?;
            let t = sent_us(&m.payload).ok_or_else(|| anyhow!("no sent_us"))?;
            out.push(now_us() - t);
        }
        Ok(out)
    });
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start_seq,
            },
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .heartbeat(Duration::from_secs(1))
        .messages()
        .await?;
    let jet: Latencies = tokio::spawn(async move {
        let mut out = Vec::with_capacity(total as usize);
        while (out.len() as u64) < total {
            let m = tokio::time::timeout(cb::STALL, messages.next())
                .await
                .map_err(|_| anyhow!("JetStream consumer stalled"))?
                .ok_or_else(|| anyhow!("JetStream consumer ended"))??;
            let t = sent_us(&m.payload).ok_or_else(|| anyhow!("no sent_us"))?;
            out.push(now_us() - t);
        }
        Ok(out)
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{gateway}/subscribe"))
        .await
        .context("connecting to the gateway")?;
    let gw: Latencies = tokio::spawn(async move {
        use tokio_tungstenite::tungstenite::Message;
        let mut out = Vec::with_capacity(total as usize);
        while (out.len() as u64) < total {
            let m = tokio::time::timeout(cb::STALL, ws.next())
                .await
                .map_err(|_| anyhow!("gateway client stalled"))?
                .ok_or_else(|| anyhow!("gateway connection ended"))??;
            if let Message::Text(t) = m {
                let sent = sent_us(t.as_bytes()).ok_or_else(|| anyhow!("no sent_us"))?;
                out.push(now_us() - sent);
            }
        }
        Ok(out)
    });
    // Let the gateway's consumer reach the tail before the first publish.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Paced publish: each millisecond, the events due by then; acks awaited behind.
    let started = Instant::now();
    let (acks_tx, mut acks_rx) = tokio::sync::mpsc::channel(4096);
    let acker = tokio::spawn(async move {
        while let Some(ack) = acks_rx.recv().await {
            let ack: async_nats::jetstream::context::PublishAckFuture = ack;
            ack.await.map_err(|e| anyhow!("publish ack: {e}"))?;
        }
        anyhow::Ok(())
    });
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            let ack = js
                .publish("bsky.app.bsky.feed.like", payload(sent).into())
                .await?;
            acks_tx.send(ack).await.map_err(|_| anyhow!("acker gone"))?;
            sent += 1;
        }
    }
    drop(acks_tx);
    acker.await??;
    let pace = started.elapsed().as_secs_f64();
    if pace > secs as f64 * 1.2 {
        println!(
            "  (publishing took {pace:.1} s for {secs} s of events: the machine is saturated)"
        );
    }
    Ok([core.await??, jet.await??, gw.await??])
}

pub async fn latency(rates: Vec<u64>, secs: u64) -> anyhow::Result<()> {
    let bin = cb::sibling("gateway")?;
    let nats = testkit::NatsServer::start()?;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: cb::STREAM.into(),
        subjects: vec!["bsky.>".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("creating the stream: {e}"))?;
    let addr = format!("127.0.0.1:{}", testkit::free_port()?);
    let log = cb::logs_dir()?.join("gateway-latency.log");
    let file = std::fs::File::create(&log)?;
    let mut child = ChildGuard(
        Command::new(&bin)
            .args(["--nats", &nats.url(), "--listen", &addr])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("spawning the gateway")?,
    );
    let started = Instant::now();
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the gateway is not listening; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("| ops/s | path | p50 ms | p99 ms | max ms | events |");
    println!("|---|---|---|---|---|---|");
    let mut line = String::new();
    for rate in rates {
        let got = one_rate(&nats.url(), &addr, rate, secs).await?;
        for (name, v) in ["core NATS", "JetStream pull", "gateway client"]
            .iter()
            .zip(got)
        {
            let n = v.len();
            let (p50, p99, max) = summary(v);
            println!("| {rate} | {name} | {p50:.2} | {p99:.2} | {max:.2} | {n} |");
            let key = name.split(' ').next().unwrap_or(name).to_lowercase();
            line += &format!(" r{rate}_{key}_p50_ms={p50:.2} r{rate}_{key}_p99_ms={p99:.2} r{rate}_{key}_max_ms={max:.2}");
        }
    }
    child.terminate(Duration::from_secs(10));
    println!();
    println!("{}", line.trim_start());
    Ok(())
}
