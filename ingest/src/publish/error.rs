//! Why publishing stopped for good.

/// Why publishing stopped for good. Each one stops the ingestor (exit non-zero).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// JetStream refuses the message and will go on refusing it.
    #[error("JetStream refuses to store more ({code}: {description}): raise the limit (account or stream storage, max_msg_size), then restart")]
    Limits {
        /// JetStream's error code.
        code: u64,
        /// Its description.
        description: String,
    },
    /// The stream stopped taking batches (someone turned `allow_batched` off).
    #[error("stream {stream} refuses fast-ingest batches ({description}): restart the ingestor (it allows them at start), or set publish.batch = false")]
    BatchesRefused {
        /// The stream.
        stream: String,
        /// JetStream's description.
        description: String,
    },
    /// The stream ends below what this ingestor stored.
    #[error("stream {stream} now ends at sequence {last}, below the {stored} this ingestor had stored (deleted, purged to an older state or restored?); restart the ingestor to reconcile with what the stream holds")]
    WentBack {
        /// The stream.
        stream: String,
        /// Where it ends.
        last: u64,
        /// Where this ingestor's stored messages end.
        stored: u64,
    },
    /// The stream ends past everything this ingestor sent.
    #[error("stream {stream} ends at sequence {last}, past every message this ingestor sent: another writer publishes into it; restart the ingestor to reconcile with what the stream holds")]
    OtherWriter {
        /// The stream.
        stream: String,
        /// Where it ends.
        last: u64,
    },
    /// The stream holds, where this ingestor's message should be, another one.
    #[error("stream {stream} holds at sequence {seq} a message this ingestor did not send there (another writer?); restart the ingestor to reconcile with what the stream holds")]
    Foreign {
        /// The stream.
        stream: String,
        /// The sequence.
        seq: u64,
    },
    /// The client cannot subscribe to its own ack inbox: the connection is gone for good.
    #[error("cannot subscribe to the publisher's ack inbox")]
    Subscribe(#[source] async_nats::SubscribeError),
}
