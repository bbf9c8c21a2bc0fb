//! The gateway's own copy of the stream, when it runs in its own NATS account
//! (`stream.mirror`; `deploy/accounts.conf` and `deploy/README.md`, "Users, permissions,
//! secrets").
//!
//! NATS permissions match whole subject tokens, so in the account that holds the stream no
//! permission can say "consumers whose names start with `gateway`": whoever may create,
//! pull from or delete a consumer by name may do so to every consumer of that stream,
//! including the services' durables. An account boundary is enforced whole: the gateway's
//! account holds a mirror of the stream (same sequences, same storage times) that the server
//! keeps current through two imports, and the gateway creates its per-client consumers on the
//! mirror, where no other consumer lives.
//!
//! [`ensure`] creates the mirror at start when it is missing and brings its limits to the
//! configured ones; it refuses a stream of that name that is not a mirror of the upstream.

use crate::config::Mirror;
use async_nats::jetstream::{self, stream};

/// Why the mirror cannot be used. Each one stops the gateway at start.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The JetStream API refused or did not answer: permissions, limits, or no JetStream
    /// in this account (deploy/accounts.conf).
    #[error("cannot create or update the mirror stream {name}")]
    Api {
        /// The mirror's name.
        name: String,
        /// The server's answer.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// A stream of that name exists and is something else: remove it or choose another
    /// `stream.name`.
    #[error("stream {name} exists but is not a mirror of {upstream}; remove it or set another stream.name")]
    NotAMirror {
        /// The stream's name.
        name: String,
        /// The configured upstream.
        upstream: String,
    },
}

/// The mirror's configuration: a copy of `m.upstream`, reached through the imports named by
/// `m.api_prefix` and `m.deliver_prefix`, with its own size limit.
pub fn config(name: &str, m: &Mirror) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        mirror: Some(stream::Source {
            name: m.upstream.clone(),
            external: Some(stream::External {
                api_prefix: m.api_prefix.clone(),
                delivery_prefix: Some(m.deliver_prefix.clone()),
            }),
            ..Default::default()
        }),
        max_bytes: m.max_bytes,
        num_replicas: m.replicas,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the mirror `name` if it is missing; updates its size limit and replicas if they
/// differ from `m`.
pub async fn ensure(js: &jetstream::Context, name: &str, m: &Mirror) -> Result<(), MirrorError> {
    let want = config(name, m);
    let api = |source| MirrorError::Api {
        name: name.to_string(),
        source,
    };
    let have = js.get_or_create_stream(want.clone()).await.map_err(api)?;
    let current = &have.cached_info().config;
    if current.mirror.as_ref().map(|s| s.name.as_str()) != Some(m.upstream.as_str()) {
        return Err(MirrorError::NotAMirror {
            name: name.to_string(),
            upstream: m.upstream.clone(),
        });
    }
    if current.max_bytes != want.max_bytes || current.num_replicas != want.num_replicas {
        let updated = stream::Config {
            max_bytes: want.max_bytes,
            num_replicas: want.num_replicas,
            ..current.clone()
        };
        js.update_stream(updated).await.map_err(api)?;
        tracing::info!(name, max_bytes = m.max_bytes, "mirror limits updated");
    }
    Ok(())
}
