//! The charts configuration: defaults < TOML file (`--config`) < environment
//! (`BSKY_CHARTS_`, nesting with `__`, e.g. `BSKY_CHARTS_NATS__URL`) < flags, through
//! [`service::config`]. Unknown keys stop the program at start with the key named.
//! `--from-seq` and `--from-time` are flags only: a rebuild is an act, not a setting.

use kit::config::{Consumer, Start, State};
use serde::{Deserialize, Serialize};
use service::config::ConfigError;
use service::telemetry::LogFormat;
use std::net::SocketAddr;

/// Prefix of the environment variables read by `charts`.
pub const ENV_PREFIX: &str = "BSKY_CHARTS_";

/// Everything `charts` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach NATS (credentials as for the ingestor).
    pub nats: service::nats::Settings,
    /// The durable consumer: stream, name, subject filters, batches, retries.
    pub consumer: Consumer,
    /// The SQLite database.
    pub state: State,
    /// The page, its JSON and `/metrics`.
    pub http: Http,
    /// What feeds the stream, as the page tells its readers.
    pub upstream: Upstream,
    /// Which event times are believed (see [`crate::handler`]).
    pub clock: ClockBounds,
    /// Where to read what the stream no longer holds (a `--from-seq`/`--from-time` older
    /// than the stream, or a stop longer than its retention): the archiver's store, with
    /// the keys of its `[store]`; `url` empty: no archive (such messages are counted lost).
    pub archive: archive::store::StoreConfig,
    /// Logging.
    pub log: Log,
}

/// The `[http]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address of the page, the JSON API and `/metrics` (host:port).
    pub listen: String,
    /// Range shown when the request does not say (`?range=`): `2d` (hourly), `30d`, `1y`
    /// or `all` (daily).
    pub range: crate::query::Range,
}

/// The `[upstream]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Upstream {
    /// `live` (the relay) or `staging` (a replayed capture: the page says its figures are
    /// not the live network's). `deploy/run.sh` sets it when it falls back to staging.
    pub label: UpstreamLabel,
}

/// Where the stream's events come from.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamLabel {
    /// The live network, through a relay.
    #[default]
    Live,
    /// A recorded or synthesized capture replayed by the staging relay.
    Staging,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            label: UpstreamLabel::Live,
        }
    }
}

/// The `[clock]` table: events whose time cannot be right are counted, not charted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClockBounds {
    /// An event dated more than this ahead of the moment JetStream stored it is skipped
    /// and counted under `future`. Also bounds how early a `--from-time` rebuild reads.
    #[serde(with = "service::config::duration")]
    pub future_skew: std::time::Duration,
    /// Events dated before this (a date or an RFC 3339 time, UTC) are skipped and counted
    /// under `too_old`.
    pub floor: String,
}

impl Default for ClockBounds {
    fn default() -> Self {
        ClockBounds {
            future_skew: std::time::Duration::from_secs(600),
            floor: "2023-01-01".into(),
        }
    }
}

impl ClockBounds {
    /// The bounds in µs; the message names the key.
    pub fn parse(&self) -> Result<crate::handler::Clock, ConfigError> {
        let future_skew_us = i64::try_from(self.future_skew.as_micros())
            .ok()
            .filter(|s| *s <= 366 * 86_400_000_000)
            .ok_or_else(|| ConfigError::key("clock.future_skew", "must be at most a year"))?;
        let floor_us = kit::config::parse_time(&self.floor).ok_or_else(|| {
            ConfigError::key(
                "clock.floor",
                "must be a date like 2023-01-01 or a UTC time like 2023-01-01T00:00:00Z",
            )
        })?;
        Ok(crate::handler::Clock {
            future_skew_us,
            floor_us,
        })
    }
}

/// The `[log]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// "text" or "json".
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nats: service::nats::Settings {
                url: "nats://127.0.0.1:4222".into(),
                name: "bsky-charts".into(),
                ..Default::default()
            },
            consumer: Consumer {
                durable: "charts".into(),
                // Every commit op (collections have three segments or more); identity,
                // account and sync events are not charted.
                subjects: vec![contract::subject::ALL_COMMITS.into()],
                ..Consumer::default()
            },
            state: State {
                path: "charts.db".into(),
                ..State::default()
            },
            http: Http::default(),
            upstream: Upstream::default(),
            clock: ClockBounds::default(),
            archive: archive::history::ArchiveHistory::table_default(),
            log: Log::default(),
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:8090".into(),
            range: crate::query::Range::TwoDays,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
        }
    }
}

/// Command-line flags; each one given overrides every other source.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "charts",
    version,
    about = "Activity charts of the Bluesky network (posts, likes, DAU, languages…) by event time, from the bsky stream."
)]
// `--help`'s text after the flags is [`after_help`], built at run time.
pub struct Flags {
    #[command(flatten)]
    pub common: kit::config::ConsumerFlags,
}

/// Notes after some keys in `--help`.
const HINTS: &[(&str, &str)] = &[
    ("nats.url", "credentials may also sit in the URL"),
    ("state.synchronous", "full|normal"),
    ("log.format", "text|json"),
    ("http.range", "2d|30d|1y|all: the default view"),
    (
        "upstream.label",
        "live|staging: the page marks staging data",
    ),
    ("clock.future_skew", "e.g. 10m"),
    ("clock.floor", "e.g. 2023-01-01"),
    ("archive.url", archive::history::URL_HINT),
];

/// What `--help` says after the flags: the sources, then every key of [`Config`], read
/// from its defaults ([`service::help::keys`]), so the list cannot drift from the type.
pub fn after_help() -> String {
    service::help::settings(
        ENV_PREFIX,
        &Config::default(),
        HINTS,
        "Events dated past clock.future_skew or before clock.floor are counted, not charted.\n\
Rebuild: --from-time T drops the figures of the UTC days from T's on and counts them again\n\
from the stream; --from-seq N drops everything and counts from stream sequence N. Give\n\
either once: the database remembers a rebuild in progress.",
    )
}

impl Config {
    /// Loads defaults < file < environment < flags, then checks the values; also returns
    /// where to start.
    pub fn load(flags: &Flags) -> Result<(Config, Start), ConfigError> {
        Self::load_from(flags, ENV_PREFIX)
    }

    fn load_from(flags: &Flags, env_prefix: &str) -> Result<(Config, Start), ConfigError> {
        let (config, start): (Config, Start) = flags.common.load(&Config::default(), env_prefix)?;
        config.check()?;
        Ok((config, start))
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.nats.check()?;
        self.consumer.check()?;
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::key(
                "http.listen",
                "must be host:port, e.g. 127.0.0.1:8090",
            ));
        }
        self.clock.parse()?;
        if self.state.path.as_os_str().is_empty() {
            return Err(ConfigError::key("state.path", "must not be empty"));
        }
        archive::history::check_table(&self.archive)?;
        Ok(())
    }

    /// The configuration as a log line: everything but secrets.
    pub fn summary(&self) -> String {
        format!(
            "nats={} stream={} durable={} subjects={:?} db={} web={} archive={}",
            self.nats.redacted_url(),
            self.consumer.stream,
            self.consumer.durable,
            self.consumer.subjects,
            self.state.path.display(),
            self.http.listen,
            archive::history::summary(&self.archive)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> &'static str {
        "BSKY_CHARTS_TEST_UNUSED_PREFIX_"
    }

    /// Loads `toml` as the `--config` file, with no environment.
    fn load_toml(toml: &str) -> Result<(Config, Start), ConfigError> {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(f, "{toml}").expect("w");
        let flags = Flags {
            common: kit::config::ConsumerFlags {
                config: Some(f.path().to_path_buf()),
                ..Default::default()
            },
        };
        Config::load_from(&flags, no_env())
    }

    #[test]
    fn help_lists_every_key() -> Result<(), Box<figment::Error>> {
        use clap::CommandFactory;
        let help = Flags::command()
            .after_help(after_help())
            .render_long_help()
            .to_string();
        let missing = service::help::missing(&help, &Config::default())?;
        assert!(missing.is_empty(), "not in --help: {missing:?}\n{help}");
        Ok(())
    }

    #[test]
    fn defaults_file_flags_and_unknown_keys() {
        let (c, start) = Config::load_from(&Flags::default(), no_env()).expect("defaults");
        assert_eq!(
            (c.consumer.durable.as_str(), start),
            ("charts", Start::Resume)
        );
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(
            f,
            "[consumer]\nbatch = 500\n[http]\nrange = \"1y\"\n[upstream]\nlabel = \"staging\""
        )
        .expect("w");
        let flags = Flags {
            common: kit::config::ConsumerFlags {
                config: Some(f.path().to_path_buf()),
                db: Some("/tmp/x.db".into()),
                from_time: Some("2026-07-04".into()),
                ..Default::default()
            },
        };
        let (c, start) = Config::load_from(&flags, no_env()).expect("load");
        assert_eq!(
            (c.consumer.batch, c.http.range),
            (500, crate::query::Range::Year)
        );
        assert_eq!(c.upstream.label, UpstreamLabel::Staging);
        assert_eq!(c.state.path, std::path::PathBuf::from("/tmp/x.db"));
        assert_eq!(start, Start::FromTime(1_783_123_200_000_000));

        let e = load_toml("[http]\nlisten = \"x\"\nport = 1").expect_err("unknown key");
        assert!(e.to_string().contains("port"), "{e}");
    }

    #[test]
    fn the_archive_is_off_by_default_and_its_keys_are_named_as_ours() {
        let load = |toml: &str| load_toml(toml).map(|(c, _)| c);
        let c = load("").expect("defaults");
        assert!(c.archive.url.is_empty());
        assert!(c.summary().contains("archive=none"), "{}", c.summary());
        let c = load("[archive]\nurl = \"s3://bucket/bsky\"\nendpoint = \"http://127.0.0.1:8333\"")
            .expect("an s3 archive");
        assert_eq!(c.archive.url, "s3://bucket/bsky");
        for (toml, key) in [
            ("[archive]\nurl = \"gs://x\"", "archive.url"),
            (
                "[archive]\nurl = \"a\"\nendpoint = \"not a url\"",
                "archive.endpoint",
            ),
            (
                "[archive]\nurl = \"a\"\nretry_min = \"0s\"",
                "archive.retry_min",
            ),
        ] {
            let e = load(toml).expect_err(toml).to_string();
            assert!(e.contains(key) && !e.contains("store."), "{toml}: {e}");
        }
    }
}
