//! The archiver's configuration: defaults < TOML file (`--config`) < environment
//! (`BSKY_ARCHIVE_`, nesting with `__`, e.g. `BSKY_ARCHIVE_STORE__URL`) < flags, through
//! [`service::config`]. Unknown keys stop the program at start with the key named. Store
//! credentials are neither keys nor flags (see [`crate::store`]).

use crate::store::StoreConfig;
use kit::config::Consumer;
use serde::{Deserialize, Serialize};
use service::config::{duration, flag, ConfigError, Sources};
use service::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Prefix of the environment variables read by `archive`.
pub const ENV_PREFIX: &str = "BSKY_ARCHIVE_";

/// Everything `archive` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach NATS (credentials as for the ingestor).
    pub nats: service::nats::Settings,
    /// The durable consumer (durable `archive` on `bsky.>`). `max_ack_pending` must hold a
    /// whole segment and `ack_wait` must outlast one: the archiver acks a segment only once
    /// it and its manifest entry are stored.
    pub consumer: Consumer,
    /// When a segment is sealed.
    pub segment: Segment,
    /// Where the archive is.
    pub store: StoreConfig,
    /// `/metrics`.
    pub http: Http,
    /// Logging.
    pub log: Log,
}

/// The `[segment]` table: a segment is sealed at whichever limit comes first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Segment {
    /// Compressed size, bytes.
    pub max_bytes: u64,
    /// Time since its first message arrived.
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// Messages.
    pub max_messages: u64,
    /// zstd level (1 to 19).
    pub zstd_level: i32,
}

impl Default for Segment {
    fn default() -> Self {
        Segment {
            max_bytes: 64 << 20,
            max_age: Duration::from_secs(3600),
            max_messages: 1_000_000,
            zstd_level: 3,
        }
    }
}

/// The `[http]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address of `/metrics` (host:port); empty: none.
    pub listen: String,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:9470".into(),
        }
    }
}

/// The `[log]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// "text" or "json".
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        let segment = Segment::default();
        let batch = 1000;
        Config {
            nats: service::nats::Settings {
                url: "nats://127.0.0.1:4222".into(),
                name: "bsky-archive".into(),
                ..Default::default()
            },
            consumer: Consumer {
                durable: "archive".into(),
                subjects: vec![contract::subject::ALL.into()],
                batch,
                max_ack_pending: i64::try_from(segment.max_messages).unwrap_or(i64::MAX)
                    + batch as i64,
                ack_wait: segment.max_age * 2,
                ..Consumer::default()
            },
            segment,
            store: StoreConfig::default(),
            http: Http::default(),
            log: Log::default(),
        }
    }
}

const HINTS: &[(&str, &str)] = &[
    ("consumer.linger", "not used"),
    ("consumer.seek_margin", "not used"),
    ("store.url", "directory, file:///path, s3://bucket/prefix"),
    ("http.listen", "/metrics; empty: none"),
    ("log.format", "text|json"),
];

/// The `--help` epilogue: every key of the configuration, from its type.
pub fn after_help() -> String {
    service::help::settings(
        ENV_PREFIX,
        &Config::default(),
        HINTS,
        "S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment or from\n\
store.credentials_file (KEY=VALUE lines); never from a flag.",
    )
}

/// The flags of `archive run` and `archive restore`; each one given overrides the file
/// and the environment.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL (nats.url).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// JetStream stream (consumer.stream).
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Where the archive is: a directory, file:///path or s3://bucket/prefix (store.url).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// S3-compatible endpoint (store.endpoint).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Address of /metrics; "" for none (http.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Log format: text or json (log.format).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl Config {
    /// Loads defaults < file < environment < flags, then checks the values.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        Self::load_from(flags, ENV_PREFIX)
    }

    /// [`Config::load`] with another environment prefix (tests).
    pub fn load_from(flags: &Flags, env_prefix: &str) -> Result<Config, ConfigError> {
        let given = [
            flag("nats.url", flags.nats.clone()),
            flag("consumer.stream", flags.stream.clone()),
            flag("store.url", flags.store.clone()),
            flag("store.endpoint", flags.endpoint.clone()),
            flag("http.listen", flags.listen.clone()),
            flag("log.format", flags.log_format.clone()),
        ];
        let config: Config = service::config::load(
            &Config::default(),
            Sources {
                file: flags.config.as_deref(),
                env: Sources::env(env_prefix),
                flags: given.into_iter().flatten().collect(),
            },
        )?;
        config.check()?;
        Ok(config)
    }

    /// Checks the values; the message names the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.nats.check()?;
        self.consumer.check()?;
        self.store.check()?;
        let s = &self.segment;
        if s.max_bytes < 4096 {
            return Err(ConfigError::key(
                "segment.max_bytes",
                "must be at least 4096",
            ));
        }
        if s.max_age < Duration::from_secs(1) {
            return Err(ConfigError::key("segment.max_age", "must be at least 1s"));
        }
        if s.max_messages == 0 {
            return Err(ConfigError::key("segment.max_messages", "must be > 0"));
        }
        if !(1..=19).contains(&s.zstd_level) {
            return Err(ConfigError::key("segment.zstd_level", "must be 1 to 19"));
        }
        let need = i64::try_from(s.max_messages)
            .unwrap_or(i64::MAX)
            .saturating_add(self.consumer.batch as i64);
        if self.consumer.max_ack_pending < need {
            return Err(ConfigError::key(
                "consumer.max_ack_pending",
                format!("must be at least segment.max_messages + consumer.batch ({need}): a segment is acked only once stored"),
            ));
        }
        if self.consumer.ack_wait <= s.max_age {
            return Err(ConfigError::key(
                "consumer.ack_wait",
                "must be longer than segment.max_age: a segment is acked only once stored",
            ));
        }
        if !self.http.listen.is_empty() && self.http.listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::key(
                "http.listen",
                "must be host:port, e.g. 127.0.0.1:9470, or empty",
            ));
        }
        Ok(())
    }

    /// The configuration as a log line: everything but secrets.
    pub fn summary(&self) -> String {
        format!(
            "nats={} stream={} durable={} store={} segment={}B/{:?}/{} msgs metrics={}",
            self.nats.redacted_url(),
            self.consumer.stream,
            self.consumer.durable,
            self.store.summary(),
            self.segment.max_bytes,
            self.segment.max_age,
            self.segment.max_messages,
            self.http.listen
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: &str = "BSKY_ARCHIVE_TEST_UNUSED_PREFIX_";

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().check().is_ok());
    }

    #[test]
    fn help_lists_every_key() -> Result<(), Box<dyn std::error::Error>> {
        let help = after_help();
        let missing = service::help::missing(&help, &Config::default())?;
        assert!(missing.is_empty(), "not in --help: {missing:?}\n{help}");
        assert!(help.contains("store.credentials_file"), "{help}");
        Ok(())
    }

    #[test]
    fn bad_values_name_the_key() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        for (toml, key) in [
            (
                "[segment]\nmax_messages = 2000000\n",
                "consumer.max_ack_pending",
            ),
            ("[segment]\nmax_age = \"3h\"\n", "consumer.ack_wait"),
            ("[segment]\nzstd_level = 30\n", "segment.zstd_level"),
            ("[store]\nurl = \"gs://x\"\n", "store.url"),
            ("[store]\nsecret = \"x\"\n", "secret"),
        ] {
            let f = dir.path().join("a.toml");
            std::fs::write(&f, toml)?;
            let flags = Flags {
                config: Some(f),
                ..Flags::default()
            };
            let e = Config::load_from(&flags, NO_ENV)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(key), "{toml}: {e}");
        }
        Ok(())
    }
}
