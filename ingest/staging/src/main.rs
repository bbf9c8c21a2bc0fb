//! `staging`: record, replay, synthesize and inspect firehose captures.
//!
//! Thin on purpose: parses flags, builds the library's options and calls
//! [`staging::record::record`], [`staging::replay::serve`],
//! [`staging::synth::synthesize`] or [`staging::record::probe`].

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use staging::capture::{Capture, CaptureWriter};
use staging::replay::{FaultAt, Faults, ReplayOptions, Speed};
use staging::synth::{ActionMix, CollectionMix, KindMix, Source, SynthConfig};
use staging::{record, replay, synth, time};

/// Staging relay for the Bluesky firehose (com.atproto.sync.subscribeRepos): record a relay
/// into a capture file, replay a capture as a relay, synthesize large captures from a real
/// repository, or describe a capture.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Record a relay's frames, byte for byte, into a capture file.
    Record(RecordArgs),
    /// Serve a capture as a subscribeRepos relay over WebSocket.
    Replay(ReplayArgs),
    /// Synthesize a capture from a real repository CAR.
    Synth(SynthArgs),
    /// Print a capture's frame count, seq and time ranges, sizes and kinds.
    Info(InfoArgs),
    /// Check that a relay answers: a subscribeRepos WebSocket handshake within a timeout.
    /// Exits 0 when it does, 1 (with the reason on stderr) when it does not.
    Probe(ProbeArgs),
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// Relay URL, ws:// or wss://; a bare host gets /xrpc/com.atproto.sync.subscribeRepos.
    #[arg(long, default_value = record::DEFAULT_RELAY)]
    url: String,
    /// Seconds to wait for the handshake.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// Relay URL, ws:// or wss://; a bare host gets /xrpc/com.atproto.sync.subscribeRepos.
    #[arg(long, default_value = record::DEFAULT_RELAY)]
    url: String,
    /// Start after this seq (the relay's cursor parameter).
    #[arg(long)]
    cursor: Option<u64>,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Compress with zstd at this level (1 fastest … 22); default: compress at level 3 when
    /// the output ends in .zst, else write plain.
    #[arg(long)]
    zstd_level: Option<i32>,
    /// Output capture file.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Capture file to serve (plain or zstd).
    capture: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2470")]
    listen: String,
    /// Pace: "max" (as fast as clients read) or a factor of event time ("1" real time, "10"
    /// ten times faster).
    #[arg(long, default_value = "max", value_parser = speed)]
    speed: Speed,
    /// Without a cursor, start at the end of the capture like a live relay.
    #[arg(long)]
    live_tail: bool,
    /// Loop the capture forever, renumbering seq so it keeps increasing.
    #[arg(long = "loop")]
    looping: bool,
    /// Fault: connection i (0-based, in handshake order) is dropped abruptly after the i-th number
    /// of frames; comma-separated, e.g. "100,50".
    #[arg(long, value_name = "N,N…", value_delimiter = ',')]
    drop_after: Vec<u64>,
    /// Fault: this connection gets a ConsumerTooSlow error frame and is closed…
    #[arg(long)]
    too_slow_on: Option<usize>,
    /// …after this many frames.
    #[arg(long, default_value_t = 100)]
    too_slow_after: u64,
    /// Fault: this connection gets a FutureCursor error frame whatever its cursor.
    #[arg(long)]
    future_cursor_on: Option<usize>,
}

#[derive(Args, Debug)]
struct SynthArgs {
    /// Output capture file; zstd-compressed when it ends in .zst or --zstd-level is given.
    #[arg(short, long)]
    output: PathBuf,
    /// Real repository CAR the records and MST nodes come from [default: the checkout's
    /// ingest/fixtures/shrike-fixtures/calabro.car].
    #[arg(long, env = "STAGING_REPO_CAR")]
    repo: Option<PathBuf>,
    /// Commit ops to produce in total.
    #[arg(long, default_value_t = 100_000)]
    ops: u64,
    /// Seed of every random choice (same seed, same bytes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// seq of the first event.
    #[arg(long, default_value_t = 1)]
    start_seq: u64,
    /// time of the first event (RFC 3339).
    #[arg(long, default_value = "2026-07-04T14:38:07.000Z", value_parser = rfc3339)]
    start_time: i64,
    /// Events per second of event time.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Distinct synthetic repositories (DIDs).
    #[arg(long, default_value_t = 100_000)]
    repos: u32,
    /// Collection weights: like,post,repost,follow,other.
    #[arg(long, value_name = "LIKE,POST,REPOST,FOLLOW,OTHER", default_value = "0.70,0.12,0.08,0.05,0.05",
          value_delimiter = ',', value_parser = weight)]
    mix: Vec<f64>,
    /// Action weights: create,update,delete.
    #[arg(long, value_name = "CREATE,UPDATE,DELETE", default_value = "0.90,0.03,0.07",
          value_delimiter = ',', value_parser = weight)]
    actions: Vec<f64>,
    /// Shares of events that are #identity,#account,#sync (commits are the rest).
    #[arg(long, value_name = "IDENTITY,ACCOUNT,SYNC", default_value = "0.005,0.003,0.001",
          value_delimiter = ',', value_parser = weight)]
    kinds: Vec<f64>,
    /// Share of ordinary commits with 2-10 ops.
    #[arg(long, default_value_t = 0.03)]
    multi_op_share: f64,
    /// Every Nth commit carries 200 ops (0: never).
    #[arg(long, default_value_t = 5_000)]
    max_ops_every: u64,
    /// Every Nth commit is a big frame (0: never).
    #[arg(long, default_value_t = 100_000)]
    big_every: u64,
    /// CAR size of big frames in bytes; above 2,000,000 breaks the lexicon's blocks limit on
    /// purpose (max 4,900,000, for frames near 5 MB).
    #[arg(long, default_value_t = 1_900_000)]
    big_bytes: usize,
    /// Real MST node blocks per commit CAR: min,max.
    #[arg(
        long,
        value_name = "MIN,MAX",
        default_value = "3,8",
        value_delimiter = ','
    )]
    mst_nodes: Vec<usize>,
    /// zstd level (1 fastest … 22).
    #[arg(long)]
    zstd_level: Option<i32>,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// Capture file (plain or zstd).
    capture: PathBuf,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Info(args) => info(args),
        Command::Synth(args) => synth_cmd(args),
        Command::Record(args) => runtime()?.block_on(record_cmd(args)),
        Command::Replay(args) => runtime()?.block_on(replay_cmd(args)),
        Command::Probe(args) => runtime()?.block_on(probe_cmd(args)),
    }
}

async fn probe_cmd(args: ProbeArgs) -> Result<()> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    record::probe(&args.url, Duration::from_secs_f64(args.timeout)).await?;
    println!("{} answers", args.url);
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn zstd_level(explicit: Option<i32>, path: &std::path::Path) -> Option<i32> {
    explicit.or_else(|| (path.extension().is_some_and(|e| e == "zst")).then_some(3))
}

/// `--speed`: "max" or a positive factor.
fn speed(text: &str) -> Result<Speed, String> {
    match text {
        "max" => Ok(Speed::Max),
        factor => match factor.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err("expected \"max\" or a positive number".into()),
        },
    }
}

/// One weight (or share) of a comma-separated list: a number, at least 0.
fn weight(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(w) if w.is_finite() && w >= 0.0 => Ok(w),
        _ => Err("expected a number >= 0".into()),
    }
}

/// An RFC 3339 time, as microseconds since the Unix epoch.
fn rfc3339(text: &str) -> Result<i64, String> {
    time::parse_rfc3339_micros(text)
        .ok_or_else(|| "expected an RFC 3339 time, e.g. 2026-07-04T14:38:07.000Z".into())
}

/// The `N` values of a comma-separated list flag. clap splits the list and parses each value
/// (`value_delimiter`); its `num_args` counts arguments before the split, so the length is
/// checked here, as a usage error like clap's own (exit code 2).
fn exactly<T: Copy, const N: usize>(flag: &str, values: &[T]) -> Result<[T; N], clap::Error> {
    values.try_into().map_err(|_| {
        SynthArgs::augment_args(clap::Command::new("staging synth")).error(
            clap::error::ErrorKind::WrongNumberOfValues,
            format!(
                "--{flag} takes {N} comma-separated values, got {}",
                values.len()
            ),
        )
    })
}

async fn record_cmd(args: RecordArgs) -> Result<()> {
    let max_duration = match args.seconds {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--seconds must be positive, got {s}"),
        None => None,
    };
    let opts = record::RecordOptions {
        url: args.url,
        cursor: args.cursor,
        max_frames: args.frames,
        max_duration,
    };
    let mut writer =
        CaptureWriter::create(&args.output, zstd_level(args.zstd_level, &args.output))?;
    let result = record::record(&opts, &mut writer, ctrl_c()).await;
    writer.finish()?;
    let report = result?;
    println!(
        "recorded {} frames ({} bytes) to {}; seq {:?}..{:?}; stopped: {:?}",
        report.frames,
        report.bytes,
        args.output.display(),
        report.first_seq,
        report.last_seq,
        report.stop
    );
    Ok(())
}

async fn replay_cmd(args: ReplayArgs) -> Result<()> {
    let capture = Capture::load(&args.capture)?;
    println!(
        "loaded {} frames, seq {:?}..{:?}",
        capture.len(),
        capture.first_seq(),
        capture.last_seq()
    );
    let opts = ReplayOptions {
        speed: args.speed,
        live_tail: args.live_tail,
        looping: args.looping,
        faults: Faults {
            drop_after: args.drop_after,
            too_slow: args.too_slow_on.map(|connection| FaultAt {
                connection,
                after_frames: args.too_slow_after,
            }),
            future_cursor_on: args.future_cursor_on,
        },
        on_sent: None,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    println!(
        "serving on ws://{}{}",
        listener.local_addr()?,
        staging::SUBSCRIBE_REPOS_PATH
    );
    let report = replay::serve(listener, Arc::new(capture), opts, ctrl_c()).await?;
    println!(
        "stopped: {} connections, {} frames sent",
        report.connections, report.frames_sent
    );
    Ok(())
}

impl SynthArgs {
    /// The library's configuration; a list of the wrong length is a usage error.
    fn config(&self) -> Result<SynthConfig, clap::Error> {
        let [like, post, repost, follow, other] = exactly("mix", &self.mix)?;
        let [create, update, delete] = exactly("actions", &self.actions)?;
        let [identity, account, sync] = exactly("kinds", &self.kinds)?;
        let [mst_nodes_min, mst_nodes_max] = exactly("mst-nodes", &self.mst_nodes)?;
        Ok(SynthConfig {
            seed: self.seed,
            ops: self.ops,
            start_seq: self.start_seq,
            start_time_micros: self.start_time,
            events_per_second: self.rate,
            repos: self.repos,
            collections: CollectionMix {
                like,
                post,
                repost,
                follow,
                other,
            },
            actions: ActionMix {
                create,
                update,
                delete,
            },
            kinds: KindMix {
                identity,
                account,
                sync,
            },
            multi_op_share: self.multi_op_share,
            max_ops_every: self.max_ops_every,
            big_every: self.big_every,
            big_blocks_bytes: self.big_bytes,
            mst_nodes_min,
            mst_nodes_max,
        })
    }
}

fn synth_cmd(args: SynthArgs) -> Result<()> {
    let cfg = args.config().unwrap_or_else(|e| e.exit());
    let started = Instant::now();
    let source = Source::load(args.repo.clone().unwrap_or_else(staging::fixtures::calabro))?;
    let mut writer =
        CaptureWriter::create(&args.output, zstd_level(args.zstd_level, &args.output))?;
    let report = synth::synthesize(&source, cfg, &mut writer)?;
    writer.finish()?;
    let elapsed = started.elapsed();
    let file_bytes = std::fs::metadata(&args.output)
        .map(|m| m.len())
        .unwrap_or(0);
    emit(&format!(
        "{report}wrote {} ({} bytes on disk) in {:.2} s ({:.0} ops/s)\n",
        args.output.display(),
        file_bytes,
        elapsed.as_secs_f64(),
        report.ops as f64 / elapsed.as_secs_f64().max(1e-9)
    ))
}

fn info(args: InfoArgs) -> Result<()> {
    let on_disk = std::fs::metadata(&args.capture)
        .with_context(|| format!("{}", args.capture.display()))?
        .len();
    let capture = Capture::load(&args.capture)?;
    let mut out = String::new();
    writeln!(
        out,
        "file: {} ({on_disk} bytes on disk)",
        args.capture.display()
    )?;
    writeln!(out, "frames: {}", capture.len())?;
    match (capture.first_seq(), capture.last_seq()) {
        (Some(a), Some(b)) => writeln!(
            out,
            "seq: {a}..={b} ({})",
            if capture.seq_strictly_increasing() {
                "strictly increasing"
            } else {
                "NOT strictly increasing"
            }
        )?,
        _ => writeln!(out, "seq: none")?,
    }
    if let Some((a, b)) = capture.time_range() {
        writeln!(
            out,
            "time: {} .. {} ({:.3} s)",
            time::format_rfc3339_millis(a),
            time::format_rfc3339_millis(b),
            (b - a) as f64 / 1e6
        )?;
    }
    let sizes: Vec<usize> = capture.frames().iter().map(|f| f.bytes.len()).collect();
    if let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max()) {
        writeln!(
            out,
            "frame bytes: total {}, min {min}, mean {:.0}, max {max}",
            capture.total_bytes(),
            capture.total_bytes() as f64 / sizes.len() as f64
        )?;
    }
    writeln!(out, "kinds:")?;
    for (kind, n) in capture.kinds() {
        writeln!(out, "  {kind:<12} {n}")?;
    }
    emit(&out)
}

/// Writes to stdout; a closed pipe (`staging info … | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
