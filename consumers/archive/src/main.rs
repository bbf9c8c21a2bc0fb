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
    about = "The bsky stream's archive: sealed zstd segments in a directory or an S3-compatible store",
    after_help = "Every setting can also come from a TOML file (--config) or the environment \
(prefix BSKY_ARCHIVE_, nesting with __, e.g. BSKY_ARCHIVE_STORE__URL). Precedence: defaults < file < \
environment < flags. Settings (file keys):\n\
  [nats]     url, user, password, password_file, token, token_file, creds_file, nkey_seed,\n\
             tls_ca, tls_cert, tls_key, name\n\
  [consumer] stream, durable, subjects, batch, max_ack_pending, ack_wait, retry_min,\n\
             retry_max, status_interval (linger and seek_margin are not used)\n\
  [segment]  max_bytes, max_age, max_messages, zstd_level\n\
  [store]    url (directory, file:///path, s3://bucket/prefix), endpoint, region,\n\
             allow_http, credentials_file, retry_min, retry_max\n\
  [http]     listen (/metrics; empty: none)\n\
  [log]      format (text|json)\n\
S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment or from\n\
store.credentials_file (KEY=VALUE lines); never from a flag."
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
    let args = Args::parse();
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
