//! `consumer-bench`: one subcommand per consumer, each measured against a plain pull
//! consumer on the same stream and filter, in the same run.
//!
//! ```sh
//! cargo build --release -p charts -p consumer-bench
//! target/release/consumer-bench charts --ops 500000
//! cargo build --release -p gateway -p consumer-bench
//! target/release/consumer-bench gateway --ops 500000 --clients 1,10,100
//! target/release/consumer-bench gateway-latency --rates 500,2000,10000
//! cargo build --release -p feedgen -p consumer-bench
//! target/release/consumer-bench feedgen --ops 500000
//! ```
//!
//! Prints a table and, as its last line, `key=value …`.

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
    /// Latency from publish to a core NATS subscriber, a JetStream pull consumer and a
    /// gateway client (real binary), at paced rates, all reading live at once.
    GatewayLatency {
        /// Events per second, comma-separated: one run each.
        #[arg(long, value_delimiter = ',', default_value = "500,2000,10000")]
        rates: Vec<u64>,
        /// Seconds of events per rate.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().what {
        What::Charts { ops, seed, batch } => charts::charts(ops, seed, batch).await,
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
