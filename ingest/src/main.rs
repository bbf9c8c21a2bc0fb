//! `ingest`: parse the configuration, set up logging, run until SIGINT/SIGTERM.

use clap::Parser;
use ingest::config::{Config, Flags};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let config = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ingest: {e}");
            return ExitCode::from(2);
        }
    };
    service::telemetry::init_logging(config.log.format);
    // One thread: the reader, the decoder and the publisher hand each frame along without
    // waking another worker. Catching up, this took a sixth less CPU than the
    // multi-threaded runtime and left the other core to nats-server (BENCHMARKS.md).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ingest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(service::shutdown::on_signals(shutdown.clone()));
        match ingest::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("stopping: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
