//! # bench: the end-to-end benchmark, one run, one machine
//!
//! What it measures, against baselines taken in the same run:
//!
//! 1. **decoder**: `firehose::decode` over a synthesized capture of `--ops` ops (staging
//!    synth, fixed seed), single-threaded, in this process: ops/s.
//! 2. **store ceiling** ([`ceiling`]): core-NATS publishes of the decoded messages, no
//!    reply subject and so no acks at all, into an uncompressed file stream, counted when
//!    the stream holds them all: what nats-server can store on this machine.
//! 3. **bare ceiling**: a plain async-nats JetStream publisher sends the same messages with
//!    no headers into the same kind of stream, one ack per message: JetStream's ceiling
//!    for an acknowledged publisher.
//! 4. **same-configuration ceiling**: the same publisher into the ingestor's stream
//!    configuration with the ingestor's headers.
//! 5. **ingest** ([`run`]): the staging relay replays the capture at full speed in this
//!    process, and the real release `ingest` binary (a child process) catches up from the
//!    first frame into a fresh nats-server: ops/s from the first stored message to the
//!    last, the child's peak RSS (`VmHWM`) and periodic `VmRSS` samples.
//! 6. **pull consumer**: a durable pull consumer with explicit acks drains the ingestor's
//!    stream, acking every message: msgs/s.
//!
//! Stored rates use the server's own timestamps of the first and last stored message, the
//! same clock for every publisher. CPU seconds of each process are printed per phase, and
//! for ingest also per million ops.
//! Bytes on disk per op are printed for the bare (uncompressed) and the ingestor's (S2 by
//! default) stores.
//!
//! The last line is machine-readable: `ratio=… ingest_ops_s=… ceiling_ops_s=…
//! ingest_peak_rss_mib=… consumer_msgs_s=… decoder_ops_s=… bare_ceiling_ops_s=…
//! store_ceiling_ops_s=… ingest_cpu_s_per_mop=… nats_cpu_s_per_mop=… bare_ratio=…
//! store_ratio=…`, where `ratio` is ingest / same-configuration ceiling, `bare_ratio`
//! ingest / bare ceiling and `store_ratio` ingest / store ceiling.
//!
//! ```sh
//! cargo build --release -p ingest -p bench   # the ingest binary must sit next to bench
//! target/release/bench --ops 1000000 --window 2048
//! ```

mod run;

use bench::ceiling;

use anyhow::{bail, Context as _};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "End-to-end benchmark: ingest vs plain JetStream publishers, decoder, pull consumer"
)]
pub struct Args {
    /// Record ops in the synthesized capture (commit ops; a few identity/account/sync
    /// events come on top).
    #[arg(long, default_value_t = 1_000_000)]
    ops: u64,
    /// In-flight publish window, for the ceiling publishers and the ingestor alike.
    #[arg(long, default_value_t = ingest::config::Config::default().publish.window)]
    window: usize,
    /// Seed of the synthesized capture.
    #[arg(long, default_value_t = 20261126)]
    seed: u64,
    /// The `ingest` binary; default: `ingest` next to this executable
    /// (`cargo build --release -p ingest` first).
    #[arg(long)]
    ingest_bin: Option<PathBuf>,
    /// Pull consumer: messages per pull request.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Pull consumer: max_ack_pending.
    #[arg(long, default_value_t = 20_000)]
    max_ack_pending: i64,
    /// Skip the ceilings (for quick A/B runs of ingest binaries).
    #[arg(long)]
    no_ceilings: bool,
    /// An extra setting for the ingest child, `KEY=VALUE` (repeatable), e.g.
    /// `BSKY_INGEST_PUBLISH__BATCH=false` for the per-message path.
    #[arg(long, value_name = "KEY=VALUE")]
    ingest_env: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ingest_bin = match &args.ingest_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .context("this executable has no directory")?
            .join("ingest"),
    };
    if !ingest_bin.is_file() {
        bail!(
            "{} not found: run `cargo build --release -p ingest` first (or pass --ingest-bin)",
            ingest_bin.display()
        );
    }
    let ingest_env = args
        .ingest_env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--ingest-env {kv}: expected KEY=VALUE"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores, {}", testkit::process::cpu_model());
    println!(
        "ingest binary: {} (built {})",
        ingest_bin.display(),
        modified(&ingest_bin)
    );
    if !ingest_env.is_empty() {
        println!("ingest settings: {}", args.ingest_env.join(" "));
    }

    let t = Instant::now();
    let capture = ceiling::synth(args.ops, args.seed)?;
    println!(
        "capture: seed {}, {} frames, {:.1} MB, synthesized in {:.1} s",
        args.seed,
        capture.len(),
        capture.total_bytes() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    // --- decoder -----------------------------------------------------------------------
    let t = Instant::now();
    let mut decoded_ops = 0u64;
    for f in capture.frames() {
        if let firehose::Decoded::Event(e) = firehose::decode(&f.bytes) {
            decoded_ops += e.messages.len() as u64;
        }
    }
    let decode_secs = t.elapsed().as_secs_f64();
    let decoder_ops_s = decoded_ops as f64 / decode_secs;
    let (msgs, skipped) = ceiling::messages(&capture);
    let n = msgs.len() as u64;
    let payload_bytes: u64 = msgs.iter().map(|m| m.payload.len() as u64).sum();
    println!(
        "decoder: {n} messages ({:.1} MB of JSON, {skipped} skipped) in {decode_secs:.2} s on one thread: {decoder_ops_s:.0} ops/s",
        payload_bytes as f64 / 1e6
    );

    // --- ceilings ------------------------------------------------------------------------
    let ceilings = if args.no_ceilings {
        None
    } else {
        let store = ceiling::run(ceiling::Kind::Store, &msgs, args.window)
            .await
            .context("store ceiling")?;
        println!(
            "store ceiling: {n} msgs stored in {:.2} s: {:.0} msgs/s (client wall {:.0} msgs/s)",
            store.stored_secs, store.rate, store.client_rate
        );
        let bare = ceiling::run(ceiling::Kind::Bare, &msgs, args.window)
            .await
            .context("bare ceiling")?;
        println!(
            "bare ceiling: {n} msgs stored in {:.2} s: {:.0} msgs/s (client wall {:.0} msgs/s)",
            bare.stored_secs, bare.rate, bare.client_rate
        );
        let same = ceiling::run(ceiling::Kind::SameConfig, &msgs, args.window)
            .await
            .context("same-configuration ceiling")?;
        println!(
            "same-configuration ceiling: {n} msgs stored in {:.2} s: {:.0} msgs/s (client wall {:.0} msgs/s)",
            same.stored_secs, same.rate, same.client_rate
        );
        Some((store, bare, same))
    };
    drop(msgs);

    // --- ingest + consumer -----------------------------------------------------------------
    let (ing, cons) = run::ingest_and_consume(&ingest_bin, capture, n, &args, &ingest_env)
        .await
        .context("ingest phase")?;

    // --- report ------------------------------------------------------------------------
    println!();
    println!("| measure | value | cpu s (bench / ingest / nats-server) |");
    println!("|---|---|---|");
    println!("| decoder, 1 thread | {decoder_ops_s:.0} ops/s ({n} msgs in {decode_secs:.2} s) | |");
    let per_op = |bytes: u64| bytes as f64 / n as f64;
    if let Some((store, bare, same)) = &ceilings {
        println!(
            "| store ceiling: core-NATS publishes, no acks, no headers, no compression | {:.0} msgs/s ({:.2} s), {:.0} B/op on disk | {} |",
            store.rate,
            store.stored_secs,
            per_op(store.disk_bytes),
            store.cpu.fmt()
        );
        println!(
            "| bare ceiling: no headers, no compression, window {} | {:.0} msgs/s ({:.2} s), {:.0} B/op on disk | {} |",
            args.window,
            bare.rate,
            bare.stored_secs,
            per_op(bare.disk_bytes),
            bare.cpu.fmt()
        );
        println!(
            "| same-configuration ceiling: ingest's stream and headers | {:.0} msgs/s ({:.2} s), {:.0} B/op on disk | {} |",
            same.rate,
            same.stored_secs,
            per_op(same.disk_bytes),
            same.cpu.fmt()
        );
    }
    println!(
        "| ingest: relay → ingest → JetStream | {:.0} ops/s ({:.2} s), {:.0} B/op on disk | {} |",
        ing.rate,
        ing.stored_secs,
        per_op(ing.disk_bytes),
        ing.cpu.fmt()
    );
    let (ratio, bare_ratio, store_ratio, ceiling_rate, bare_rate, store_rate) = match &ceilings {
        Some((store, bare, same)) => (
            ing.rate / same.rate,
            ing.rate / bare.rate,
            ing.rate / store.rate,
            same.rate,
            bare.rate,
            store.rate,
        ),
        None => (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    };
    let per_mop = |secs: Option<f64>| secs.map_or(f64::NAN, |s| s * 1e6 / n as f64);
    let (ingest_cpu, nats_cpu) = (per_mop(ing.cpu.ingest), per_mop(ing.cpu.nats));
    println!(
        "| ingest CPU per million ops: ingest / nats-server | {ingest_cpu:.1} s / {nats_cpu:.1} s | |"
    );
    println!("| ingest / same-configuration ceiling | {ratio:.2} | |");
    println!("| ingest / bare ceiling | {bare_ratio:.2} | |");
    println!("| ingest / store ceiling | {store_ratio:.2} | |");
    println!(
        "| ingest peak RSS (VmHWM) | {:.1} MiB (max sampled VmRSS {:.1} MiB, {} samples) | |",
        ing.hwm_kib as f64 / 1024.0,
        ing.max_rss_kib as f64 / 1024.0,
        ing.samples
    );
    println!(
        "| pull consumer, explicit acks | {:.0} msgs/s ({:.2} s, batch {}, max_ack_pending {}) | {} |",
        cons.rate,
        cons.secs,
        args.batch,
        args.max_ack_pending,
        cons.cpu.fmt()
    );
    println!();
    println!(
        "ratio={ratio:.2} ingest_ops_s={:.0} ceiling_ops_s={ceiling_rate:.0} ingest_peak_rss_mib={:.1} consumer_msgs_s={:.0} decoder_ops_s={decoder_ops_s:.0} bare_ceiling_ops_s={bare_rate:.0} store_ceiling_ops_s={store_rate:.0} ingest_cpu_s_per_mop={ingest_cpu:.1} nats_cpu_s_per_mop={nats_cpu:.1} bare_ratio={bare_ratio:.2} store_ratio={store_ratio:.2}",
        ing.rate,
        ing.hwm_kib as f64 / 1024.0,
        cons.rate
    );
    Ok(())
}

fn modified(path: &Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map_or("?".into(), |age| format!("{} s ago", age.as_secs()))
}
