//! The one typed configuration of the `ingest` binary.
//!
//! Sources, each overriding the one before: built-in defaults < TOML file (`--config`)
//! < environment (`BSKY_INGEST_`, nesting with `__`, e.g. `BSKY_INGEST_NATS__URL`)
//! < command-line flags. Unknown keys, from the file or the environment, stop the program
//! at start with the key named. Secrets are never logged (see [`Config::summary`]).

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Prefix of the environment variables read by `ingest`.
pub const ENV_PREFIX: &str = "BSKY_INGEST_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub relay: Relay,
    pub nats: Nats,
    pub stream: Stream,
    pub publish: Publish,
    pub cursor: Cursor,
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
    pub start_cursor: Option<i64>,
}

/// The NATS connection. Credentials are optional; use one kind.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Nats {
    /// Server URL(s), comma-separated.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Path of a `.creds` file (JWT + NKey seed).
    pub creds_file: Option<PathBuf>,
    /// An NKey user seed (`SU…`).
    pub nkey_seed: Option<String>,
    /// PEM file of the CA that signed the server's certificate; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// Connection name shown by the server (`nats server report connections`).
    pub name: String,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("creds_file", &self.creds_file)
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca)
            .field("name", &self.name)
            .finish()
    }
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
    /// Window in which the server drops a repeated `Nats-Msg-Id`.
    #[serde(with = "duration")]
    pub duplicate_window: Duration,
    /// "s2" or "none".
    pub compression: String,
}

/// Publishing into JetStream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Publish {
    /// Most publishes awaiting their ack at once.
    pub window: usize,
    /// Most payload bytes awaiting their ack at once (bounds memory with big records).
    pub window_bytes: usize,
    /// How long to wait for one ack before publishing the message again (same id).
    #[serde(with = "duration")]
    pub ack_timeout: Duration,
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
    pub format: String,
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
            },
            nats: Nats {
                url: "nats://127.0.0.1:4222".into(),
                name: "bsky-ingest".into(),
                ..Nats::default()
            },
            stream: Stream {
                name: "BSKY".into(),
                max_age: Duration::from_secs(72 * 3600),
                max_bytes: -1,
                replicas: 1,
                duplicate_window: Duration::from_secs(120),
                compression: "s2".into(),
            },
            publish: Publish {
                window: 2048,
                window_bytes: 8 << 20,
                ack_timeout: Duration::from_secs(5),
            },
            cursor: Cursor {
                bucket: "BSKY_INGEST".into(),
                key: String::new(),
                save_interval: Duration::from_secs(1),
            },
            metrics: Metrics {
                listen: "127.0.0.1:9464".into(),
            },
            log: Log {
                format: "text".into(),
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
    about = "Reads the Bluesky firehose once and republishes every event into NATS JetStream.",
    after_help = "Every setting can also come from a TOML file (--config) or the environment \
(prefix BSKY_INGEST_, nesting with __, e.g. BSKY_INGEST_NATS__URL). Precedence: defaults < file < \
environment < flags. Settings (file keys):\n\
  [relay]   url, max_frame_bytes, idle_timeout, reconnect_min, reconnect_max, start_cursor\n\
  [nats]    url, user, password, token, creds_file, nkey_seed, tls_ca, name\n\
  [stream]  name, max_age, max_bytes, replicas, duplicate_window, compression (s2|none)\n\
  [publish] window, window_bytes, ack_timeout\n\
  [cursor]  bucket, key, save_interval\n\
  [metrics] listen (empty = off)\n\
  [log]     format (text|json), progress_interval\n\
Durations are written like \"500ms\", \"5s\", \"2m\", \"72h\". See subjects.md for the contract."
)]
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

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults < file < environment < flags, then checks the values.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        Self::load_from(flags, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_from(flags: &Flags, env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &flags.config {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "--config: no such file {}",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(env);
        let set = |fig: Figment, key: &str, value: Option<String>| match value {
            Some(v) => fig.merge(Serialized::default(key, v)),
            None => fig,
        };
        fig = set(fig, "relay.url", flags.relay.clone());
        fig = set(fig, "nats.url", flags.nats.clone());
        fig = set(fig, "stream.name", flags.stream.clone());
        fig = set(fig, "metrics.listen", flags.metrics_listen.clone());
        fig = set(fig, "log.format", flags.log_format.clone());
        if let Some(c) = flags.cursor {
            fig = fig.merge(Serialized::default("relay.start_cursor", c));
        }
        let config: Config = fig.extract().map_err(|e| {
            ConfigError(
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        match url::Url::parse(&self.relay.url) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") => {}
            Ok(_) => return bad("relay.url", "must start with ws:// or wss://"),
            Err(e) => return bad("relay.url", &e.to_string()),
        }
        if self.relay.max_frame_bytes < firehose::MAX_FRAME_BYTES {
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
        if self.nats.url.trim().is_empty() {
            return bad("nats.url", "must not be empty");
        }
        if self.nats.password.is_some() != self.nats.user.is_some() {
            return bad("nats.user", "user and password go together");
        }
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
        if !matches!(self.stream.compression.as_str(), "s2" | "none") {
            return bad("stream.compression", "must be \"s2\" or \"none\"");
        }
        if self.stream.replicas == 0 || self.stream.replicas > 5 {
            return bad("stream.replicas", "must be 1 to 5");
        }
        if self.stream.duplicate_window.is_zero() {
            return bad("stream.duplicate_window", "must be > 0");
        }
        if self.publish.window == 0 {
            return bad("publish.window", "must be > 0");
        }
        if self.publish.window_bytes < firehose::MAX_BLOCKS_BYTES * 2 {
            return bad(
                "publish.window_bytes",
                "must hold at least one largest record (4000000)",
            );
        }
        if self.cursor.save_interval.is_zero() {
            return bad("cursor.save_interval", "must be > 0");
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return bad("metrics.listen", "must be host:port, e.g. 127.0.0.1:9464");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be \"text\" or \"json\"");
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

    /// The configuration as a log line: everything but secrets.
    pub fn summary(&self) -> String {
        format!(
            "relay={} nats={} stream={} window={} metrics={}",
            self.relay.url,
            self.nats.url,
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

/// Durations as human strings ("500ms", "5s", "2m", "72h", "1d") or whole seconds.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (num, unit) = s.split_at(split);
        let n: f64 = num.parse().ok()?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return None,
        };
        (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) => parse(&t).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid duration {t:?} (write e.g. \"500ms\", \"5s\", \"2m\", \"72h\")"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> Env {
        Env::prefixed("BSKY_INGEST_TEST_UNUSED_PREFIX_").split("__")
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
    fn durations() {
        assert_eq!(duration::parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration::parse("72h"), Some(Duration::from_secs(259200)));
        assert_eq!(duration::parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(duration::parse("5"), None);
        assert_eq!(duration::parse("5y"), None);
    }
}
