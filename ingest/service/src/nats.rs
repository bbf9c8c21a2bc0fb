//! The `[nats]` settings of every binary, and connecting with them.
//!
//! Credentials come in the ways NATS users expect, one kind at a time:
//! - in the URL: `nats://user:password@host:4222` or `nats://token@host:4222`, as the `nats`
//!   CLI and other clients accept them (async-nats itself ignores them, so they are taken
//!   out of the URL here and passed as options);
//! - `user` + `password`, or `password_file`; `token` or `token_file`;
//! - `creds_file` (JWT + NKey seed), or `nkey_seed`.
//!
//! Any of them can come from the environment (`<PREFIX>NATS__PASSWORD`) or a file, so no
//! secret needs to sit on a command line that `ps` shows. No secret is ever logged or put
//! into an error: [`redact`] replaces the user-info of every URL in a text, and the
//! settings' `Debug` hides the secret fields.
//!
//! Replies (JetStream API answers, publish acks, pulled messages) arrive under the client's
//! own inbox prefix, `_INBOX_<user>` unless `inbox_prefix` says otherwise: the server lets
//! each user subscribe there and nowhere else (`deploy/accounts.conf`), so no user can read
//! another's replies.
//!
//! [`connect`] refuses servers older than 2.10 ([`MIN_SERVER`]): 2.9 silently ignores
//! stream settings the pipeline relies on. [`connect_until`] does the same but waits for a
//! server that is not up yet (connection refused, timed out, name not resolved), retrying
//! with a growing pause until it answers or shutdown fires, so the pipeline's parts can
//! start in any order; refused credentials or TLS still stop it at once.
//! [`check_max_payload`] refuses a server whose `max_payload` is below what the caller must
//! be able to send.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Oldest nats-server accepted (major, minor).
pub const MIN_SERVER: (u64, u64) = (2, 10);

/// The first pause of [`connect_until`] after a server did not answer; it doubles up to
/// [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest pause of [`connect_until`] between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

/// How to reach NATS. Use one kind of credentials.
#[derive(Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Server URL(s), comma-separated; may carry `user:password@` or `token@`.
    pub url: String,
    /// User name, with `password` or `password_file`.
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<String>,
    /// File holding the password of `user` (one line).
    pub password_file: Option<PathBuf>,
    /// Authentication token.
    pub token: Option<String>,
    /// File holding the token (one line).
    pub token_file: Option<PathBuf>,
    /// Path of a `.creds` file (JWT + NKey seed).
    pub creds_file: Option<PathBuf>,
    /// An NKey user seed (`SU…`).
    pub nkey_seed: Option<String>,
    /// PEM file of the CA that signed the server's certificate; implies TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Connection name shown by the server (`nats server report connections`).
    pub name: String,
    /// Prefix of this client's reply subjects. Default `_INBOX_<user>` when a user is given
    /// (here or in the URL), else `_INBOX`. The shipped `deploy/accounts.conf` lets each
    /// user subscribe only to `_INBOX_<user>.>`.
    pub inbox_prefix: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("Settings")
            .field("url", &redact(&self.url))
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("password_file", &self.password_file)
            .field("token", &hidden(&self.token))
            .field("token_file", &self.token_file)
            .field("creds_file", &self.creds_file)
            .field("nkey_seed", &hidden(&self.nkey_seed))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("name", &self.name)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

/// What stops a connection before it is made, or refuses the server it reached. Each one
/// means: stop, and tell the operator what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A setting cannot be used; the message names the key.
    #[error("configuration: {key}: {why}")]
    Config {
        /// The key, e.g. `nats.password_file`.
        key: &'static str,
        /// What is wrong with it.
        why: String,
        /// The file that could not be read.
        #[source]
        source: Option<std::io::Error>,
    },
    /// No server answered, or it refused the credentials. URLs are redacted.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Unreachable {
        /// The URL(s), user-info replaced.
        url: String,
        /// The client's reason, redacted.
        reason: String,
    },
    /// The server is older than [`MIN_SERVER`].
    #[error(
        "nats-server {version} is too old: 2.10 or later is required (2.9 silently ignores \
         stream settings this pipeline relies on). Run deploy/setup-nats.sh to install a \
         supported server."
    )]
    TooOld {
        /// What the server reported.
        version: String,
    },
    /// The server's `max_payload` is below what the caller must send.
    #[error(
        "nats-server max_payload is {have} bytes, below the {need} bytes this program must be \
         able to publish; set `max_payload: 8MB` in the server configuration \
         (deploy/nats-server.conf does)"
    )]
    PayloadTooSmall {
        /// The server's `max_payload`.
        have: usize,
        /// What the caller needs.
        need: usize,
    },
}

/// Credentials carried in a URL's user-info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    /// `user:password@`
    UserPassword(String, String),
    /// `token@`
    Token(String),
}

/// Splits credentials out of a comma-separated list of server URLs: returns the URLs
/// without user-info, and the first credentials found (percent-decoded).
pub fn split_url_credentials(urls: &str) -> (String, Option<UrlCredentials>) {
    let mut found = None;
    let clean: Vec<String> = urls
        .split(',')
        .map(|raw| {
            let raw = raw.trim();
            let Some((scheme, rest)) = raw.split_once("://") else {
                return raw.to_string();
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return raw.to_string();
            };
            let userinfo = &rest[..at];
            if found.is_none() && !userinfo.is_empty() {
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                found = Some(match userinfo.split_once(':') {
                    Some((u, p)) => UrlCredentials::UserPassword(decode(u), decode(p)),
                    None => UrlCredentials::Token(decode(userinfo)),
                });
            }
            format!("{scheme}://{}", &rest[at + 1..])
        })
        .collect();
    (clean.join(","), found)
}

/// `text` with the user-info of every URL in it (`scheme://user:pass@host`) replaced by
/// `***`. Safe on any text: configuration summaries, error messages, log fields.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | ',' | '"' | '\'' | '>') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn read_secret(key: &'static str, path: &std::path::Path) -> Result<String, ConnectError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConnectError::Config {
        key,
        why: format!("cannot read {}", path.display()),
        source: Some(e),
    })?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(ConnectError::Config {
            key,
            why: format!("{} is empty", path.display()),
            source: None,
        });
    }
    Ok(secret)
}

impl Settings {
    /// Checks the settings without touching the network: one kind of credentials, files
    /// that exist. The message names the key.
    pub fn check(&self) -> Result<(), ConnectError> {
        let bad = |key, why: &str| {
            Err(ConnectError::Config {
                key,
                why: why.to_string(),
                source: None,
            })
        };
        if self.url.trim().is_empty() {
            return bad("nats.url", "must not be empty");
        }
        let (_, in_url) = split_url_credentials(&self.url);
        let password = self.password.is_some() || self.password_file.is_some();
        if self.password.is_some() && self.password_file.is_some() {
            return bad(
                "nats.password_file",
                "give nats.password or nats.password_file, not both",
            );
        }
        if self.token.is_some() && self.token_file.is_some() {
            return bad(
                "nats.token_file",
                "give nats.token or nats.token_file, not both",
            );
        }
        if password != self.user.is_some() {
            return bad(
                "nats.user",
                "user and password (or password_file) go together",
            );
        }
        let token = self.token.is_some() || self.token_file.is_some();
        let kinds = [
            in_url.is_some(),
            self.user.is_some(),
            token,
            self.creds_file.is_some(),
            self.nkey_seed.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return bad(
                "nats.user",
                "more than one kind of credentials (URL user-info, user/password, token, \
                 creds_file, nkey_seed): keep one",
            );
        }
        for (key, path) in [
            ("nats.password_file", &self.password_file),
            ("nats.token_file", &self.token_file),
            ("nats.creds_file", &self.creds_file),
            ("nats.tls_ca", &self.tls_ca),
            ("nats.tls_cert", &self.tls_cert),
            ("nats.tls_key", &self.tls_key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    return bad(key, &format!("no such file {}", p.display()));
                }
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("nats.tls_cert", "tls_cert and tls_key go together");
        }
        if let Some(prefix) = &self.inbox_prefix {
            let token_ok = |t: &str| {
                !t.is_empty()
                    && t != "*"
                    && t != ">"
                    && !t.chars().any(|c| c.is_whitespace() || c.is_control())
            };
            if !prefix.split('.').all(token_ok) {
                return bad(
                    "nats.inbox_prefix",
                    "a subject without wildcards, spaces or empty tokens, e.g. _INBOX_charts",
                );
            }
        }
        Ok(())
    }

    /// The prefix of this client's reply subjects: `inbox_prefix`, else `_INBOX_<user>` for
    /// the user given here or in the URL, else `_INBOX`.
    pub fn inbox_prefix(&self) -> String {
        if let Some(prefix) = &self.inbox_prefix {
            return prefix.clone();
        }
        let user = match (&self.user, split_url_credentials(&self.url).1) {
            (Some(user), _) => Some(user.clone()),
            (None, Some(UrlCredentials::UserPassword(user, _))) => Some(user),
            _ => None,
        };
        user.map_or_else(|| "_INBOX".to_string(), |u| format!("_INBOX_{u}"))
    }

    /// The URL(s) with user-info replaced: for logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// Connects with `settings`, logs connection events, and refuses servers older than
/// [`MIN_SERVER`]. One attempt: a server that is not up yet is an error.
pub async fn connect(settings: &Settings) -> Result<async_nats::Client, ConnectError> {
    attempt(settings).await.map_err(Attempt::into_error)
}

/// Like [`connect`], but while no server answers (connection refused, timed out, name not
/// resolved) it waits and tries again, [`RETRY_MIN`] doubling to [`RETRY_MAX`], logging
/// each failure, until one answers or `shutdown` fires (then `Ok(None)`). Refused
/// credentials, TLS failures and the server checks stop it at once.
pub async fn connect_until(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<Option<async_nats::Client>, ConnectError> {
    let mut pause = RETRY_MIN;
    for tries in 1u64.. {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            outcome = attempt(settings) => outcome,
        };
        match outcome {
            Ok(client) => return Ok(Some(client)),
            Err(Attempt::NotYet(e)) => {
                tracing::warn!(tries, retry_in = ?pause, error = %e, "NATS not reachable yet; waiting");
            }
            Err(Attempt::Fatal(e)) => return Err(e),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
    Ok(None) // the loop above never ends by itself
}

/// How one connection attempt failed.
enum Attempt {
    /// No server answered: worth another try.
    NotYet(ConnectError),
    /// Anything else: stop.
    Fatal(ConnectError),
}

impl Attempt {
    fn into_error(self) -> ConnectError {
        match self {
            Attempt::NotYet(e) | Attempt::Fatal(e) => e,
        }
    }
}

impl From<ConnectError> for Attempt {
    fn from(e: ConnectError) -> Attempt {
        Attempt::Fatal(e)
    }
}

async fn attempt(settings: &Settings) -> Result<async_nats::Client, Attempt> {
    settings.check()?;
    let (url, in_url) = split_url_credentials(&settings.url);
    let mut opts = async_nats::ConnectOptions::new()
        .name(&settings.name)
        .custom_inbox_prefix(settings.inbox_prefix())
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .client_capacity(65_536)
        .event_callback(|event| async move {
            use async_nats::Event;
            match event {
                Event::Connected => tracing::info!("NATS connection (re)established"),
                Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
                Event::ServerError(e) => {
                    tracing::warn!(error = %redact(&e.to_string()), "NATS server error")
                }
                Event::ClientError(e) => {
                    tracing::warn!(error = %redact(&e.to_string()), "NATS client error")
                }
                Event::SlowConsumer(_) => {
                    tracing::warn!("NATS slow consumer: messages dropped by the client")
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    match in_url {
        Some(UrlCredentials::UserPassword(u, p)) => opts = opts.user_and_password(u, p),
        Some(UrlCredentials::Token(t)) => opts = opts.token(t),
        None => {}
    }
    if let Some(user) = &settings.user {
        let password = match (&settings.password, &settings.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(path)) => read_secret("nats.password_file", path)?,
            (None, None) => String::new(), // check() refuses this
        };
        opts = opts.user_and_password(user.clone(), password);
    }
    match (&settings.token, &settings.token_file) {
        (Some(t), _) => opts = opts.token(t.clone()),
        (None, Some(path)) => opts = opts.token(read_secret("nats.token_file", path)?),
        (None, None) => {}
    }
    if let Some(seed) = &settings.nkey_seed {
        opts = opts.nkey(seed.clone());
    }
    if let Some(path) = &settings.creds_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| ConnectError::Config {
                key: "nats.creds_file",
                why: format!("cannot read {}", path.display()),
                source: Some(e),
            })?;
    }
    if let Some(ca) = &settings.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    // async-nats takes one URL per list element; a comma-separated string is one bad URL.
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let client = opts.connect(servers).await.map_err(|e| {
        use async_nats::ConnectErrorKind as Kind;
        let not_yet = matches!(e.kind(), Kind::Io | Kind::TimedOut | Kind::Dns);
        let e = ConnectError::Unreachable {
            url: redact(&settings.url),
            reason: redact(&e.to_string()),
        };
        if not_yet {
            Attempt::NotYet(e)
        } else {
            Attempt::Fatal(e)
        }
    })?;
    check_version(&client.server_info().version)?;
    Ok(client)
}

/// Refuses a server older than [`MIN_SERVER`].
pub fn check_version(version: &str) -> Result<(), ConnectError> {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if (major, minor) < MIN_SERVER {
        return Err(ConnectError::TooOld {
            version: version.to_string(),
        });
    }
    Ok(())
}

/// Refuses a server whose `max_payload` is below `need` bytes.
pub fn check_max_payload(client: &async_nats::Client, need: usize) -> Result<(), ConnectError> {
    let have = client.server_info().max_payload;
    if have < need {
        return Err(ConnectError::PayloadTooSmall { have, need });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gate() {
        assert!(check_version("2.9.25").is_err());
        assert!(check_version("2.9.10").is_err());
        assert!(check_version("1.4.0").is_err());
        assert!(check_version("2.10.0").is_ok());
        assert!(check_version("2.14.6").is_ok());
        assert!(check_version("3.0.0-beta").is_ok());
        let msg = check_version("2.9.10")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("2.9.10") && msg.contains("2.10"), "{msg}");
    }

    #[test]
    fn credentials_leave_the_url() {
        let (url, c) = split_url_credentials("nats://alice:s%40cret@10.0.0.1:4222");
        assert_eq!(url, "nats://10.0.0.1:4222");
        assert_eq!(
            c,
            Some(UrlCredentials::UserPassword(
                "alice".into(),
                "s@cret".into()
            ))
        );
        let (url, c) = split_url_credentials("nats://tok@a:4222, nats://tok@b:4222");
        assert_eq!(url, "nats://a:4222,nats://b:4222");
        assert_eq!(c, Some(UrlCredentials::Token("tok".into())));
        let (url, c) = split_url_credentials("nats://127.0.0.1:4222");
        assert_eq!((url.as_str(), c), ("nats://127.0.0.1:4222", None));
    }

    #[test]
    fn redact_hides_user_info_everywhere() {
        assert_eq!(
            redact("cannot reach nats://alice:secret@h:4222, wss://tok@relay/x?y"),
            "cannot reach nats://***@h:4222, wss://***@relay/x?y"
        );
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("url=\"nats://u:p@h\""), "url=\"nats://***@h\"");
    }

    #[test]
    fn one_kind_of_credentials() {
        let s = Settings {
            url: "nats://u:p@h".into(),
            user: Some("u".into()),
            password: Some("p".into()),
            ..Settings::default()
        };
        let e = s.check().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("more than one kind"), "{e}");
        let s = Settings {
            url: "nats://h".into(),
            user: Some("u".into()),
            ..Settings::default()
        };
        assert!(s.check().is_err());
        let s = Settings {
            url: "nats://h".into(),
            password: Some("secret".into()),
            user: Some("u".into()),
            ..Settings::default()
        };
        assert!(s.check().is_ok());
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn each_user_replies_under_its_own_inbox() {
        let mut s = Settings {
            url: "nats://h".into(),
            user: Some("charts".into()),
            password: Some("p".into()),
            ..Settings::default()
        };
        assert_eq!(s.inbox_prefix(), "_INBOX_charts");
        s.inbox_prefix = Some("_INBOX_other".into());
        assert_eq!(s.inbox_prefix(), "_INBOX_other");
        assert!(s.check().is_ok());
        for bad in ["", "_INBOX.*", "a..b", "_INBOX >", "x.>"] {
            s.inbox_prefix = Some(bad.into());
            let e = s.check().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("nats.inbox_prefix"), "{bad}: {e}");
        }
        let in_url = Settings {
            url: "nats://gateway:pw@h:4222".into(),
            ..Settings::default()
        };
        assert_eq!(in_url.inbox_prefix(), "_INBOX_gateway");
        assert_eq!(Settings::default().inbox_prefix(), "_INBOX");
    }

    /// Nothing listens: `connect_until` keeps trying until shutdown, then says so with `None`.
    #[tokio::test]
    async fn connect_until_waits_for_a_server_and_hears_shutdown() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let s = Settings {
            url: format!("nats://127.0.0.1:{port}"),
            ..Settings::default()
        };
        assert!(connect(&s).await.is_err(), "one attempt fails");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETRY_MAX).await;
            stop.cancel();
        });
        assert!(matches!(connect_until(&s, &shutdown).await, Ok(None)));
    }
}
