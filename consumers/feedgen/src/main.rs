//! `feedgen`: parse the configuration, then [`feedgen::run`] until SIGINT/SIGTERM.

use feedgen::config::{self, Config, Flags};
use service::process::Runtime;
use std::process::ExitCode;

fn main() -> ExitCode {
    let flags: Flags = service::help::parse_flags(config::after_help());
    service::process::main(
        "feedgen",
        Config::load(&flags),
        |(c, _start)| c.log.format,
        Runtime::MultiThread,
        |(config, start), shutdown| feedgen::run(config, start, shutdown),
    )
}
