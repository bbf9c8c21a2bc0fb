//! `consumer-bench`: one subcommand per consumer, each measured against a plain pull
//! consumer on the same stream and filter, in the same run.
//!
//! ```sh
//! cargo build --release -p charts -p consumer-bench
//! target/release/consumer-bench charts --ops 500000
//! ```
//!
//! Prints a table and, as its last line, `key=value …`.

mod charts;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().what {
        What::Charts { ops, seed, batch } => charts::charts(ops, seed, batch).await,
    }
}
