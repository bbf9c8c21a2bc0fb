//! `archive`: parse the configuration, then run the archiver ([`archive::run`]) or a
//! restore ([`archive::restore`]) until done or SIGINT/SIGTERM.

use archive::config::{Config, Flags};
use clap::{Parser, Subcommand};
use service::process::Runtime;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "archive",
    version,
    about = "The bsky stream's archive: sealed zstd segments in a directory or an S3-compatible store"
)]
struct Args {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    what: Option<What>,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Archive the stream (the default).
    Run,
    /// Re-publish a range of the archive into a fresh stream, sequence for sequence.
    Restore {
        /// The stream to create (it must not exist).
        #[arg(long, value_name = "NAME")]
        into: String,
        /// First sequence.
        #[arg(long, value_name = "N", default_value_t = 1)]
        from_seq: u64,
        /// Last sequence (default: the archive's end).
        #[arg(long, value_name = "N")]
        to_seq: Option<u64>,
        /// Publishes awaiting their ack at once.
        #[arg(long, default_value_t = 1024)]
        window: usize,
    },
}

fn main() -> ExitCode {
    let args: Args = service::help::parse_flags(archive::config::after_help());
    let loaded = Config::load(&args.flags);
    match args.what.unwrap_or(What::Run) {
        What::Run => service::process::main(
            "archive",
            loaded,
            |c| c.log.format,
            Runtime::MultiThread,
            archive::run,
        ),
        What::Restore {
            into,
            from_seq,
            to_seq,
            window,
        } => {
            let opts = archive::restore::Options {
                stream: into,
                from_seq,
                to_seq,
                window,
            };
            service::process::main(
                "archive",
                loaded,
                |c| c.log.format,
                Runtime::MultiThread,
                |c, shutdown| archive::restore(c, opts, shutdown),
            )
        }
    }
}
