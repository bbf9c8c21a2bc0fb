//! Creating (or updating to match) the JetStream stream from configuration.

use crate::config::Stream as StreamConfig;
use async_nats::jetstream::{self, stream};

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
