//! The one typed configuration of the `gateway` binary.
//!
//! Sources, each overriding the one before: built-in defaults < TOML file (`--config`)
//! < environment (`BSKY_GATEWAY_`, nesting with `__`, e.g. `BSKY_GATEWAY_NATS__URL`)
//! < command-line flags, merged by [`service::config`]. Unknown keys stop the program at
//! start with the key named (exit code 2). Secrets are never logged ([`Config::summary`]).

use serde::{Deserialize, Serialize};
pub use service::config::{duration, ConfigError};
use service::config::{flag, Sources};
use service::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Prefix of the environment variables read by `gateway`.
pub const ENV_PREFIX: &str = "BSKY_GATEWAY_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: Http,
    pub nats: service::nats::Settings,
    pub stream: Stream,
    pub client: Client,
    /// Where a cursor older than the stream is read from before the stream: the
    /// archiver's store, with the keys of its `[store]`; `url` empty: no archive (such a
    /// cursor starts at the stream's first message, counted as clamped).
    pub archive: archive::store::StoreConfig,
    pub log: Log,
}

/// The HTTP side: `GET /subscribe` (WebSocket), `GET /healthz`, `GET /metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address to listen on, host:port (Jetstream's own default port is 6008).
    pub listen: String,
    /// Most WebSocket clients at once; more get HTTP 503 (bounds the gateway's memory).
    pub max_clients: usize,
    /// Offer `permessage-deflate` (RFC 7692) to clients that ask for it.
    pub deflate: bool,
}

/// The stream the gateway reads (written by `ingest`, see `subjects.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Stream {
    /// JetStream stream name.
    pub name: String,
    /// Read `name` as a mirror, in the gateway's own NATS account, of the stream that
    /// ingest writes in another account; created at start if missing ([`crate::mirror`]).
    /// Unset: `name` is the stream itself, in the same account as ingest.
    pub mirror: Option<Mirror>,
}

/// The gateway's own copy of the stream (deploy/README.md, "Users, permissions, secrets").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Mirror {
    /// The stream mirrored, in the account that holds it.
    pub upstream: String,
    /// Where this account reaches the upstream account's JetStream API (an import of
    /// `deploy/accounts.conf`).
    pub api_prefix: String,
    /// The subject prefix the upstream delivers the mirror's messages on (an import).
    pub deliver_prefix: String,
    /// Most bytes the mirror keeps; the oldest go first. A second copy on disk: count it
    /// in `max_file_store`.
    pub max_bytes: i64,
    /// Copies in a cluster.
    pub replicas: usize,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror {
            upstream: "BSKY".into(),
            api_prefix: "$JS.BSKY.API".into(),
            deliver_prefix: "deliver.gateway".into(),
            max_bytes: 1 << 30,
            replicas: 1,
        }
    }
}

/// What each client gets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Client {
    /// Payload bytes read from NATS and not yet written to the client's socket; when full,
    /// the client's consumer waits. A single larger message still passes, alone.
    pub buffer_bytes: usize,
    /// Most messages asked from NATS in one pull request (which also asks for at most
    /// `buffer_bytes`).
    pub pull_batch: usize,
    /// A client whose socket accepts nothing for this long is closed (reason "stuck").
    #[serde(with = "duration")]
    pub stuck_timeout: Duration,
    /// Each client's consumer is named `<consumer_prefix>-<instance>-<n>` and created through
    /// `$JS.API.CONSUMER.CREATE.<stream>.<name>[.<filter>]`, so NATS permissions can name it.
    pub consumer_prefix: String,
    /// Largest message accepted from a client (`options_update` with 10,000 DIDs is ~400 KB).
    pub max_client_message_bytes: usize,
    /// Clients reading the archive at once (a cursor older than the stream); each holds
    /// one compressed segment (up to the archiver's `segment.max_bytes`, 64 MiB by
    /// default). Others wait their turn.
    pub archive_readers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// "text" or "json".
    pub format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: Http {
                listen: "127.0.0.1:6008".into(),
                max_clients: 10_000,
                deflate: true,
            },
            nats: service::nats::Settings {
                url: "nats://127.0.0.1:4222".into(),
                name: "bsky-gateway".into(),
                ..Default::default()
            },
            stream: Stream {
                name: "BSKY".into(),
                mirror: None,
            },
            client: Client {
                buffer_bytes: 1 << 20,
                pull_batch: 256,
                stuck_timeout: Duration::from_secs(30),
                consumer_prefix: "gateway".into(),
                max_client_message_bytes: 1 << 20,
                archive_readers: 4,
            },
            archive: archive::history::ArchiveHistory::table_default(),
            log: Log {
                format: LogFormat::Text,
            },
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Config::default().http
    }
}
impl Default for Stream {
    fn default() -> Self {
        Config::default().stream
    }
}
impl Default for Client {
    fn default() -> Self {
        Config::default().client
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
    name = "gateway",
    version,
    about = "Serves the bsky stream to Jetstream clients: GET /subscribe (WebSocket), /healthz, /metrics."
)]
// `--help`'s text after the flags is [`after_help`], built at run time.
pub struct Flags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:6008].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip)]
    pub listen: Option<String>,
    /// NATS server URL [default: nats://127.0.0.1:4222].
    #[arg(long, value_name = "URL")]
    #[serde(skip)]
    pub nats: Option<String>,
    /// JetStream stream name [default: BSKY].
    #[arg(long, value_name = "NAME")]
    #[serde(skip)]
    pub stream: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    #[serde(skip)]
    pub log_format: Option<String>,
}

/// Notes after some keys in `--help`.
const HINTS: &[(&str, &str)] = &[
    ("nats.url", "credentials may also sit in the URL"),
    ("log.format", "text|json"),
    ("archive.url", archive::history::URL_HINT),
];

/// The defaults, with a `[stream.mirror]` table so that its keys are listed too.
fn listed_defaults() -> Config {
    let mut c = Config::default();
    c.stream.mirror = Some(Mirror::default());
    c
}

/// What `--help` says after the flags: the sources, then every key of [`Config`], read
/// from its defaults ([`service::help::keys`]), so the list cannot drift from the type.
pub fn after_help() -> String {
    service::help::settings(ENV_PREFIX, &listed_defaults(), HINTS, "")
}

impl Config {
    /// Loads defaults < file < environment < flags, then checks the values.
    pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
        Self::load_from(flags, Sources::env(ENV_PREFIX))
    }

    fn load_from(flags: &Flags, env: figment::providers::Env) -> Result<Config, ConfigError> {
        let given = [
            flag("http.listen", flags.listen.clone()),
            flag("nats.url", flags.nats.clone()),
            flag("stream.name", flags.stream.clone()),
            flag("log.format", flags.log_format.clone()),
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

    /// Checks the values; the error names the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::key(key, why));
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return bad("http.listen", "must be host:port, e.g. 127.0.0.1:6008");
        }
        if self.http.max_clients == 0 {
            return bad("http.max_clients", "must be > 0");
        }
        self.nats.check()?;
        let name_ok = !self.stream.name.is_empty()
            && self
                .stream
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !name_ok {
            return bad("stream.name", "letters, digits, '_' and '-' only");
        }
        if let Some(m) = &self.stream.mirror {
            if m.upstream.is_empty() || m.api_prefix.is_empty() || m.deliver_prefix.is_empty() {
                return bad(
                    "stream.mirror",
                    "upstream, api_prefix and deliver_prefix must not be empty",
                );
            }
            if m.max_bytes < 1 << 20 {
                return bad("stream.mirror.max_bytes", "must be at least 1 MiB");
            }
            if m.replicas == 0 || m.replicas > 5 {
                return bad("stream.mirror.replicas", "must be 1 to 5");
            }
        }
        if self.client.buffer_bytes < 64 << 10 {
            return bad("client.buffer_bytes", "must be at least 65536");
        }
        if self.client.pull_batch == 0 || self.client.pull_batch > 10_000 {
            return bad("client.pull_batch", "must be 1 to 10000");
        }
        if self.client.stuck_timeout.is_zero() {
            return bad("client.stuck_timeout", "must be > 0");
        }
        let prefix = &self.client.consumer_prefix;
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !prefix_ok {
            return bad(
                "client.consumer_prefix",
                "1 to 32 letters, digits, '_' and '-'",
            );
        }
        if self.client.max_client_message_bytes < 4096 {
            return bad("client.max_client_message_bytes", "must be at least 4096");
        }
        if self.client.archive_readers == 0 {
            return bad("client.archive_readers", "must be > 0");
        }
        archive::history::check_table(&self.archive)
    }

    /// The configuration as a log line: everything but secrets.
    pub fn summary(&self) -> String {
        format!(
            "listen={} nats={} stream={}{} buffer_bytes={} stuck_timeout={:?} consumer_prefix={} deflate={} archive={}",
            self.http.listen,
            self.nats.redacted_url(),
            self.stream.name,
            match &self.stream.mirror {
                Some(m) => format!(" (mirror of {} via {})", m.upstream, m.api_prefix),
                None => String::new(),
            },
            self.client.buffer_bytes,
            self.client.stuck_timeout,
            self.client.consumer_prefix,
            self.http.deflate,
            archive::history::summary(&self.archive),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> figment::providers::Env {
        Sources::env("BSKY_GATEWAY_TEST_UNUSED_PREFIX_")
    }

    #[test]
    fn help_lists_every_key() -> Result<(), Box<figment::Error>> {
        use clap::CommandFactory;
        let help = Flags::command()
            .after_help(after_help())
            .render_long_help()
            .to_string();
        let missing = service::help::missing(&help, &listed_defaults())?;
        assert!(missing.is_empty(), "not in --help: {missing:?}\n{help}");
        assert!(help.contains("[stream.mirror]"), "{help}");
        Ok(())
    }

    #[test]
    fn the_mirror_is_switched_on_by_its_upstream_alone() {
        std::env::set_var("BSKY_GATEWAY_TEST_MIRROR_STREAM__MIRROR__UPSTREAM", "BSKY");
        let env = Sources::env("BSKY_GATEWAY_TEST_MIRROR_");
        let c = Config::load_from(&Flags::default(), env).expect("mirror from the environment");
        assert_eq!(c.stream.mirror, Some(Mirror::default()));
        assert_eq!(Config::default().stream.mirror, None);
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load_from(&Flags::default(), no_env()).expect("defaults");
        assert_eq!(c.http.listen, "127.0.0.1:6008");
        assert_eq!(c.client.consumer_prefix, "gateway");
    }

    #[test]
    fn file_then_flags_and_unknown_keys() {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(
            f,
            "[client]\nstuck_timeout = \"5s\"\n[stream]\nname = \"X\""
        )
        .expect("w");
        let flags = Flags {
            config: Some(f.path().to_path_buf()),
            stream: Some("Y".into()),
            ..Flags::default()
        };
        let c = Config::load_from(&flags, no_env()).expect("load");
        assert_eq!(c.client.stuck_timeout, Duration::from_secs(5));
        assert_eq!(c.stream.name, "Y");

        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        writeln!(f, "[client]\nstuck_timeot = \"5s\"").expect("w");
        let flags = Flags {
            config: Some(f.path().to_path_buf()),
            ..Flags::default()
        };
        let e = Config::load_from(&flags, no_env()).expect_err("unknown key");
        assert!(e.to_string().contains("stuck_timeot"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = Config::default();
        c.client.pull_batch = 0;
        let e = c.check().expect_err("pull_batch");
        assert!(e.to_string().contains("client.pull_batch"), "{e}");
        let mut c = Config::default();
        c.http.listen = "nowhere".into();
        assert!(c.check().is_err());
        let mut c = Config::default();
        c.client.consumer_prefix = "gw.x".into();
        let e = c.check().expect_err("prefix");
        assert!(e.to_string().contains("client.consumer_prefix"), "{e}");
    }
}
