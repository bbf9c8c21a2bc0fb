//! The tables every consumer's configuration embeds: `[consumer]` (which stream, which
//! durable pull consumer, which subjects, how batches and retries go) and `[state]` (the
//! SQLite file), plus [`Start`], the rebuild flags `--from-seq` / `--from-time`, and
//! [`ConsumerFlags`], the command line every consumer binary shares.
//!
//! Each service owns its `Config` (loaded with [`service::config::load`], unknown keys
//! rejected) and sets its own defaults here: its durable name and subject filters.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use service::config::{duration, flag, ConfigError, Sources};
use std::path::PathBuf;
use std::time::Duration;

/// How this service reads the stream: the `[consumer]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Consumer {
    /// The stream to read (the ingestor's `stream.name`).
    pub stream: String,
    /// Name of this service's durable pull consumer on the stream.
    pub durable: String,
    /// Subject filters (`subjects.md`, `contract::subject`), e.g. `["bsky.app.bsky.feed.post"]`.
    pub subjects: Vec<String>,
    /// Most messages applied in one SQLite transaction.
    pub batch: usize,
    /// How long a partial batch waits for more messages before it is applied.
    #[serde(with = "duration")]
    pub linger: Duration,
    /// Most messages delivered and not yet acknowledged; the server holds back the rest.
    pub max_ack_pending: i64,
    /// How long the server waits for an ack before it delivers a message again.
    #[serde(with = "duration")]
    pub ack_wait: Duration,
    /// NAK delay after a first transient failure; doubles on each failure in a row.
    #[serde(with = "duration")]
    pub retry_min: Duration,
    /// Longest NAK delay.
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// `--from-time T` starts reading at event time `T` minus this, since event times are
    /// only nearly in stream order (see [`crate::seek`]). Unused by a handler that bounds
    /// the clock skew ([`crate::Handler::clock_skew_bound`]): it seeks by storage time.
    #[serde(with = "duration")]
    pub seek_margin: Duration,
    /// How often the stream and the consumer are asked for lag and retention losses.
    #[serde(with = "duration")]
    pub status_interval: Duration,
}

impl Default for Consumer {
    fn default() -> Self {
        Consumer {
            stream: "BSKY".into(),
            durable: "consumer".into(),
            subjects: vec![contract::subject::ALL.into()],
            batch: 1000,
            linger: Duration::from_millis(50),
            max_ack_pending: 10_000,
            ack_wait: Duration::from_secs(60),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            seek_margin: Duration::from_secs(300),
            status_interval: Duration::from_secs(2),
        }
    }
}

/// When a commit is on disk: SQLite's `synchronous` setting (WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Each commit is synced: it survives a power loss.
    #[default]
    Full,
    /// The WAL is synced at checkpoints: a commit survives a crash of the process, not
    /// always a power loss (the last commits may be lost, and are read again).
    Normal,
}

/// Where the service keeps its state: the `[state]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    /// The SQLite database file, created if missing.
    pub path: PathBuf,
    /// "full" (a commit survives power loss) or "normal" (it survives a process crash).
    pub synchronous: Synchronous,
    /// SQLite page cache of the writer, in MiB.
    pub cache_mib: u32,
}

impl Default for State {
    fn default() -> Self {
        State {
            path: "state.db".into(),
            synchronous: Synchronous::Full,
            cache_mib: 64,
        }
    }
}

/// Where to start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// After the position stored in the database (from the stream's first message when
    /// there is none).
    #[default]
    Resume,
    /// Forget all derived state and read from this stream sequence (`--from-seq N`).
    FromSeq(u64),
    /// Forget what the handler derived from events at or after this event time (µs since
    /// the epoch) and read them again (`--from-time T`); older state is kept.
    FromTime(i64),
}

impl Start {
    /// From the `--from-seq` and `--from-time` flags (at most one).
    pub fn from_flags(
        from_seq: Option<u64>,
        from_time: Option<&str>,
    ) -> Result<Start, ConfigError> {
        match (from_seq, from_time) {
            (Some(_), Some(_)) => Err(ConfigError::key(
                "--from-time",
                "give --from-seq or --from-time, not both",
            )),
            (Some(0), None) => Err(ConfigError::key("--from-seq", "stream sequences start at 1")),
            (Some(n), None) => Ok(Start::FromSeq(n)),
            (None, Some(t)) => parse_time(t)
                .map(Start::FromTime)
                .ok_or_else(|| {
                    ConfigError::key(
                        "--from-time",
                        format!("{t:?} is not a UTC time like 2026-07-04T14:00:00Z or a date like 2026-07-04"),
                    )
                }),
            (None, None) => Ok(Start::Resume),
        }
    }
}

/// The flags of every consumer binary; each one given overrides the file and the
/// environment. A binary flattens them into its own `clap::Parser` (its name and help).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConsumerFlags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL (nats.url).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// JetStream stream (consumer.stream).
    #[arg(long, value_name = "NAME")]
    pub stream: Option<String>,
    /// Durable consumer name (consumer.durable).
    #[arg(long, value_name = "NAME")]
    pub durable: Option<String>,
    /// SQLite database (state.path).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// HTTP address of the service and its /metrics (http.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Rebuild everything from this stream sequence.
    #[arg(long, value_name = "N")]
    pub from_seq: Option<u64>,
    /// Rebuild from this event time (2026-07-04 or 2026-07-04T14:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub from_time: Option<String>,
    /// Log format: text or json (log.format).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl ConsumerFlags {
    /// Loads `defaults` < file < environment (`env_prefix`, e.g. `BSKY_CHARTS_`) < these
    /// flags, and where to start. The caller checks the values.
    pub fn load<C: Serialize + DeserializeOwned>(
        &self,
        defaults: &C,
        env_prefix: &str,
    ) -> Result<(C, Start), ConfigError> {
        let given = [
            flag("nats.url", self.nats.clone()),
            flag("consumer.stream", self.stream.clone()),
            flag("consumer.durable", self.durable.clone()),
            flag("state.path", self.db.clone()),
            flag("http.listen", self.listen.clone()),
            flag("log.format", self.log_format.clone()),
        ];
        let config = service::config::load(
            defaults,
            Sources {
                file: self.config.as_deref(),
                env: Sources::env(env_prefix),
                flags: given.into_iter().flatten().collect(),
            },
        )?;
        let start = Start::from_flags(self.from_seq, self.from_time.as_deref())?;
        Ok((config, start))
    }
}

/// An RFC 3339 time, or a date (its midnight UTC), as µs since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() == 10 {
        return firehose::parse_rfc3339_micros(&format!("{s}T00:00:00Z"));
    }
    firehose::parse_rfc3339_micros(s)
}

impl Consumer {
    /// Checks the values; the message names the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        };
        if !name_ok(&self.stream) {
            return Err(ConfigError::key(
                "consumer.stream",
                "letters, digits, '_' and '-' only",
            ));
        }
        if !name_ok(&self.durable) {
            return Err(ConfigError::key(
                "consumer.durable",
                "letters, digits, '_' and '-' only",
            ));
        }
        if self.subjects.is_empty() {
            return Err(ConfigError::key(
                "consumer.subjects",
                "give at least one subject filter",
            ));
        }
        for s in &self.subjects {
            if let Err(e) = contract::subject::Filter::parse(s) {
                return Err(ConfigError::caused("consumer.subjects", s, e));
            }
        }
        if self.batch == 0 {
            return Err(ConfigError::key("consumer.batch", "must be > 0"));
        }
        if self.max_ack_pending < 2 * self.batch as i64 {
            return Err(ConfigError::key(
                "consumer.max_ack_pending",
                "must be at least twice consumer.batch",
            ));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err(ConfigError::key("consumer.ack_wait", "must be at least 1s"));
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(ConfigError::key(
                "consumer.retry_min",
                "must be > 0 and not above consumer.retry_max",
            ));
        }
        if self.status_interval.is_zero() {
            return Err(ConfigError::key("consumer.status_interval", "must be > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_flags() {
        assert_eq!(Start::from_flags(None, None).ok(), Some(Start::Resume));
        assert_eq!(
            Start::from_flags(Some(7), None).ok(),
            Some(Start::FromSeq(7))
        );
        assert_eq!(
            Start::from_flags(None, Some("2026-07-04")).ok(),
            Some(Start::FromTime(1_783_123_200_000_000))
        );
        assert_eq!(
            Start::from_flags(None, Some("2026-07-04T01:00:00Z")).ok(),
            Some(Start::FromTime(1_783_126_800_000_000))
        );
        for bad in [
            Start::from_flags(Some(1), Some("2026-07-04")),
            Start::from_flags(None, Some("yesterday")),
            Start::from_flags(Some(0), None),
        ] {
            assert!(bad.is_err());
        }
    }

    #[test]
    fn consumer_checks_name_the_key() {
        let mut c = Consumer::default();
        assert!(c.check().is_ok());
        c.subjects = vec!["bsky.>.post".into()];
        let e = c.check().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("consumer.subjects"), "{e}");
        let c = Consumer {
            max_ack_pending: 10,
            ..Consumer::default()
        };
        let e = c.check().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("consumer.max_ack_pending"), "{e}");
    }
}
