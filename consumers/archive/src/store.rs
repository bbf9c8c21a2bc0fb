//! Where the archive lives: the `[store]` table and the object store it opens, through the
//! `object_store` crate. A local directory by default (nothing to install); any
//! S3-compatible store by URL (`s3://bucket/prefix` with an `endpoint`). Credentials come
//! from a file or the environment, never from a flag or the configuration file, and are
//! never logged.

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use service::config::{duration, ConfigError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `[store]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// A local directory (created if missing), `file:///absolute/path`, or
    /// `s3://bucket/prefix`.
    pub url: String,
    /// The S3-compatible endpoint (`https://s3.example.com`, `http://127.0.0.1:8333`);
    /// empty: AWS itself.
    pub endpoint: String,
    /// The S3 region.
    pub region: String,
    /// Allow a plain-HTTP endpoint (loopback, a private network).
    pub allow_http: bool,
    /// A file of `KEY=VALUE` lines: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally
    /// `AWS_SESSION_TOKEN`. Empty: the same variables from the environment.
    pub credentials_file: Option<PathBuf>,
    /// First wait after a failed store operation; doubles on each failure in a row.
    #[serde(with = "duration")]
    pub retry_min: Duration,
    /// Longest wait between attempts.
    #[serde(with = "duration")]
    pub retry_max: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "archive".into(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            allow_http: false,
            credentials_file: None,
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Which kind of store a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl StoreConfig {
    fn kind(&self) -> Result<Kind, ConfigError> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(ConfigError::key("store.url", "must not be empty"));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ConfigError::key(
                    "store.url",
                    "s3://bucket/prefix: no bucket",
                ));
            }
            return Ok(Kind::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(Kind::Local(path.into()));
        }
        if url.contains("://") {
            return Err(ConfigError::key(
                "store.url",
                "a directory, file:///path or s3://bucket/prefix",
            ));
        }
        Ok(Kind::Local(url.into()))
    }

    /// Checks the values; the message names the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.kind()?;
        if !self.endpoint.is_empty() && url::Url::parse(&self.endpoint).is_err() {
            return Err(ConfigError::key("store.endpoint", "not a URL"));
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(ConfigError::key(
                "store.retry_min",
                "must be > 0 and not above retry_max",
            ));
        }
        if let Some(f) = &self.credentials_file {
            read_credentials(f)?;
        }
        Ok(())
    }

    /// The store, as a log line (no credentials).
    pub fn summary(&self) -> String {
        match self.kind() {
            Ok(Kind::Local(p)) => format!("local directory {}", p.display()),
            Ok(Kind::S3 { bucket, prefix }) => format!(
                "s3://{bucket}/{prefix} at {}",
                if self.endpoint.is_empty() {
                    "AWS"
                } else {
                    &self.endpoint
                }
            ),
            Err(e) => e.to_string(),
        }
    }
}

/// `KEY=VALUE` lines of a credentials file; blank lines and `#` comments ignored.
fn read_credentials(
    path: &std::path::Path,
) -> Result<Vec<(AmazonS3ConfigKey, String)>, ConfigError> {
    let bad = |why: String| ConfigError::key("store.credentials_file", why);
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::caused(
            "store.credentials_file",
            format!("cannot read {}", path.display()),
            e,
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(bad(format!(
                "{} line {}: not KEY=VALUE",
                path.display(),
                i + 1
            )));
        };
        let key = match k.trim() {
            "AWS_ACCESS_KEY_ID" => AmazonS3ConfigKey::AccessKeyId,
            "AWS_SECRET_ACCESS_KEY" => AmazonS3ConfigKey::SecretAccessKey,
            "AWS_SESSION_TOKEN" => AmazonS3ConfigKey::Token,
            other => {
                return Err(bad(format!(
                    "{} line {}: unknown key {other:?} (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)",
                    path.display(),
                    i + 1
                )))
            }
        };
        out.push((key, v.trim().to_string()));
    }
    Ok(out)
}

/// An opened archive store: keys are relative to the archive's root.
#[derive(Clone, Debug)]
pub struct Store {
    /// The object store, rooted at the archive.
    pub objects: Arc<dyn ObjectStore>,
    /// The directory, for a local store.
    local_root: Option<PathBuf>,
}

impl Store {
    /// Opens the store `cfg` names (a local directory is created).
    pub fn open(cfg: &StoreConfig) -> Result<Store, ConfigError> {
        let open_err = |e: object_store::Error| ConfigError::caused("store.url", "cannot open", e);
        match cfg.kind()? {
            Kind::Local(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    ConfigError::caused("store.url", format!("cannot create {}", dir.display()), e)
                })?;
                let fs = LocalFileSystem::new_with_prefix(&dir).map_err(open_err)?;
                Ok(Store {
                    objects: Arc::new(fs),
                    local_root: Some(dir),
                })
            }
            Kind::S3 { bucket, prefix } => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(&cfg.region)
                    .with_allow_http(cfg.allow_http);
                if !cfg.endpoint.is_empty() {
                    b = b
                        .with_endpoint(&cfg.endpoint)
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(f) = &cfg.credentials_file {
                    for (k, v) in read_credentials(f)? {
                        b = b.with_config(k, v);
                    }
                }
                let s3 = b.build().map_err(open_err)?;
                let objects: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                };
                Ok(Store {
                    objects,
                    local_root: None,
                })
            }
        }
    }

    /// Removes what a process killed in the middle of a local write leaves: the staging
    /// files (`<key>#<n>`) `object_store` writes before renaming them into place. They are
    /// not objects (a listing never shows them); nothing else is touched.
    pub fn remove_staging_files(&self) -> std::io::Result<u64> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let mut removed = 0;
        for dir in [crate::format::SEGMENTS, crate::format::MANIFEST] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().contains('#') {
                    std::fs::remove_file(e.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn urls() {
        let c = |url: &str| StoreConfig {
            url: url.into(),
            ..StoreConfig::default()
        };
        assert_eq!(c("a/b").kind().ok(), Some(Kind::Local("a/b".into())));
        assert_eq!(c("file:///x").kind().ok(), Some(Kind::Local("/x".into())));
        assert_eq!(
            c("s3://bk/p/q/").kind().ok(),
            Some(Kind::S3 {
                bucket: "bk".into(),
                prefix: "p/q".into()
            })
        );
        for bad in ["", "s3:///p", "gs://b"] {
            let e = c(bad)
                .check()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("store.url"), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_file_names_the_key_and_hides_the_secret() -> std::io::Result<()> {
        let mut f = tempfile::NamedTempFile::new()?;
        writeln!(
            f,
            "# test\nAWS_ACCESS_KEY_ID=k\nAWS_SECRET_ACCESS_KEY = s3cr3t\n"
        )?;
        assert_eq!(read_credentials(f.path()).map(|v| v.len()).ok(), Some(2));
        let mut g = tempfile::NamedTempFile::new()?;
        writeln!(g, "PASSWORD=s3cr3t")?;
        let e = read_credentials(g.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("store.credentials_file"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        Ok(())
    }
}
