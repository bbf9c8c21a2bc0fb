//! The life of every binary's process, once: a configuration error exits 2, logging is set
//! up, the runtime runs `run(shutdown)` with the signal handlers of [`crate::shutdown`], and
//! an error from `run` is logged with its causes and exits 1, so supervisors
//! (`Restart=on-failure`, orchestrators) see it.

use crate::config::ConfigError;
use crate::telemetry::{init_logging, Chain, LogFormat};
use std::future::Future;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Which tokio runtime a binary runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// One thread: for a pipeline that hands each item along (the ingestor).
    CurrentThread,
    /// A worker per core: for servers with many independent clients.
    MultiThread,
}

/// `main` of a binary named `name`, whose configuration `loaded` came from its flags.
pub fn main<C, E, F, Fut>(
    name: &str,
    loaded: Result<C, ConfigError>,
    log_format: impl FnOnce(&C) -> LogFormat,
    runtime: Runtime,
    run: F,
) -> ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + 'static,
{
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {}", Chain(&e));
            return ExitCode::from(2);
        }
    };
    init_logging(log_format(&config));
    let mut builder = match runtime {
        Runtime::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Runtime::MultiThread => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::shutdown::on_signals(shutdown.clone()));
        match run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("stopping: {}", Chain(&e));
                ExitCode::FAILURE
            }
        }
    })
}
