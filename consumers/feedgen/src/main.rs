//! `feedgen`: parse the configuration, then [`feedgen::run`] until SIGINT/SIGTERM.

use clap::Parser;
use feedgen::config::{Config, Flags};
use service::process::Runtime;
use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = Flags::parse();
    service::process::main(
        "feedgen",
        Config::load(&flags),
        |(c, _start)| c.log.format,
        Runtime::MultiThread,
        |(config, start), shutdown| feedgen::run(config, start, shutdown),
    )
}
