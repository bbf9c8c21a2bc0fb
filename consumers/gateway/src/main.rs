//! `gateway`: parse the configuration, then [`gateway::run`] until SIGINT/SIGTERM.

use gateway::config::{self, Config, Flags};
use service::process::Runtime;
use std::process::ExitCode;

fn main() -> ExitCode {
    let flags: Flags = service::help::parse_flags(config::after_help());
    service::process::main(
        "gateway",
        Config::load(&flags),
        |c| c.log.format,
        Runtime::MultiThread,
        gateway::run,
    )
}
