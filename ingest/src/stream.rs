//! The JetStream stream: created from configuration, or an existing one adjusted.
//!
//! The ingestor manages a few settings (subjects covering `bsky.>`, file storage, limits
//! retention, discard old, `max_age`, `max_bytes`, replicas, duplicate window,
//! compression, direct get, and `allow_batched` plus the end-of-batch subject
//! [`contract::subject::batch_end`] when the publisher uses fast-ingest batches) and
//! leaves every other one as the operator set it: placement, extra subjects, metadata,
//! sources, `max_msgs_per_subject`, deny flags, description.
//! It never lowers `replicas`, and refuses to start on a stream that cannot serve:
//! memory storage, or subjects that do not cover `bsky.>`.

use crate::config::Stream as StreamConfig;
use async_nats::jetstream::{self, stream};

/// The subject filter of everything the ingestor publishes.
pub fn all_subjects() -> String {
    format!("{}.>", contract::subject::PREFIX)
}

/// Why the stream cannot be used. Each one means: stop, and tell the operator.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The existing stream is configured in a way the ingestor cannot work with.
    #[error(
        "stream {name} exists but cannot serve: {why}. Change it with `nats stream edit {name}`, \
         or delete it, or point stream.name at another stream"
    )]
    Unusable {
        /// The stream.
        name: String,
        /// What differs.
        why: String,
    },
    /// JetStream refused or did not answer.
    #[error("stream {name}")]
    JetStream {
        /// The stream.
        name: String,
        /// What JetStream said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The configuration of a new stream: subjects `bsky.>`, file storage, limits, discard
/// old, the configured limits, S2 compression if asked, direct get.
pub fn stream_config(cfg: &StreamConfig) -> stream::Config {
    let mut c = stream::Config {
        name: cfg.name.clone(),
        description: Some(
            "Bluesky firehose, one subject per record collection (see subjects.md)".into(),
        ),
        subjects: vec![all_subjects()],
        ..Default::default()
    };
    apply_managed(&mut c, cfg);
    c
}

/// Sets the settings the ingestor manages on `c`, leaving the others.
fn apply_managed(c: &mut stream::Config, cfg: &StreamConfig) {
    c.storage = stream::StorageType::File;
    c.retention = stream::RetentionPolicy::Limits;
    c.discard = stream::DiscardPolicy::Old;
    c.max_age = cfg.max_age;
    c.max_bytes = cfg.max_bytes;
    c.num_replicas = c.num_replicas.max(cfg.replicas);
    // JetStream refuses a duplicate window longer than max_age; the ingestor does not rely
    // on it (it sends no Nats-Msg-Id), so it is shortened to fit.
    c.duplicate_window = if cfg.max_age.is_zero() {
        cfg.duplicate_window
    } else {
        cfg.duplicate_window.min(cfg.max_age)
    };
    c.compression = Some(match cfg.compression {
        crate::config::Compression::S2 => stream::Compression::S2,
        crate::config::Compression::None => stream::Compression::None,
    });
    c.allow_direct = true;
}

/// Whether a subject filter of the stream covers every subject under `bsky.`.
fn covers_all(subject: &str) -> bool {
    subject == ">" || subject == all_subjects()
}

/// What the stream is now, and what changed on start.
pub struct Ensured {
    /// The stream handle.
    pub stream: jetstream::stream::Stream,
    /// Its state when start-up looked.
    pub info: stream::Info,
}

/// Creates the stream, or brings an existing one to the managed settings (see the module
/// docs); refuses a stream that cannot serve.
///
/// With `batched`, the stream also gets `allow_batched` (fast-ingest batches, nats-server
/// 2.14+); without, that setting stays as the operator left it.
pub async fn ensure(
    js: &jetstream::Context,
    cfg: &StreamConfig,
    batched: bool,
) -> Result<Ensured, StreamError> {
    let failed = |e: Box<dyn std::error::Error + Send + Sync>| StreamError::JetStream {
        name: cfg.name.clone(),
        source: e,
    };
    let existing = match js.get_stream(&cfg.name).await {
        Ok(mut s) => Some(s.info().await.map_err(|e| failed(e.into()))?.config.clone()),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            None
        }
        Err(e) => return Err(failed(e.into())),
    };
    match existing {
        None => {
            let mut new = stream_config(cfg);
            new.allow_batch_publish = batched;
            if batched {
                new.subjects.push(contract::subject::batch_end(&cfg.name));
            }
            js.create_stream(new).await.map_err(|e| failed(e.into()))?;
            tracing::info!(stream = %cfg.name, "stream created");
        }
        Some(current) => {
            let unusable = |why: String| StreamError::Unusable {
                name: cfg.name.clone(),
                why,
            };
            if current.storage != stream::StorageType::File {
                return Err(unusable(format!(
                    "storage is {:?}, the ingestor needs file storage (a restart of the server \
                     would lose the firehose)",
                    current.storage
                )));
            }
            if !current.subjects.iter().any(|s| covers_all(s)) {
                return Err(unusable(format!(
                    "subjects {:?} do not include {}",
                    current.subjects,
                    all_subjects()
                )));
            }
            let mut wanted = current.clone();
            apply_managed(&mut wanted, cfg);
            wanted.allow_batch_publish |= batched;
            let end = contract::subject::batch_end(&cfg.name);
            if batched && !wanted.subjects.iter().any(|s| s == ">" || *s == end) {
                wanted.subjects.push(end);
            }
            if current.num_replicas > cfg.replicas {
                tracing::warn!(
                    stream = %cfg.name,
                    replicas = current.num_replicas,
                    configured = cfg.replicas,
                    "the stream has more replicas than stream.replicas; keeping them (lower them \
                     with `nats stream edit` if that is meant)"
                );
            }
            if wanted != current {
                js.update_stream(&wanted)
                    .await
                    .map_err(|e| failed(e.into()))?;
                tracing::info!(stream = %cfg.name, "stream settings updated to the configuration");
            }
        }
    }
    let mut stream = js
        .get_stream(&cfg.name)
        .await
        .map_err(|e| failed(e.into()))?;
    let info = stream.info().await.map_err(|e| failed(e.into()))?.clone();
    Ok(Ensured { stream, info })
}
