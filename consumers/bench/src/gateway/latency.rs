//! `consumer-bench gateway-latency`: how long an event takes from the relay sending its
//! frame to (a) a core NATS subscriber, (b) a JetStream pull consumer, (c) a gateway
//! WebSocket client, at a paced rate, all three reading live at once.
//!
//! Where it sits: the whole path, fresh for each rate. A synthesized capture
//! ([`kit::testing::synth`], the default network-like mix) is replayed by the staging relay
//! ([`staging::replay`]) paced to the wanted record ops per second → the real ingestor
//! ([`ingest::run`], configured by [`ingest::testing::config`]) → stream `BSKY` on a fresh
//! nats-server → the three readers, the gateway being the real binary (child process,
//! default settings, live tail). The relay and the ingestor each run on a current-thread
//! runtime of their own OS thread, as the ingest binary runs, apart from the readers'.
//!
//! The clock: the relay reports each frame's `seq` right after the flush that writes it to
//! the ingestor's socket ([`staging::replay::OnSent`]) and this process records the
//! instant. Each delivered message is mapped back to its frame: core and JetStream
//! messages by their `Bsky-Seq` header (the relay seq); gateway events by their `"cursor"`
//! (the stream sequence), through the stream sequence → relay seq pairs the JetStream
//! consumer saw. Latency = arrival − send instant, one process, one monotonic clock. A
//! frame carrying several ops yields several messages, each timed from that frame.

use anyhow::{anyhow, bail, Context as _};
use consumer_bench as cb;
use futures_util::StreamExt;
use staging::replay::{OnSent, ReplayOptions, Speed};
use std::collections::HashMap;
use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::ChildGuard;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Seed of the synthesized captures.
const SEED: u64 = 20261207;
/// Time for the gateway's consumer to reach the (empty) tail before the first frame.
const SETTLE: Duration = Duration::from_millis(500);
/// The target the issue sets at this rate.
const TARGET_RATE: u64 = 2000;
/// Target: the gateway's p99 at most this far above the JetStream path's.
const TARGET_P99_GAP_MS: f64 = 1.0;
/// Target: the gateway's max below this.
const TARGET_MAX_MS: f64 = 20.0;

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The stream sequence a gateway event carries (`"cursor":<digits>`).
fn cursor_of(json: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"cursor\":";
    let at = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = json[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&json[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// The relay seq a message carries (`Bsky-Seq`).
fn relay_seq(m: &async_nats::Message) -> Option<u64> {
    m.headers
        .as_ref()?
        .get(contract::header::SEQ)?
        .as_str()
        .parse()
        .ok()
}

/// p50, p99, max in milliseconds of latencies in microseconds.
fn summary(mut v: Vec<u64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    (at(0.5), at(0.99), at(1.0))
}

/// Runs the future `make` builds on a current-thread runtime of a new OS thread; its
/// output comes back through the receiver.
fn on_own_thread<T, F>(
    name: &str,
    make: impl FnOnce() -> F + Send + 'static,
) -> anyhow::Result<oneshot::Receiver<anyhow::Result<T>>>
where
    T: Send + 'static,
    F: Future<Output = anyhow::Result<T>>,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(make()));
            let _ = tx.send(out);
        })
        .with_context(|| format!("starting the {name} thread"))?;
    Ok(rx)
}

/// Waits for a thread started by [`on_own_thread`].
async fn joined<T>(rx: oneshot::Receiver<anyhow::Result<T>>, name: &str) -> anyhow::Result<T> {
    rx.await
        .map_err(|_| anyhow!("the {name} thread panicked"))?
        .with_context(|| name.to_owned())
}

/// Starts the gateway binary on `nats_url`; returns it and its address once it listens.
async fn start_gateway(
    bin: &std::path::Path,
    nats_url: &str,
    rate: u64,
) -> anyhow::Result<(ChildGuard, String)> {
    let addr = format!("127.0.0.1:{}", testkit::free_port()?);
    let log = cb::logs_dir()?.join(format!("gateway-latency-{rate}.log"));
    let file = std::fs::File::create(&log)?;
    let child = ChildGuard(
        Command::new(bin)
            .args(["--nats", nats_url, "--listen", &addr])
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
    Ok((child, addr))
}

type Reader<T> = tokio::task::JoinHandle<anyhow::Result<Vec<T>>>;

/// What one rate gave.
struct Round {
    /// Latencies in microseconds: core, JetStream, gateway.
    paths: [Vec<u64>; 3],
    /// Frames the relay sent.
    frames: usize,
    /// Messages the ingestor stored.
    messages: usize,
    /// First to last frame sent, seconds.
    sent_secs: f64,
}

/// Runs one rate for `secs` of record ops through relay → ingestor → nats-server → readers.
async fn one_rate(gateway_bin: &std::path::Path, rate: u64, secs: u64) -> anyhow::Result<Round> {
    let t = Instant::now();
    let (capture, report) = kit::testing::synth(rate * secs, SEED, now_us(), rate as f64)
        .map_err(|e| anyhow!("synthesizing the capture: {e}"))?;
    let (t0, t1) = report
        .time_range
        .context("the capture has no event times")?;
    // Event time spread over `secs` of wall time: `rate` record ops per second.
    let factor = (t1 - t0) as f64 / 1e6 / secs as f64;
    let (msgs, _) = bench::ceiling::messages(&capture);
    let total = msgs.len();
    let syncs = msgs
        .iter()
        .filter(|m| m.subject.as_str() == contract::subject::SYNC)
        .count();
    drop(msgs);
    let frames = capture.len();
    println!(
        "  {rate} ops/s: {} ops in {frames} frames → {total} messages ({syncs} #sync, not sent \
         by the gateway); synthesized in {:.1} s",
        report.ops,
        t.elapsed().as_secs_f64()
    );

    let nats = testkit::NatsServer::start().context("nats-server")?;
    let url = nats.url();

    // The relay, its frames timed as they leave.
    let sent: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::with_capacity(frames)));
    let log = sent.clone();
    let opts = ReplayOptions {
        speed: Speed::Factor(factor),
        on_sent: Some(OnSent::new(move |seq| {
            let now = Instant::now();
            if let Ok(mut log) = log.lock() {
                log.push((seq, now));
            }
        })),
        ..Default::default()
    };
    let (cfg_tx, cfg_rx) = oneshot::channel();
    let (stop_relay, relay_stopped) = oneshot::channel::<()>();
    let relay_url = url.clone();
    let relay = on_own_thread("relay", move || async move {
        let relay = staging::replay::spawn(capture, opts).await?;
        let _ = cfg_tx.send(ingest::testing::config(&relay, &relay_url));
        let _ = relay_stopped.await;
        Ok(relay.shutdown().await?)
    })?;
    let Ok(cfg) = cfg_rx.await else {
        joined(relay, "relay").await?;
        bail!("the relay did not start");
    };

    // The stream as the ingestor makes it, so the gateway and the consumer find it.
    let nats_client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(nats_client.clone());
    let stream = js
        .create_stream(ingest::stream::stream_config(&cfg.stream))
        .await
        .map_err(|e| anyhow!("creating the stream: {e}"))?;
    let (mut gateway, addr) = start_gateway(gateway_bin, &url, rate).await?;

    // (a) core NATS: (relay seq, arrival).
    let mut core_sub = nats_client.subscribe(contract::subject::ALL).await?;
    nats_client.flush().await?;
    let core: Reader<(u64, Instant)> = tokio::spawn(async move {
        let mut out = Vec::with_capacity(total);
        while out.len() < total {
            let m = tokio::time::timeout(cb::STALL, core_sub.next())
                .await
                .map_err(|_| anyhow!("core subscriber stalled"))?
                .ok_or_else(|| anyhow!("core subscription ended"))?;
            let at = Instant::now();
            let seq = relay_seq(&m).ok_or_else(|| anyhow!("core message without Bsky-Seq"))?;
            out.push((seq, at));
        }
        Ok(out)
    });
    // (b) JetStream: (stream seq, relay seq, arrival).
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("creating the consumer: {e}"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .heartbeat(Duration::from_secs(1))
        .messages()
        .await?;
    let jet: Reader<(u64, u64, Instant)> = tokio::spawn(async move {
        let mut out = Vec::with_capacity(total);
        while out.len() < total {
            let m = tokio::time::timeout(cb::STALL, messages.next())
                .await
                .map_err(|_| anyhow!("JetStream consumer stalled"))?
                .ok_or_else(|| anyhow!("JetStream consumer ended"))?
                .map_err(|e| anyhow!("JetStream consumer: {e}"))?;
            let at = Instant::now();
            let stream_seq = m
                .info()
                .map_err(|e| anyhow!("JetStream message info: {e}"))?
                .stream_sequence;
            let seq = relay_seq(&m).ok_or_else(|| anyhow!("stored message without Bsky-Seq"))?;
            out.push((stream_seq, seq, at));
        }
        Ok(out)
    });
    // (c) gateway client, live tail: (stream seq, arrival).
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/subscribe"))
        .await
        .context("connecting to the gateway")?;
    let want = total - syncs;
    let gw: Reader<(u64, Instant)> = tokio::spawn(async move {
        use tokio_tungstenite::tungstenite::Message;
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let m = tokio::time::timeout(cb::STALL, ws.next())
                .await
                .map_err(|_| anyhow!("gateway client stalled"))?
                .ok_or_else(|| anyhow!("gateway connection ended"))??;
            if let Message::Text(t) = m {
                let at = Instant::now();
                let seq = cursor_of(t.as_bytes()).ok_or_else(|| anyhow!("event without cursor"))?;
                out.push((seq, at));
            }
        }
        Ok(out)
    });
    tokio::time::sleep(SETTLE).await;

    // The ingestor, from the first frame: the relay starts sending when it connects.
    let shutdown = CancellationToken::new();
    let stop_ingest = shutdown.clone();
    let ingest = on_own_thread("ingest", move || async move {
        Ok(ingest::run(cfg, stop_ingest).await?)
    })?;

    let read = async { anyhow::Ok((core.await??, jet.await??, gw.await??)) }.await;
    shutdown.cancel();
    let ingested = joined(ingest, "ingest").await;
    let _ = stop_relay.send(());
    let relayed = joined(relay, "relay").await;
    gateway.terminate(Duration::from_secs(10));
    drop(nats);
    let (core, jet, gw) = read?;
    ingested?;
    relayed?;

    // Each frame's first send (a reconnecting ingestor would be sent some frames again).
    let sent = std::mem::take(&mut *sent.lock().map_err(|_| anyhow!("send log poisoned"))?);
    let sent_secs = match (sent.first(), sent.last()) {
        (Some((_, a)), Some((_, b))) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    };
    let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(sent.len());
    for (seq, at) in sent {
        sent_at.entry(seq).or_insert(at);
    }
    if sent_at.len() != frames {
        bail!(
            "the relay reported {} of {frames} frames sent",
            sent_at.len()
        );
    }
    let latency = |seq: u64, at: Instant| -> anyhow::Result<u64> {
        let sent = sent_at
            .get(&seq)
            .ok_or_else(|| anyhow!("relay seq {seq} was never sent"))?;
        Ok(at.saturating_duration_since(*sent).as_micros() as u64)
    };
    let by_stream_seq: HashMap<u64, u64> = jet.iter().map(|&(s, r, _)| (s, r)).collect();
    let core = core
        .into_iter()
        .map(|(seq, at)| latency(seq, at))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gw = gw
        .into_iter()
        .map(|(stream_seq, at)| {
            let seq = by_stream_seq
                .get(&stream_seq)
                .ok_or_else(|| anyhow!("gateway cursor {stream_seq} not in the stream"))?;
            latency(*seq, at)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let jet = jet
        .into_iter()
        .map(|(_, seq, at)| latency(seq, at))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Round {
        paths: [core, jet, gw],
        frames,
        messages: total,
        sent_secs,
    })
}

pub async fn latency(rates: Vec<u64>, secs: u64) -> anyhow::Result<()> {
    let bin = cb::sibling("gateway")?;
    println!(
        "relay → ingest → nats-server → readers; clock from the relay's send of each frame \
         (seed {SEED}, {secs} s per rate)"
    );
    let mut rounds = Vec::new();
    for &rate in &rates {
        let round = one_rate(&bin, rate, secs).await?;
        if round.sent_secs > secs as f64 * 1.2 {
            println!(
                "  (the relay took {:.1} s to send {secs} s of events: the machine is saturated)",
                round.sent_secs
            );
        }
        rounds.push((rate, round));
    }
    println!();
    println!("| ops/s | path | p50 ms | p99 ms | max ms | messages |");
    println!("|---|---|---|---|---|---|");
    let mut line = String::new();
    let mut verdicts = Vec::new();
    for (rate, round) in rounds {
        let mut p99s = [0.0; 3];
        let mut maxes = [0.0; 3];
        for (i, (name, v)) in ["core NATS", "JetStream pull", "gateway client"]
            .iter()
            .zip(round.paths)
            .enumerate()
        {
            let n = v.len();
            let (p50, p99, max) = summary(v);
            p99s[i] = p99;
            maxes[i] = max;
            println!("| {rate} | {name} | {p50:.2} | {p99:.2} | {max:.2} | {n} |");
            let key = name.split(' ').next().unwrap_or(name).to_lowercase();
            line += &format!(" r{rate}_{key}_p50_ms={p50:.2} r{rate}_{key}_p99_ms={p99:.2} r{rate}_{key}_max_ms={max:.2}");
        }
        let gap = p99s[2] - p99s[1];
        line += &format!(
            " r{rate}_gateway_minus_jetstream_p99_ms={gap:.2} r{rate}_sent_msgs_s={:.0}",
            round.messages as f64 / round.sent_secs.max(1e-9)
        );
        verdicts.push(format!(
            "{rate} ops/s: gateway p99 − JetStream p99 = {gap:+.2} ms; the relay sent {} frames \
             ({} messages) in {:.2} s",
            round.frames, round.messages, round.sent_secs
        ));
        if rate == TARGET_RATE {
            let met = gap <= TARGET_P99_GAP_MS && maxes[2] < TARGET_MAX_MS;
            verdicts.push(format!(
                "target at {TARGET_RATE} ops/s (gateway p99 within {TARGET_P99_GAP_MS} ms of \
                 JetStream's, gateway max under {TARGET_MAX_MS} ms): {} (p99 gap {gap:+.2} ms, \
                 max {:.2} ms)",
                if met { "MET" } else { "NOT MET" },
                maxes[2]
            ));
            line += &format!(" target_{TARGET_RATE}_met={met}");
        }
    }
    println!();
    for v in verdicts {
        println!("{v}");
    }
    println!();
    println!("{}", line.trim_start());
    Ok(())
}
