//! Connecting to NATS, refusing servers older than 2.10, and creating (or updating to
//! match) the JetStream stream from configuration.

use crate::config::{Nats, Stream as StreamConfig};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// Oldest nats-server accepted: 2.9 silently ignores settings this pipeline relies on
/// (S2 compression, direct get, subject transforms in consumers).
pub const MIN_SERVER: (u64, u64) = (2, 10);

/// Connects with the configured credentials and checks the server version.
pub async fn connect(cfg: &Nats) -> anyhow::Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(&cfg.name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .client_capacity(65_536);
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.clone());
    }
    if let Some(seed) = &cfg.nkey_seed {
        opts = opts.nkey(seed.clone());
    }
    if let Some(path) = &cfg.creds_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| anyhow::anyhow!("nats.creds_file: cannot read {}: {e}", path.display()))?;
    }
    if let Some(ca) = &cfg.tls_ca {
        if !ca.is_file() {
            anyhow::bail!("nats.tls_ca: no such file {}", ca.display());
        }
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = opts
        .connect(cfg.url.as_str())
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {}: {e}", cfg.url))?;
    check_version(&client.server_info().version)?;
    Ok(client)
}

/// Refuses a server older than [`MIN_SERVER`].
pub fn check_version(version: &str) -> anyhow::Result<()> {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if (major, minor) < MIN_SERVER {
        anyhow::bail!(
            "nats-server {version} is too old: 2.10 or later is required (2.9 silently ignores \
             stream settings this pipeline relies on). Run deploy/setup-nats.sh to install a \
             supported server."
        );
    }
    Ok(())
}

/// The stream configuration derived from settings: subjects `bsky.>`, file storage,
/// discard old, S2 compression, direct get.
pub fn stream_config(cfg: &StreamConfig) -> stream::Config {
    stream::Config {
        name: cfg.name.clone(),
        description: Some(
            "Bluesky firehose, one subject per record collection (see subjects.md)".into(),
        ),
        subjects: vec![format!("{}.>", firehose::SUBJECT_PREFIX)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: cfg.max_age,
        max_bytes: cfg.max_bytes,
        num_replicas: cfg.replicas,
        duplicate_window: cfg.duplicate_window,
        compression: match cfg.compression.as_str() {
            "s2" => Some(stream::Compression::S2),
            _ => Some(stream::Compression::None),
        },
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the stream, or updates it to match the configuration.
pub async fn ensure(
    js: &jetstream::Context,
    cfg: &StreamConfig,
) -> anyhow::Result<jetstream::stream::Stream> {
    let config = stream_config(cfg);
    js.create_or_update_stream(config)
        .await
        .map_err(|e| anyhow::anyhow!("creating or updating stream {}: {e}", cfg.name))?;
    js.get_stream(&cfg.name)
        .await
        .map_err(|e| anyhow::anyhow!("stream {}: {e}", cfg.name))
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
        let msg = check_version("2.9.10").expect_err("old").to_string();
        assert!(msg.contains("2.9.10") && msg.contains("2.10"), "{msg}");
    }
}
