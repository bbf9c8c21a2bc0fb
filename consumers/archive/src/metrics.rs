//! The archiver's metrics (`bsky_archive_…`), every label from a closed set registered at
//! zero.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A store operation, for `store_failures_total{op}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Writing a segment.
    PutSegment,
    /// Writing a manifest entry.
    PutManifest,
    /// Reading the manifest at start (listing and getting entries).
    ReadManifest,
    /// Removing a segment no manifest entry names (left by a crash).
    Delete,
}

impl StoreOp {
    /// Every operation.
    pub const ALL: [StoreOp; 4] = [
        StoreOp::PutSegment,
        StoreOp::PutManifest,
        StoreOp::ReadManifest,
        StoreOp::Delete,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::PutSegment => "put_segment",
            StoreOp::PutManifest => "put_manifest",
            StoreOp::ReadManifest => "read_manifest",
            StoreOp::Delete => "delete",
        }
    }
}

/// `op` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// [`StoreOp::as_str`]
    pub op: &'static str,
}

/// What the archiver counts.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Messages in sealed segments.
    pub messages: Counter,
    /// Segments sealed.
    pub segments: Counter,
    /// Bytes of sealed segments (compressed).
    pub bytes: Counter,
    /// Gap records written.
    pub gaps: Counter,
    /// Stream sequences lost to retention before they were archived.
    pub gap_messages: Counter,
    /// Failed store operations (each is retried).
    pub store_failures: Family<OpLabel, Counter>,
    /// Times the open segment was dropped and the consumer recreated at the archived
    /// position (a delivery went missing).
    pub rewinds: Counter,
    /// Last stream sequence the archive covers (segments and gaps).
    pub position: Gauge,
    /// Messages in the segment being written.
    pub open_messages: Gauge,
    /// Messages the stream holds past the archived position, at the last status poll.
    pub lag: Gauge,
}

impl Metrics {
    /// Registers every metric under `registry` (give it the `bsky_archive` prefix).
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        for op in StoreOp::ALL {
            let _ = m.store_failures.get_or_create(&OpLabel { op: op.as_str() });
        }
        registry.register(
            "messages",
            "Messages in sealed segments",
            m.messages.clone(),
        );
        registry.register("segments", "Segments sealed", m.segments.clone());
        registry.register(
            "segment_bytes",
            "Bytes of sealed segments (compressed)",
            m.bytes.clone(),
        );
        registry.register(
            "gaps",
            "Gap records: ranges the stream removed before they were archived",
            m.gaps.clone(),
        );
        registry.register(
            "gap_messages",
            "Stream sequences lost to retention before they were archived",
            m.gap_messages.clone(),
        );
        registry.register(
            "store_failures",
            "Failed object store operations (retried)",
            m.store_failures.clone(),
        );
        registry.register(
            "rewinds",
            "Open segments dropped to read again after a missing delivery",
            m.rewinds.clone(),
        );
        registry.register(
            "position_seq",
            "Last stream sequence the archive covers",
            m.position.clone(),
        );
        registry.register(
            "open_segment_messages",
            "Messages in the segment being written",
            m.open_messages.clone(),
        );
        registry.register(
            "lag_messages",
            "Messages in the stream past the archived position",
            m.lag.clone(),
        );
        m
    }

    /// Counts a failed store operation.
    pub fn store_failed(&self, op: StoreOp) {
        self.store_failures
            .get_or_create(&OpLabel { op: op.as_str() })
            .inc();
    }
}
