//! The one typed configuration of the `ingest` binary.
//!
//! Sources, each overriding the one before: built-in defaults < TOML file (`--config`)
//! < environment (`BSKY_INGEST_`, nesting with `__`, e.g. `BSKY_INGEST_NATS__URL`)
//! < command-line flags, merged by [`service::config`]. Unknown keys, from the file or the
//! environment, stop the program at start with the key named. Secrets are never logged
//! (see [`Config::summary`] and [`service::nats::redact`]).

use serde::{Deserialize, Serialize};
pub use service::config::{duration, ConfigError};
use service::config::{flag, Sources};
use service::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Prefix of the environment variables read by `ingest`.
pub const ENV_PREFIX: &str = "BSKY_INGEST_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub relay: Relay,
    pub nats: service::nats::Settings,
    pub stream: Stream,
    pub publish: Publish,
    pub cursor: Cursor,
    pub lease: Lease,
    pub metrics: Metrics,
    pub log: Log,
}

/// The upstream relay (`com.atproto.sync.subscribeRepos`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    /// Relay base URL, `wss://` or `ws://` (a local staging relay).
    pub url: String,
    /// Largest WebSocket message accepted, in bytes (protocol maximum: 5,000,000).
    pub max_frame_bytes: usize,
    /// Reconnect when no frame arrived for this long (e.g. "60s").
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// First delay before reconnecting; doubles up to `reconnect_max`, with jitter.
    #[serde(with = "duration")]
    pub reconnect_min: Duration,
    #[serde(with = "duration")]
    pub reconnect_max: Duration,
    /// Start from this relay seq instead of the stored cursor (events with seq > cursor).
    /// Events the stream already holds are not stored again, however old this is.
    pub start_cursor: Option<i64>,
    /// Stop (exit non-zero) after this many `FutureCursor` answers in a row: the relay
    /// reset its sequence, or another relay answers at this URL.
    pub future_cursor_limit: u32,
}

/// The JetStream stream, created or updated to match at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Stream {
    pub name: String,
    /// Drop messages older than this (e.g. "72h").
    #[serde(with = "duration")]
    pub max_age: Duration,
    /// Drop the oldest messages beyond this many bytes; -1 = no limit.
    pub max_bytes: i64,
    pub replicas: usize,
    /// The stream's de-duplication window, for other publishers: the ingestor sets no
    /// message id (each publish is checked against the stream's last sequence instead).
    #[serde(with = "duration")]
    pub duplicate_window: Duration,
    /// `"s2"` or `"none"`; any other value stops the program at start, naming the key.
    pub compression: Compression,
}

/// How the stream stores its messages (`stream.compression`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// S2 (Snappy-like): about half the disk for this JSON, little CPU.
    S2,
    /// Stored as published.
    None,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::S2 => "s2",
            Compression::None => "none",
        })
    }
}

/// Publishing into JetStream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Publish {
    /// Most publishes awaiting their ack at once.
    pub window: usize,
    /// Most payload bytes awaiting their ack at once (bounds memory with big records).
    pub window_bytes: usize,
    /// How long to wait for an ack before a recovery round sends the message again.
    #[serde(with = "duration")]
    pub ack_timeout: Duration,
    /// Publish in fast-ingest batches when the server has them (nats-server 2.14+; the
    /// stream gets `allow_batched`); false: one acknowledged publish per message.
    pub batch: bool,
    /// Batched path: at most this many messages per flow ack (the server may ask for
    /// fewer); the publisher runs at most two flows ahead of the acks.
    pub batch_flow: u16,
}

/// Where the resume cursor is kept: a key in a JetStream KV bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Cursor {
    pub bucket: String,
    /// Key in the bucket; empty = `cursor.<stream name>`.
    pub key: String,
    /// How often the cursor is stored while events flow.
    #[serde(with = "duration")]
    pub save_interval: Duration,
}

/// The single-writer lease: key `lease.<stream name>` in the cursor's bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Lease {
    /// A holder that has not renewed for this long is taken over by a new ingestor; the
    /// holder renews every third of it. A second ingestor refuses to run while the first
    /// renews.
    #[serde(with = "duration")]
    pub ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Prometheus endpoint (`GET /metrics`); empty = off.
    pub listen: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// "text" or "json".
    pub format: LogFormat,
    /// Interval of the progress line; "0s" = off.
    #[serde(with = "duration")]
    pub progress_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            relay: Relay {
                url: "wss://bsky.network".into(),
                max_frame_bytes: 8 << 20,
                idle_timeout: Duration::from_secs(60),
                reconnect_min: Duration::from_millis(250),
                reconnect_max: Duration::from_secs(30),
                start_cursor: None,
                future_cursor_limit: 3,
            },
            nats: service::nats::Settings {
                url: "nats://127.0.0.1:4222".into(),
                name: "bsky-ingest".into(),
                ..Default::default()
            },
            stream: Stream {
                name: "BSKY".into(),
                max_age: Duration::from_secs(72 * 3600),
                max_bytes: -1,
                replicas: 1,
                duplicate_window: Duration::from_secs(120),
                compression: Compression::S2,
            },
            publish: Publish {
                window: 2048,
                window_bytes: 8 << 20,
                ack_timeout: Duration::from_secs(5),
                batch: true,
                batch_flow: 500,
            },
            cursor: Cursor {
                bucket: "BSKY_INGEST".into(),
                key: String::new(),
                save_interval: Duration::from_secs(1),
            },
            lease: Lease {
                ttl: Duration::from_secs(10),
            },
            metrics: Metrics {
                listen: "127.0.0.1:9464".into(),
            },
            log: Log {
                format: LogFormat::Text,
                progress_interval: Duration::from_secs(5),
            },
        }
    }
}

impl Default for Relay {
    fn default() -> Self {
        Config::default().relay
    }
}
impl Default for Stream {
    fn default() -> Self {
        Config::default().stream
    }
}
impl Default for Publish {
    fn default() -> Self {
        Config::default().publish
    }
}
impl Default for Cursor {
    fn default() -> Self {
        Config::default().cursor
    }
}
impl Default for Lease {
    fn default() -> Self {
        Config::default().lease
    }
}
impl Default for Metrics {
    fn default() -> Self {
        Config::default().metrics
    }
}
impl Default for Log {
    fn default() -> Self {
        Config::default().log
    }
}

/// Command-line flags; each one set overrides every other source.
#[derive(Debug, Default, clap::Parser, Serialize)]
#[command(
    name = "ingest",
    version,
    about = "Reads the Bluesky firehose once and republishes every event into NATS JetStream."
)]
// `--help`'s text after the flags is [`after_help`], built at run time.
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Relay URL [default: wss://bsky.network].
    #[arg(long, value_name = "URL")]
    #[serde(skip)]
    pub relay: Option<String>,
    /// NATS server URL [default: nats://127.0.0.1:4222].
    #[arg(long, value_name = "URL")]
    #[serde(skip)]
    pub nats: Option<String>,
    /// JetStream stream name [default: BSKY].
    #[arg(long, value_name = "NAME")]
    #[serde(skip)]
    pub stream: Option<String>,
    /// Prometheus listen address, empty to disable [default: 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip)]
    pub metrics_listen: Option<String>,
    /// Start from this relay seq instead of the stored cursor.
    #[arg(long, value_name = "SEQ")]
    #[serde(skip)]
    pub cursor: Option<i64>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    #[serde(skip)]
    pub log_format: Option<String>,
}

/// Notes after some keys in `--help`.
const HINTS: &[(&str, &str)] = &[
    ("nats.url", "credentials may also sit in the URL"),
    ("stream.compression", "s2|none"),
    ("metrics.listen", "empty = off"),
    ("log.format", "text|json"),
];

/// What `--help` says after the flags: the sources, then every key of [`Config`], read
/// from its defaults ([`service::help::keys`]), so the list cannot drift from the type.
pub fn after_help() -> String {
    service::help::settings(
        ENV_PREFIX,
        &Config::default(),
        HINTS,
        "See subjects.md for the contract.",
    )
}

impl Config {
    /// Loads defaults < file < environment < flags, then checks the values.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        Self::load_from(flags, Sources::env(ENV_PREFIX))
    }

    fn load_from(flags: &Flags, env: figment::providers::Env) -> Result<Config, ConfigError> {
        let given = [
            flag("relay.url", flags.relay.clone()),
            flag("nats.url", flags.nats.clone()),
            flag("stream.name", flags.stream.clone()),
            flag("metrics.listen", flags.metrics_listen.clone()),
            flag("log.format", flags.log_format.clone()),
            flag("relay.start_cursor", flags.cursor),
        ];
        let config: Config = service::config::load(
            &Config::default(),
            Sources {
                file: flags.config.as_deref(),
                env,
                flags: given.into_iter().flatten().collect(),
            },
        )?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::key(key, why));
        match url::Url::parse(&self.relay.url) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") => {}
            Ok(_) => return bad("relay.url", "must start with ws:// or wss://"),
            Err(e) => return Err(ConfigError::caused("relay.url", "not a URL", e)),
        }
        if self.relay.max_frame_bytes < contract::limits::MAX_FRAME_BYTES {
            return bad(
                "relay.max_frame_bytes",
                "must be at least the protocol maximum of 5000000 bytes",
            );
        }
        if self.relay.reconnect_min.is_zero() || self.relay.reconnect_max < self.relay.reconnect_min
        {
            return bad(
                "relay.reconnect_min",
                "must be > 0 and not above relay.reconnect_max",
            );
        }
        if self.relay.idle_timeout.is_zero() {
            return bad("relay.idle_timeout", "must be > 0");
        }
        self.nats.check()?;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        };
        if !name_ok(&self.stream.name) {
            return bad("stream.name", "letters, digits, '_' and '-' only");
        }
        if !name_ok(&self.cursor.bucket) {
            return bad("cursor.bucket", "letters, digits, '_' and '-' only");
        }
        if self.stream.replicas == 0 || self.stream.replicas > 5 {
            return bad("stream.replicas", "must be 1 to 5");
        }
        if self.stream.duplicate_window.is_zero() {
            return bad("stream.duplicate_window", "must be > 0");
        }
        if self.publish.batch_flow == 0 {
            return bad("publish.batch_flow", "must be > 0");
        }
        if self.publish.window == 0 {
            return bad("publish.window", "must be > 0");
        }
        if self.publish.window_bytes < contract::limits::MAX_MESSAGE_BYTES {
            return bad(
                "publish.window_bytes",
                "must hold at least one largest record (4000000)",
            );
        }
        if self.relay.future_cursor_limit == 0 {
            return bad("relay.future_cursor_limit", "must be at least 1");
        }
        if self.lease.ttl < Duration::from_secs(1) {
            return bad("lease.ttl", "must be at least 1s");
        }
        if self.cursor.save_interval.is_zero() {
            return bad("cursor.save_interval", "must be > 0");
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return bad("metrics.listen", "must be host:port, e.g. 127.0.0.1:9464");
        }
        Ok(())
    }

    /// The KV key of the cursor.
    pub fn cursor_key(&self) -> String {
        if self.cursor.key.is_empty() {
            format!("cursor.{}", self.stream.name)
        } else {
            self.cursor.key.clone()
        }
    }

    /// The KV key of the lease, in the cursor's bucket.
    pub fn lease_key(&self) -> String {
        format!("lease.{}", self.stream.name)
    }

    /// The configuration as a log line: everything but secrets.
    pub fn summary(&self) -> String {
        format!(
            "relay={} nats={} stream={} window={} metrics={}",
            service::nats::redact(&self.relay.url),
            self.nats.redacted_url(),
            self.stream.name,
            self.publish.window,
            if self.metrics.listen.is_empty() {
                "off"
            } else {
                &self.metrics.listen
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> figment::providers::Env {
        Sources::env("BSKY_INGEST_TEST_UNUSED_PREFIX_")
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
        assert!(help.contains("compression (s2|none)"), "{help}");
        Ok(())
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_from(&Flags::default(), no_env()).expect("defaults");
        assert_eq!(c.relay.url, "wss://bsky.network");
        assert_eq!(c.stream.max_age, Duration::from_secs(72 * 3600));
        assert_eq!(c.cursor_key(), "cursor.BSKY");
    }

    #[test]
    fn file_then_flags() {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(
            f,
            "[relay]\nurl = \"ws://127.0.0.1:1\"\n[stream]\nmax_age = \"2h\""
        )
        .expect("w");
        let flags = Flags {
            config: Some(f.path().to_path_buf()),
            nats: Some("nats://10.0.0.1:4222".into()),
            ..Flags::default()
        };
        let c = Config::load_from(&flags, no_env()).expect("load");
        assert_eq!(c.relay.url, "ws://127.0.0.1:1");
        assert_eq!(c.stream.max_age, Duration::from_secs(7200));
        assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
        let flags = Flags {
            config: Some(f.path().to_path_buf()),
            relay: Some("wss://relay.example".into()),
            ..Flags::default()
        };
        let c = Config::load_from(&flags, no_env()).expect("load");
        assert_eq!(c.relay.url, "wss://relay.example");
    }

    #[test]
    fn unknown_key_is_named() {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(f, "[relay]\nurll = \"ws://x\"").expect("w");
        let flags = Flags {
            config: Some(f.path().to_path_buf()),
            ..Flags::default()
        };
        let err = Config::load_from(&flags, no_env()).expect_err("must fail");
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(f, "[publish]\nwindow = 0").expect("w");
        let flags = Flags {
            config: Some(f.path().to_path_buf()),
            ..Flags::default()
        };
        let err = Config::load_from(&flags, no_env()).expect_err("must fail");
        assert!(err.to_string().contains("publish.window"), "{err}");
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(f, "[stream]\nmax_age = \"forever\"").expect("w");
        let flags = Flags {
            config: Some(f.path().to_path_buf()),
            ..Flags::default()
        };
        let err = Config::load_from(&flags, no_env()).expect_err("must fail");
        assert!(err.to_string().contains("max_age"), "{err}");
    }

    #[test]
    fn compression_is_one_of_two() {
        let load = |value: &str| {
            let mut f = tempfile::NamedTempFile::new().expect("tmp");
            writeln!(f, "[stream]\ncompression = \"{value}\"").expect("w");
            let flags = Flags {
                config: Some(f.path().to_path_buf()),
                ..Flags::default()
            };
            Config::load_from(&flags, no_env())
        };
        assert_eq!(
            load("none").expect("none").stream.compression,
            Compression::None
        );
        assert_eq!(load("s2").expect("s2").stream.compression, Compression::S2);
        let err = load("zstd").expect_err("zstd is not a stream compression");
        let message = err.to_string();
        assert!(message.contains("stream.compression"), "{message}");
        assert!(message.contains("zstd"), "{message}");
    }
}
