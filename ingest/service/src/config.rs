//! Loading one typed configuration: built-in defaults < TOML file < environment < flags.
//!
//! Each binary owns its `Config` struct (serde, `deny_unknown_fields` on every table, a doc
//! comment on every field) and its `check()`; this module only merges the sources, so the
//! rules are the same everywhere:
//! - environment variables are `<PREFIX><TABLE>__<KEY>`, e.g. `BSKY_INGEST_NATS__URL`;
//! - an unknown key, in the file or the environment, stops the program at start, naming it;
//! - flags that were given override everything else.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// A configuration that cannot be used. Binaries print it (with its cause) and exit with
/// status 2: the operator must fix the named key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// One setting: `key` names it, `why` says what is wrong or expected, `source` is what
    /// failed when it was used (a file that cannot be read, a pattern that does not parse).
    #[error("configuration: {key}: {why}")]
    Key {
        /// The dotted key, e.g. `store.credentials_file`, or a flag (`--config`).
        key: String,
        /// What is wrong with its value.
        why: String,
        /// What failed, when something did.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The sources do not fit the types (an unknown key, a wrong type): figment's messages,
    /// each naming its key, with passwords removed. Kept as text because figment's error
    /// carries the values, and a value may be a secret.
    #[error("configuration: {0}")]
    Sources(String),
}

impl ConfigError {
    /// `key: why`.
    pub fn key(key: &str, why: impl std::fmt::Display) -> Self {
        ConfigError::Key {
            key: key.to_string(),
            why: why.to_string(),
            source: None,
        }
    }

    /// `key: why: source`.
    pub fn caused(
        key: &str,
        why: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ConfigError::Key {
            key: key.to_string(),
            why: why.to_string(),
            source: Some(Box::new(source)),
        }
    }

    /// The same error about a table another binary embeds under its own name: a key
    /// `<from>.x` becomes `<to>.x` (charts' `[archive]` is the archiver's `[store]`).
    pub fn under(self, from: &str, to: &str) -> Self {
        match self {
            ConfigError::Key { key, why, source } => ConfigError::Key {
                key: match key.strip_prefix(from).filter(|rest| rest.starts_with('.')) {
                    Some(rest) => format!("{to}{rest}"),
                    None => key,
                },
                why,
                source,
            },
            other => other,
        }
    }
}

impl From<crate::nats::ConnectError> for ConfigError {
    fn from(e: crate::nats::ConnectError) -> Self {
        match e {
            crate::nats::ConnectError::Config { key, why, source } => ConfigError::Key {
                key: key.to_string(),
                why,
                source: source.map(|s| Box::new(s) as _),
            },
            other => ConfigError::caused("nats", "cannot be used", other),
        }
    }
}

/// Where one binary's settings come from.
pub struct Sources<'a> {
    /// The TOML file given with `--config`, if any.
    pub file: Option<&'a Path>,
    /// The environment, e.g. `Env::prefixed("BSKY_INGEST_").split("__")`.
    pub env: Env,
    /// Flags that were given, as (dotted key, value).
    pub flags: Vec<(&'static str, figment::value::Value)>,
}

impl Sources<'_> {
    /// The environment under `prefix` (`BSKY_INGEST_`), nesting with `__`.
    pub fn env(prefix: &str) -> Env {
        Env::prefixed(prefix).split("__")
    }
}

/// Merges `defaults` < file < environment < flags into `T`.
pub fn load<T: Serialize + DeserializeOwned>(
    defaults: &T,
    sources: Sources<'_>,
) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = sources.file {
        if !path.is_file() {
            return Err(ConfigError::key(
                "--config",
                format!("no such file {}", path.display()),
            ));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(sources.env);
    for (key, value) in sources.flags {
        fig = fig.merge(Serialized::default(key, value));
    }
    fig.extract().map_err(|e| {
        ConfigError::Sources(
            e.into_iter()
                .map(|e| crate::nats::redact(&e.to_string()))
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// A flag's value for [`Sources::flags`], when it was given.
pub fn flag<V: Serialize>(
    key: &'static str,
    value: Option<V>,
) -> Option<(&'static str, figment::value::Value)> {
    let value = value?;
    figment::value::Value::serialize(value)
        .ok()
        .map(|v| (key, v))
}

/// Durations as human strings ("500ms", "5s", "2m", "72h", "1d") or whole seconds; use
/// with `#[serde(with = "service::config::duration")]`.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Parses "500ms", "1.5s", "2m", "72h", "1d", "1h 30m" (humantime's syntax: numbers,
    /// each with a unit); `None` for anything else, including a value too large for a
    /// `Duration`.
    pub fn parse(s: &str) -> Option<Duration> {
        humantime::parse_duration(s.trim()).ok()
    }

    /// Writes a duration as milliseconds ("1500ms").
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    /// Reads a duration string, or a whole number of seconds (a TOML or environment integer).
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
                    "invalid duration {t:?} (write numbers with units, e.g. \"500ms\", \"5s\", \"2m\", \"1h 30m\")"
                ))
            }),
        }
    }

    /// The same for `Option<Duration>`.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        /// Writes `None` as nothing, `Some` as milliseconds.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] Duration);
            Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(duration::parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration::parse("72h"), Some(Duration::from_secs(259200)));
        assert_eq!(
            duration::parse("1s 500ms"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(duration::parse(" 2m "), Some(Duration::from_secs(120)));
        assert_eq!(duration::parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(duration::parse("5"), None);
        assert_eq!(duration::parse("5 fortnights"), None);
        // Once a panic in Duration::from_secs_f64: now refused.
        assert_eq!(duration::parse("99999999999999999999999d"), None);
    }
}
