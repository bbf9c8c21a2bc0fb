//! `charts`: parse the configuration, then [`charts::run`] until SIGINT/SIGTERM.

use charts::config::{self, Config, Flags};
use service::process::Runtime;
use std::process::ExitCode;

fn main() -> ExitCode {
    let flags: Flags = service::help::parse_flags(config::after_help());
    service::process::main(
        "charts",
        Config::load(&flags),
        |(c, _start)| c.log.format,
        Runtime::MultiThread,
        |(config, start), shutdown| charts::run(config, start, shutdown),
    )
}
