//! The ceilings: what a plain async-nats JetStream publisher stores on this machine, with
//! the ingestor's window and its acks awaited concurrently and in order, on a fresh
//! nats-server, timed by the server's own first/last timestamps.
//!
//! - **store**: core-NATS publishes (no reply subject, so no acks at all) into the bare
//!   stream, counted when the stream holds them all: what nats-server can store on this
//!   machine. Paced only by the stream's state, so the server's ingest queue (100,000
//!   messages) never overflows.
//! - **bare**: no headers, no compression, a plain file stream, one ack per message:
//!   JetStream's ceiling for an acknowledged publisher.
//! - **same configuration**: the ingestor's stream settings (`ingest::stream::stream_config`)
//!   and exactly its headers (`ingest::publish::headers`): what the publish end could do
//!   with the ingestor's design, minus the ingestor's own work.

use crate::cost::Cpu;
use anyhow::{anyhow, bail, Context as _};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::future::IntoFuture;
use std::time::Instant;

/// One message to publish, as the decoder made it.
pub struct Msg {
    pub subject: async_nats::Subject,
    pub payload: Bytes,
    /// The frame's relay seq, as the `Bsky-Seq` header carries it.
    pub seq: String,
}

/// Which ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Store,
    Bare,
    SameConfig,
}

pub struct Ceiling {
    pub rate: f64,
    pub stored_secs: f64,
    pub client_rate: f64,
    /// Bytes of the server's store directory afterwards (compression included).
    pub disk_bytes: u64,
    pub cpu: Cpu,
}

/// Publishes `msgs` into a fresh stream on a fresh server.
pub async fn run(kind: Kind, msgs: &[Msg], window: usize) -> anyhow::Result<Ceiling> {
    let nats = testkit::NatsServer::start().context("starting nats-server")?;
    let nats_pid = nats.pid();
    let defaults = ingest::config::Config::default();
    let client = async_nats::connect(nats.url()).await?;
    let publish = ingest::config::Publish {
        window,
        ..defaults.publish.clone()
    };
    let js = ingest::publish::context(client.clone(), &publish);
    let cfg = match kind {
        Kind::Store | Kind::Bare => stream::Config {
            name: "BARE".into(),
            subjects: vec![ingest::stream::all_subjects()],
            ..Default::default()
        },
        Kind::SameConfig => ingest::stream::stream_config(&defaults.stream),
    };
    let name = cfg.name.clone();
    let mut stream = js
        .create_stream(cfg)
        .await
        .map_err(|e| anyhow!("creating stream {name}: {e}"))?;

    let cpu0 = Cpu::now(None, nats_pid);
    let start = Instant::now();
    match kind {
        Kind::Store => publish_no_ack(&client, &mut stream, msgs).await?,
        _ => publish_all(&js, msgs, window, kind == Kind::SameConfig).await?,
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = Cpu::now(None, nats_pid).since(&cpu0);

    let n = msgs.len() as u64;
    let state = holding(&mut stream, n).await?;
    let stored_secs = (state.last_timestamp - state.first_timestamp).as_seconds_f64();
    Ok(Ceiling {
        rate: n as f64 / stored_secs,
        stored_secs,
        client_rate: n as f64 / wall,
        disk_bytes: dir_size(&nats.store_dir()),
        cpu,
    })
}

/// Publishes `msgs` in order into an empty stream, `window` acks awaited concurrently and
/// in order; with `ingest_headers`, each carries the ingestor's headers.
pub async fn publish_all(
    js: &jetstream::Context,
    msgs: &[Msg],
    window: usize,
    ingest_headers: bool,
) -> anyhow::Result<()> {
    let mut inflight: FuturesOrdered<<PublishAckFuture as IntoFuture>::IntoFuture> =
        FuturesOrdered::new();
    for (i, m) in msgs.iter().enumerate() {
        while inflight.len() >= window {
            if let Some(ack) = inflight.next().await {
                ack.map_err(|e| anyhow!("ack: {e}"))?;
            }
        }
        let mut message = PublishMessage::build().payload(m.payload.clone());
        if ingest_headers {
            message = message.headers(ingest::publish::headers(i as u64, &m.seq));
        }
        let ack = js
            .send_publish(m.subject.clone(), message)
            .await
            .map_err(|e| anyhow!("publish {i}: {e}"))?;
        inflight.push_back(ack.into_future());
    }
    while let Some(ack) = inflight.next().await {
        ack.map_err(|e| anyhow!("ack: {e}"))?;
    }
    Ok(())
}

/// Publishes `msgs` with core NATS and no reply subject (JetStream stores them and answers
/// nothing), at most [`AHEAD`] past what the stream holds; returns when it holds them all.
async fn publish_no_ack(
    client: &async_nats::Client,
    stream: &mut jetstream::stream::Stream,
    msgs: &[Msg],
) -> anyhow::Result<()> {
    let n = msgs.len() as u64;
    let mut stored = 0u64;
    for (i, m) in msgs.iter().enumerate() {
        let i = i as u64;
        while i >= stored + AHEAD {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            stored = stored_now(stream).await?;
        }
        client
            .publish(m.subject.clone(), m.payload.clone())
            .await
            .map_err(|e| anyhow!("publish {i}: {e}"))?;
    }
    client.flush().await?;
    let mut last = (Instant::now(), stored);
    while stored < n {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        stored = stored_now(stream).await?;
        if stored > last.1 {
            last = (Instant::now(), stored);
        } else if last.0.elapsed().as_secs() >= 10 {
            bail!("the stream holds {stored} of {n} messages and no more come (dropped by the server?)");
        }
    }
    Ok(())
}

/// Messages sent and not yet stored, at most: well under the stream's ingest queue.
const AHEAD: u64 = 50_000;

async fn stored_now(stream: &mut jetstream::stream::Stream) -> anyhow::Result<u64> {
    Ok(stream
        .info()
        .await
        .map_err(|e| anyhow!("stream info: {e}"))?
        .state
        .messages)
}

/// Every message the decoder makes of `capture`, in order, and how many frames or ops it
/// skipped.
pub fn messages(capture: &staging::capture::Capture) -> (Vec<Msg>, u64) {
    let mut msgs = Vec::new();
    let mut skipped = 0u64;
    for f in capture.frames() {
        match firehose::decode(&f.bytes) {
            firehose::Decoded::Event(d) => {
                skipped += d.skipped.len() as u64;
                let seq = d.seq.to_string();
                for m in d.messages {
                    msgs.push(Msg {
                        subject: m.subject.into(),
                        payload: Bytes::from(m.payload),
                        seq: seq.clone(),
                    });
                }
            }
            firehose::Decoded::Skipped { .. } => skipped += 1,
            firehose::Decoded::Control(_) => {}
        }
    }
    (msgs, skipped)
}

/// The synthesized capture: the default network-like mix, deterministic from `seed`.
pub fn synth(ops: u64, seed: u64) -> anyhow::Result<std::sync::Arc<staging::capture::Capture>> {
    use staging::synth::{synthesize, Source, SynthConfig};
    let path = staging::fixtures::calabro();
    let source = Source::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let cfg = SynthConfig {
        seed,
        ops,
        start_seq: 1_000_000,
        ..SynthConfig::default()
    };
    let mut w = staging::capture::CaptureWriter::new(Vec::new(), None)?;
    synthesize(&source, cfg, &mut w).context("synthesizing the capture")?;
    let bytes = w.finish()?;
    Ok(std::sync::Arc::new(
        staging::capture::Capture::from_bytes(bytes).context("reading the capture")?,
    ))
}

/// The stream's state, which must hold exactly `n` messages (each op exactly once).
pub async fn holding(
    stream: &mut jetstream::stream::Stream,
    n: u64,
) -> anyhow::Result<jetstream::stream::State> {
    let info = stream
        .info()
        .await
        .map_err(|e| anyhow!("stream info: {e}"))?;
    if info.state.messages != n {
        bail!(
            "stream {} holds {} messages, expected {n}",
            info.config.name,
            info.state.messages
        );
    }
    Ok(info.state.clone())
}

/// Bytes of every file under `dir`.
pub fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}
