//! `ingest`: parse the configuration, then [`ingest::run`] until SIGINT/SIGTERM.

use ingest::config::{self, Config, Flags};
use service::process::Runtime;
use std::process::ExitCode;

fn main() -> ExitCode {
    let flags: Flags = service::help::parse_flags(config::after_help());
    // One thread: the reader, the decoder and the publisher hand each frame along without
    // waking another worker. Catching up, this took a sixth less CPU than the
    // multi-threaded runtime and left the other core to nats-server (BENCHMARKS.md).
    service::process::main(
        "ingest",
        Config::load(&flags),
        |c| c.log.format,
        Runtime::CurrentThread,
        ingest::run,
    )
}
