//! `gateway`: parse the configuration, then [`gateway::run`] until SIGINT/SIGTERM.

use clap::Parser;
use gateway::config::{Config, Flags};
use service::process::Runtime;
use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = Flags::parse();
    service::process::main(
        "gateway",
        Config::load(&flags),
        |c| c.log.format,
        Runtime::MultiThread,
        gateway::run,
    )
}
