//! `consumer-bench`: one subcommand per consumer, each measured against a plain pull
//! consumer on the same stream and filter, in the same run.
//!
//! ```sh
//! cargo build --release -p charts -p consumer-bench
//! target/release/consumer-bench charts --ops 500000
//! target/release/consumer-bench charts-dau --dids 3000000
//! target/release/consumer-bench charts-page --days 400
//! cargo build --release -p gateway -p consumer-bench
//! target/release/consumer-bench gateway --ops 500000 --clients 1,10,100
//! target/release/consumer-bench gateway-latency --rates 500,2000,10000
//! cargo build --release -p feedgen -p consumer-bench
//! target/release/consumer-bench feedgen --ops 500000
//! cargo build --release -p archive -p consumer-bench
//! target/release/consumer-bench archive --ops 500000
//! ```
//!
//! Prints a table and, as its last line, `key=value …`.

mod archive;
mod charts;
mod feedgen;
mod gateway;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "consumer-bench",
    about = "Consumer throughput against a plain pull consumer, in one run"
)]
struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// The charts consumer (real binary, real SQLite writes) on every commit op.
    Charts {
        /// Record ops in the synthesized stream.
        #[arg(long, default_value_t = 500_000)]
        ops: u64,
        /// Seed of the synthesized capture.
        #[arg(long, default_value_t = 20261128)]
        seed: u64,
        /// Messages per pull / per SQLite transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// The charts consumer on one UTC day of `dids` distinct DIDs: msgs/s, peak RSS and
    /// exact DAU, against a plain pull consumer.
    ChartsDau {
        /// Distinct DIDs in the day.
        #[arg(long, default_value_t = 3_000_000)]
        dids: u64,
        /// Messages per pull / per SQLite transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// The charts page: `GET /` of every range over `days` days of figures, timed.
    ChartsPage {
        /// UTC days of data.
        #[arg(long, default_value_t = 400)]
        days: u64,
        /// Likes per hour.
        #[arg(long, default_value_t = 4)]
        per_hour: u64,
        /// Timed requests per range.
        #[arg(long, default_value_t = 30)]
        requests: usize,
    },
    /// The feed generator (real binary, real SQLite writes) on the post subject, with
    /// getFeedSkeleton asked in a loop meanwhile.
    Feedgen {
        /// Record ops in the synthesized stream (posts are about 12 % of them).
        #[arg(long, default_value_t = 500_000)]
        ops: u64,
        /// Seed of the synthesized capture.
        #[arg(long, default_value_t = 20261128)]
        seed: u64,
        /// Messages per pull / per SQLite transaction (feedgen's default batch).
        #[arg(long, default_value_t = 4000)]
        batch: usize,
        /// Most getFeedSkeleton requests per second while it runs.
        #[arg(long, default_value_t = 200)]
        qps: u32,
    },
    /// The archiver (real binary, local directory) on `bsky.>`: its rate, the archive's
    /// bytes per op, and replay from the archive against replay from the stream.
    Archive {
        /// Record ops in the synthesized stream.
        #[arg(long, default_value_t = 500_000)]
        ops: u64,
        /// Seed of the synthesized capture.
        #[arg(long, default_value_t = 20261128)]
        seed: u64,
        /// Messages per pull (both consumers).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// The gateway (real binary) serving concurrent WebSocket clients that replay the
    /// stream from its start; one round per client count, a fresh gateway each.
    Gateway {
        /// Record ops in the synthesized stream.
        #[arg(long, default_value_t = 500_000)]
        ops: u64,
        /// Seed of the synthesized capture.
        #[arg(long, default_value_t = 20261128)]
        seed: u64,
        /// Concurrent clients, comma-separated: one round each.
        #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
        clients: Vec<usize>,
        /// Most messages delivered in one round: each of N clients reads the first
        /// min(every message, round_cap / N) messages of the stream. The default lets 1 and
        /// 10 clients read everything (500,000 ops) and 100 clients the first 100,000
        /// each: 100 clients reading all 503,359 take about 7 minutes on 2 shared cores
        /// (`--round-cap 100000000` runs it).
        #[arg(long, default_value_t = 10_000_000)]
        round_cap: u64,
        /// What the clients ask for, comma-separated, one round each per client count:
        /// plain (text frames), zstd (`compress=true`: Jetstream's zstd), deflate
        /// (permessage-deflate).
        #[arg(long, value_delimiter = ',', default_value = "plain")]
        encodings: Vec<gateway::Encoding>,
    },
    /// Latency from the staging relay sending a frame, through the ingestor, to a core NATS
    /// subscriber, a JetStream pull consumer and a gateway client (real binary), at paced
    /// rates, all reading live at once.
    GatewayLatency {
        /// Record ops per second, comma-separated: one run each.
        #[arg(long, value_delimiter = ',', default_value = "500,2000,10000")]
        rates: Vec<u64>,
        /// Seconds of paced replay per rate.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().what {
        What::Charts { ops, seed, batch } => charts::charts(ops, seed, batch).await,
        What::ChartsDau { dids, batch } => charts::dau(dids, batch).await,
        What::ChartsPage {
            days,
            per_hour,
            requests,
        } => charts::page(days, per_hour, requests).await,
        What::Archive { ops, seed, batch } => archive::archive(ops, seed, batch).await,
        What::Feedgen {
            ops,
            seed,
            batch,
            qps,
        } => feedgen::run(ops, seed, batch, qps).await,
        What::Gateway {
            ops,
            seed,
            clients,
            round_cap,
            encodings,
        } => {
            let clients: Vec<usize> = clients.into_iter().filter(|&n| n > 0).collect();
            gateway::gateway(gateway::Options {
                ops,
                seed,
                clients,
                round_cap,
                encodings,
            })
            .await
        }
        What::GatewayLatency { rates, secs } => gateway::latency::latency(rates, secs).await,
    }
}
