//! The feedgen configuration: defaults < TOML file (`--config`) < environment
//! (`BSKY_FEEDGEN_`, nesting with `__`, e.g. `BSKY_FEEDGEN_HTTP__LISTEN`) < flags, through
//! [`service::config`]. Unknown keys stop the program at start with the key named (exit 2).
//!
//! The feeds are an array of tables, `[[feeds]]`, best written in the file (see
//! `consumers/README.md` for a full example). Every feed is checked here, regular
//! expressions included, so a bad feed stops the start naming its key
//! (`feeds[2].regex[0]`) instead of failing later. `--from-seq` and `--from-time` are flags
//! only: a rebuild is an act, not a setting.

use kit::config::{Consumer, Start, State};
use serde::{Deserialize, Serialize};
use service::config::ConfigError;
use service::telemetry::LogFormat;
use std::net::SocketAddr;

/// Prefix of the environment variables read by `feedgen`.
pub const ENV_PREFIX: &str = "BSKY_FEEDGEN_";
/// Most feeds one service serves (a post's feeds are a 64-bit set in the index).
pub const MAX_FEEDS: usize = 64;

/// Everything `feedgen` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach NATS (credentials as for the ingestor).
    pub nats: service::nats::Settings,
    /// The durable consumer: stream, name, subject filter, batches, retries.
    pub consumer: Consumer,
    /// The SQLite index.
    pub state: State,
    /// The XRPC endpoints, `did.json`, `/healthz` and `/metrics`.
    pub http: Http,
    /// Who the service is: its DID and host name, and who publishes its feeds.
    pub service: Identity,
    /// Where to read what the stream no longer holds (a `--from-seq`/`--from-time` older
    /// than the stream, or a stop longer than its retention): the archiver's store, with
    /// the keys of its `[store]`; `url` empty: no archive (such messages are counted lost).
    pub archive: archive::store::StoreConfig,
    /// Logging.
    pub log: Log,
    /// The feeds (`[[feeds]]`, several per service).
    pub feeds: Vec<Feed>,
}

/// The `[http]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Address of the XRPC endpoints, `did.json` and `/metrics` (host:port).
    pub listen: String,
    /// Read-only SQLite connections kept open for requests (more are opened under load
    /// and closed after).
    pub readers: usize,
}

/// The `[service]` table: the feed generator's identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// Public host name of the service (`feeds.example.com`); `did.json` is served for
    /// `did:web:<hostname>`.
    pub hostname: String,
    /// The service's DID [default: `did:web:<hostname>`].
    pub did: Option<String>,
    /// Where the service is reached, for `did.json` [default: `https://<hostname>`].
    pub endpoint: Option<String>,
    /// DID of the account that publishes the feed records
    /// (`at://<publisher_did>/app.bsky.feed.generator/<name>`) [default: the service DID].
    pub publisher_did: Option<String>,
}

/// The `[log]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// "text" or "json".
    pub format: LogFormat,
}

/// What a post carries, for [`Feed::has`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Media {
    /// A link: a link facet in the text, or an external (link card) embed.
    Link,
    /// Images.
    Image,
    /// A video.
    Video,
}

impl Media {
    /// The bit of this kind in a post's media set.
    pub fn bit(self) -> u8 {
        match self {
            Media::Link => 1,
            Media::Image => 2,
            Media::Video => 4,
        }
    }
}

/// One `[[feeds]]` table. A post belongs to the feed when **every** condition given holds;
/// a condition left out does not filter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Feed {
    /// The feed's record key: its at-uri is `at://<publisher_did>/app.bsky.feed.generator/<name>`.
    pub name: String,
    /// Words or phrases, case-insensitive, matched as whole words: the text must hold at
    /// least one of them, or match one of `regex`.
    pub words: Vec<String>,
    /// Regular expressions (Rust `regex` syntax), matched against the text as written
    /// (add `(?i)` for case-insensitive): the text must match one, or hold one of `words`.
    pub regex: Vec<String>,
    /// Languages: one of the post's `langs` must be one of these, or a subtag of one
    /// (`en` takes `en-US`).
    pub langs: Vec<String>,
    /// The post must carry at least one of these: "link", "image", "video".
    pub has: Vec<Media>,
    /// Only posts by these DIDs (empty: anyone).
    pub authors_allow: Vec<String>,
    /// Never posts by these DIDs.
    pub authors_deny: Vec<String>,
    /// Whether replies belong to the feed.
    pub replies: bool,
    /// Keep the posts whose time is within this many days of the newest event read.
    pub max_days: Option<u32>,
    /// Keep at most this many posts (the newest).
    pub max_posts: Option<u64>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            name: String::new(),
            words: Vec::new(),
            regex: Vec::new(),
            langs: Vec::new(),
            has: Vec::new(),
            authors_allow: Vec::new(),
            authors_deny: Vec::new(),
            replies: true,
            max_days: None,
            max_posts: Some(DEFAULT_MAX_POSTS),
        }
    }
}

/// `consumer.batch` of feedgen (kit's default `max_ack_pending`, 10,000, is at least twice it).
pub const DEFAULT_BATCH: usize = 4000;

/// A feed's `max_posts` when it does not say: the index stays bounded.
pub const DEFAULT_MAX_POSTS: u64 = 50_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            nats: service::nats::Settings {
                url: "nats://127.0.0.1:4222".into(),
                name: "bsky-feedgen".into(),
                ..Default::default()
            },
            consumer: Consumer {
                durable: "feedgen".into(),
                subjects: vec![crate::SUBJECT.into()],
                // A commit writes every B-tree page its batch touched: in a catch-up,
                // bigger batches write each page once for more posts (live, batches are
                // as small as the traffic, `linger` bounds the wait).
                batch: DEFAULT_BATCH,
                ..Consumer::default()
            },
            state: State {
                path: "feedgen.db".into(),
                // The index is derived from the stream and committed with its position:
                // a power loss may take the last commits, data and position together, and
                // they are read again. Syncing at checkpoints only makes catch-ups faster.
                synchronous: kit::config::Synchronous::Normal,
                ..State::default()
            },
            http: Http::default(),
            service: Identity::default(),
            archive: archive::history::ArchiveHistory::table_default(),
            log: Log::default(),
            feeds: Vec::new(),
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            listen: "127.0.0.1:8081".into(),
            readers: 4,
        }
    }
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            hostname: "localhost".into(),
            did: None,
            endpoint: None,
            publisher_did: None,
        }
    }
}

/// Command-line flags; each one given overrides every other source.
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "feedgen",
    version,
    about = "A Bluesky feed generator fed by the bsky stream: feeds defined in configuration, served as app.bsky.feed.getFeedSkeleton."
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
    ("feeds.has", "link|image|video"),
    ("archive.url", archive::history::URL_HINT),
];

/// What `--help` says after the flags: the sources, then every key of [`Config`], read
/// from its defaults ([`service::help::keys`]), so the list cannot drift from the type.
pub fn after_help() -> String {
    let defaults = Config {
        feeds: vec![Feed::default()],
        ..Config::default()
    };
    service::help::settings(
        ENV_PREFIX,
        &defaults,
        HINTS,
        "Rebuild: --from-time T drops the posts created from T on and indexes them again from the\n\
stream; --from-seq N drops the whole index and indexes from stream sequence N. Give\n\
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

    /// Checks every value, the feeds' patterns included; the message names the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.nats.check()?;
        self.consumer.check()?;
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::key(
                "http.listen",
                "must be host:port, e.g. 127.0.0.1:8081",
            ));
        }
        if !(1..=64).contains(&self.http.readers) {
            return Err(ConfigError::key("http.readers", "must be 1 to 64"));
        }
        if self.state.path.as_os_str().is_empty() {
            return Err(ConfigError::key("state.path", "must not be empty"));
        }
        archive::history::check_table(&self.archive)?;
        let host_ok = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':'))
        };
        if !host_ok(&self.service.hostname) {
            return Err(ConfigError::key(
                "service.hostname",
                "must be a host name, e.g. feeds.example.com (optionally :port)",
            ));
        }
        for (key, did) in [
            ("service.did", &self.service.did),
            ("service.publisher_did", &self.service.publisher_did),
        ] {
            if let Some(d) = did.as_deref().filter(|d| contract::Did::parse(d).is_err()) {
                return Err(ConfigError::key(key, format!("{d:?} is not a DID")));
            }
        }
        if let Some(e) = &self.service.endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(ConfigError::key(
                    "service.endpoint",
                    "must be an https:// (or http://) URL",
                ));
            }
        }
        if self.feeds.len() > MAX_FEEDS {
            return Err(ConfigError::key(
                "feeds",
                format!("at most {MAX_FEEDS} feeds per service"),
            ));
        }
        for (i, feed) in self.feeds.iter().enumerate() {
            feed.check(&format!("feeds[{i}]"))?;
            if self.feeds[..i].iter().any(|f| f.name == feed.name) {
                return Err(ConfigError::key(
                    &format!("feeds[{i}].name"),
                    format!("{:?} names two feeds", feed.name),
                ));
            }
        }
        if !self.consumer.subjects.iter().all(|s| s == crate::SUBJECT) {
            return Err(ConfigError::key(
                "consumer.subjects",
                format!("feedgen reads posts only: [\"{}\"]", crate::SUBJECT),
            ));
        }
        Ok(())
    }

    /// The service's DID: `service.did`, or `did:web:<hostname>` (a port's `:` encoded).
    pub fn service_did(&self) -> String {
        self.service
            .did
            .clone()
            .unwrap_or_else(|| format!("did:web:{}", self.service.hostname.replace(':', "%3A")))
    }

    /// Where the service is reached: `service.endpoint`, or `https://<hostname>`.
    pub fn endpoint(&self) -> String {
        self.service
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.service.hostname))
    }

    /// The at-uri of a feed: `at://<publisher>/app.bsky.feed.generator/<name>`.
    pub fn feed_uri(&self, feed: &Feed) -> String {
        let publisher = self
            .service
            .publisher_did
            .clone()
            .unwrap_or_else(|| self.service_did());
        format!("at://{publisher}/app.bsky.feed.generator/{}", feed.name)
    }

    /// The configuration as a log line: everything but secrets.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.feeds.iter().map(|f| f.name.as_str()).collect();
        format!(
            "nats={} stream={} durable={} db={} http={} did={} archive={} feeds={names:?}",
            self.nats.redacted_url(),
            self.consumer.stream,
            self.consumer.durable,
            self.state.path.display(),
            self.http.listen,
            self.service_did(),
            archive::history::summary(&self.archive),
        )
    }
}

impl Feed {
    fn check(&self, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        if contract::Rkey::parse(&self.name).is_err() || self.name.len() > 64 {
            return Err(ConfigError::key(
                &key("name"),
                format!(
                    "{:?} is not a record key (1-64 of A-Z a-z 0-9 . _ : ~ -)",
                    self.name
                ),
            ));
        }
        for (j, w) in self.words.iter().enumerate() {
            if crate::matcher::tokens(&w.to_lowercase()).next().is_none() {
                return Err(ConfigError::key(
                    &key(&format!("words[{j}]")),
                    format!("{w:?} holds no word (letters or digits)"),
                ));
            }
        }
        for (j, r) in self.regex.iter().enumerate() {
            // Parsed here to name the key; compiled once, into the matcher's RegexSet.
            if let Err(e) = regex_syntax::Parser::new().parse(r) {
                return Err(ConfigError::caused(
                    &key(&format!("regex[{j}]")),
                    "not a pattern",
                    e,
                ));
            }
        }
        for (j, l) in self.langs.iter().enumerate() {
            if l.is_empty() || !l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
                return Err(ConfigError::key(
                    &key(&format!("langs[{j}]")),
                    format!("{l:?} is not a language tag (en, pt-BR…)"),
                ));
            }
        }
        for (k, list) in [
            ("authors_allow", &self.authors_allow),
            ("authors_deny", &self.authors_deny),
        ] {
            for (j, d) in list.iter().enumerate() {
                if contract::Did::parse(d).is_err() {
                    return Err(ConfigError::key(
                        &key(&format!("{k}[{j}]")),
                        format!("{d:?} is not a DID"),
                    ));
                }
            }
        }
        if self.max_days == Some(0) {
            return Err(ConfigError::key(&key("max_days"), "must be > 0"));
        }
        if self.max_posts == Some(0) {
            return Err(ConfigError::key(&key("max_posts"), "must be > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> &'static str {
        "BSKY_FEEDGEN_TEST_UNUSED_PREFIX_"
    }

    fn load(toml: &str) -> Result<(Config, Start), ConfigError> {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(toml.as_bytes()).expect("w");
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
        let missing = service::help::missing(
            &help,
            &Config {
                feeds: vec![Feed::default()],
                ..Config::default()
            },
        )?;
        assert!(missing.is_empty(), "not in --help: {missing:?}\n{help}");
        Ok(())
    }

    #[test]
    fn defaults_and_a_file_with_feeds() {
        let (c, start) = Config::load_from(&Flags::default(), no_env()).expect("defaults");
        assert_eq!(
            (c.consumer.durable.as_str(), start, c.http.listen.as_str()),
            ("feedgen", Start::Resume, "127.0.0.1:8081")
        );
        assert_eq!(c.service_did(), "did:web:localhost");
        let (c, _) = load(
            "[service]\nhostname = \"feeds.example.com\"\npublisher_did = \"did:plc:abc\"\n\
             [[feeds]]\nname = \"rust\"\nwords = [\"rust\", \"cargo build\"]\nhas = [\"link\"]\n\
             replies = false\nmax_days = 3\n\
             [[feeds]]\nname = \"cats\"\nregex = [\"(?i)\\\\bcats?\\\\b\"]\nlangs = [\"en\"]\n",
        )
        .expect("load");
        assert_eq!(c.feeds.len(), 2);
        assert_eq!(c.feeds[0].has, vec![Media::Link]);
        assert!(!c.feeds[0].replies && c.feeds[1].replies);
        assert_eq!(c.feeds[1].max_posts, Some(DEFAULT_MAX_POSTS));
        assert_eq!(c.service_did(), "did:web:feeds.example.com");
        assert_eq!(c.endpoint(), "https://feeds.example.com");
        assert_eq!(
            c.feed_uri(&c.feeds[1]),
            "at://did:plc:abc/app.bsky.feed.generator/cats"
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (toml, key) in [
            (
                "[[feeds]]\nname = \"a\"\nregex = [\"ok\", \"(unclosed\"]",
                "feeds[0].regex[1]",
            ),
            (
                "[[feeds]]\nname = \"a\"\n[[feeds]]\nname = \"a\"",
                "feeds[1].name",
            ),
            ("[[feeds]]\nname = \"a b\"", "feeds[0].name"),
            (
                "[[feeds]]\nname = \"a\"\nwords = [\"--\"]",
                "feeds[0].words[0]",
            ),
            (
                "[[feeds]]\nname = \"a\"\nauthors_deny = [\"bob\"]",
                "feeds[0].authors_deny[0]",
            ),
            (
                "[[feeds]]\nname = \"a\"\nmax_posts = 0",
                "feeds[0].max_posts",
            ),
            ("[[feeds]]\nname = \"a\"\nhas = [\"audio\"]", "audio"),
            ("[[feeds]]\nname = \"a\"\ncolour = 1", "colour"),
            ("[http]\nlisten = \"nowhere\"", "http.listen"),
            ("[consumer]\nsubjects = [\"bsky.>\"]", "consumer.subjects"),
        ] {
            let e = load(toml).expect_err(toml).to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }
}
