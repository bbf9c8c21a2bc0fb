//! Which path messages take to the stream, chosen once at start.

use tracing::info;

/// The first nats-server with fast-ingest batches.
const BATCH_SERVER: (u64, u64) = (2, 14);

/// How messages reach the stream, chosen once at start ([`choose_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// One acknowledged publish per message (any server).
    PerMessage,
    /// Fast-ingest batches (nats-server 2.14+, stream `allow_batched`), one flow ack per at
    /// most `flow` messages.
    Batched { flow: u16 },
}

impl Path {
    /// Whether the stream must allow batches.
    pub fn batched(self) -> bool {
        matches!(self, Path::Batched { .. })
    }
}

/// The path for this server and configuration; logs the choice and why.
pub fn choose_path(server_version: &str, cfg: &crate::config::Publish) -> Path {
    let mut parts = server_version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let path = if cfg.batch && version >= BATCH_SERVER {
        Path::Batched {
            flow: cfg.batch_flow,
        }
    } else {
        Path::PerMessage
    };
    match path {
        Path::Batched { flow } => info!(
            server = server_version,
            flow, "publish path: fast-ingest batches (the stream allows them; publish.batch = false for one ack per message)"
        ),
        Path::PerMessage if !cfg.batch => info!(
            server = server_version,
            "publish path: one ack per message (publish.batch = false)"
        ),
        Path::PerMessage => info!(
            server = server_version,
            "publish path: one ack per message (fast-ingest batches need nats-server 2.14)"
        ),
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_from_2_14_unless_turned_off() {
        let on = crate::config::Publish::default();
        let off = crate::config::Publish {
            batch: false,
            ..on.clone()
        };
        let flow = on.batch_flow;
        assert_eq!(choose_path("2.14.6", &on), Path::Batched { flow });
        assert_eq!(choose_path("v2.15.0-beta", &on), Path::Batched { flow });
        assert_eq!(choose_path("3.0.0", &on), Path::Batched { flow });
        assert_eq!(choose_path("2.12.4", &on), Path::PerMessage);
        assert_eq!(choose_path("2.10.0", &on), Path::PerMessage);
        assert_eq!(choose_path("2.14.6", &off), Path::PerMessage);
    }
}
