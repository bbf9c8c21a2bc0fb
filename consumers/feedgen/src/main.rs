//! `feedgen`: parse the configuration, set up logging, run until SIGINT/SIGTERM.

use clap::Parser;
use feedgen::config::{Config, Flags};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let (config, start) = match Config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("feedgen: {e}");
            return ExitCode::from(2);
        }
    };
    service::telemetry::init_logging(config.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("feedgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(service::shutdown::on_signals(shutdown.clone()));
        match feedgen::run(config, start, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("feedgen: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
