//! Prometheus metrics of the ingestor, served on `GET /metrics`.
//!
//! Every label comes from a closed set, an enum with `ALL` whose every series is registered
//! at zero before the first event: frame kinds ([`firehose::Kind`]), op actions
//! ([`firehose::Action`]), skip reasons ([`firehose::SkipReason`]), reconnect reasons
//! ([`Reconnect`]), and collections from [`COLLECTIONS`] with everything else counted as
//! `other`. Never a DID, never a free-form string.
//!
//! Operations: the stream's size against its `max_bytes` (refreshed by [`crate::usage`])
//! and the lease's acquisitions and losses, for the "store near its limit" and "lease
//! flapping" alerts of `deploy/monitoring/alerts.yml`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Collections that get their own label value; the rest are `other`.
pub const COLLECTIONS: &[&str] = &[
    "app.bsky.feed.like",
    "app.bsky.feed.post",
    "app.bsky.feed.repost",
    "app.bsky.graph.follow",
    "app.bsky.graph.block",
    "app.bsky.graph.listitem",
    "app.bsky.graph.list",
    "app.bsky.graph.listblock",
    "app.bsky.graph.starterpack",
    "app.bsky.graph.verification",
    "app.bsky.feed.threadgate",
    "app.bsky.feed.postgate",
    "app.bsky.feed.generator",
    "app.bsky.actor.profile",
    "app.bsky.actor.status",
    "app.bsky.labeler.service",
    "chat.bsky.actor.declaration",
];

/// Why the relay connection was re-established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reconnect {
    /// The relay closed the connection.
    Closed,
    /// The socket failed.
    IoError,
    /// No frame for `relay.idle_timeout`.
    Idle,
    /// The connection or the WebSocket handshake failed.
    ConnectFailed,
    /// Error frame `FutureCursor`: the cursor is ahead of the relay.
    FutureCursor,
    /// Error frame `ConsumerTooSlow`.
    ConsumerTooSlow,
    /// Any other error frame.
    RelayError,
    /// A frame above what the WebSocket layer accepts; reading resumes after it.
    FrameTooLarge,
}

impl Reconnect {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [Reconnect; 8] = [
        Reconnect::Closed,
        Reconnect::IoError,
        Reconnect::Idle,
        Reconnect::ConnectFailed,
        Reconnect::FutureCursor,
        Reconnect::ConsumerTooSlow,
        Reconnect::RelayError,
        Reconnect::FrameTooLarge,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reconnect::Closed => "closed",
            Reconnect::IoError => "io_error",
            Reconnect::Idle => "idle",
            Reconnect::ConnectFailed => "connect_failed",
            Reconnect::FutureCursor => "future_cursor",
            Reconnect::ConsumerTooSlow => "consumer_too_slow",
            Reconnect::RelayError => "relay_error",
            Reconnect::FrameTooLarge => "frame_too_large",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub action: &'static str,
    pub collection: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// All metrics, cheap to clone (shared counters).
#[derive(Clone, Default)]
pub struct Metrics {
    pub events: Family<KindLabel, Counter>,
    pub ops: Family<OpLabel, Counter>,
    pub skipped: Family<ReasonLabel, Counter>,
    pub reconnects: Family<ReasonLabel, Counter>,
    pub relay_seq: Gauge,
    pub cursor_seq: Gauge,
    /// Event time of the last frame read, microseconds; `lag_seconds` is computed from it
    /// at scrape time, so it keeps growing while the pipeline is stalled.
    pub last_event_us: Gauge,
    pub inflight: Gauge,
    pub published: Counter,
    pub publish_retries: Counter,
    pub publish_rounds: Counter,
    pub already_stored: Counter,
    pub relay_infos: Counter,
    pub stream_gap: Counter,
    /// Bytes the stream holds, as JetStream counts them (before compression); refreshed
    /// every [`crate::usage::REFRESH`].
    pub stream_bytes: Gauge,
    /// The stream's `max_bytes`, -1 when it has none; refreshed with `stream_bytes`.
    pub stream_max_bytes: Gauge,
    /// Times this process took the lease (fresh or from a silent holder).
    pub lease_acquisitions: Counter,
    /// Times this process found its lease taken by another ingestor (it stops then).
    pub lease_losses: Counter,
    /// When this process last took the lease, seconds since the epoch: a new value on
    /// every acquisition, so `changes()` counts them across restarts too.
    pub lease_acquired_time: Gauge,
}

/// Seconds between the wall clock and the event time of the last frame read (0 before
/// the first).
pub fn lag_seconds(last_event_us: i64) -> f64 {
    if last_event_us == 0 {
        return 0.0;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    (now - last_event_us) as f64 / 1e6
}

/// `lag_seconds`, computed on each scrape.
#[derive(Debug)]
struct Lag(Gauge);

impl prometheus_client::collector::Collector for Lag {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let lag = prometheus_client::metrics::gauge::ConstGauge::new(lag_seconds(self.0.get()));
        let metric = encoder.encode_descriptor(
            "lag_seconds",
            "Wall clock minus the event time of the last frame read, at scrape time",
            None,
            lag.metric_type(),
        )?;
        lag.encode(metric)
    }
}

impl Metrics {
    /// Label value for a collection.
    pub fn collection_label(collection: &str) -> &'static str {
        COLLECTIONS
            .iter()
            .find(|c| **c == collection)
            .copied()
            .unwrap_or("other")
    }

    /// A registry holding these metrics, with every closed label pre-registered at zero
    /// so dashboards see the series before the first event.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("bsky_ingest");
        for kind in firehose::Kind::ALL {
            let _ = self.events.get_or_create(&KindLabel {
                kind: kind.as_str(),
            });
        }
        for reason in firehose::SkipReason::ALL {
            let _ = self.skipped.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for action in firehose::Action::ALL {
            let collections: &[&'static str] = match action {
                firehose::Action::Create | firehose::Action::Update | firehose::Action::Delete => {
                    COLLECTIONS
                }
                _ => &[],
            };
            let labels = collections.iter().copied().chain(match action {
                firehose::Action::Create | firehose::Action::Update | firehose::Action::Delete => {
                    ["other"]
                }
                _ => ["none"],
            });
            for collection in labels {
                let _ = self.ops.get_or_create(&OpLabel {
                    action: action.as_str(),
                    collection,
                });
            }
        }
        for reason in Reconnect::ALL {
            let _ = self.reconnects.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        r.register(
            "events",
            "Relay frames handled, by kind",
            self.events.clone(),
        );
        r.register(
            "ops",
            "Messages published, by action and collection",
            self.ops.clone(),
        );
        r.register(
            "skipped",
            "Frames or ops skipped, by reason",
            self.skipped.clone(),
        );
        r.register(
            "reconnects",
            "Relay reconnections, by reason",
            self.reconnects.clone(),
        );
        r.register(
            "relay_seq",
            "Relay seq of the last frame read",
            self.relay_seq.clone(),
        );
        r.register(
            "cursor_seq",
            "Relay seq below which every event is stored in JetStream",
            self.cursor_seq.clone(),
        );
        r.register_collector(Box::new(Lag(self.last_event_us.clone())));
        r.register(
            "last_event_time_us",
            "Event time of the last frame read, microseconds since the epoch",
            self.last_event_us.clone(),
        );
        r.register(
            "inflight_publishes",
            "Publishes awaiting their JetStream ack",
            self.inflight.clone(),
        );
        r.register(
            "acked",
            "Publishes acknowledged by JetStream",
            self.published.clone(),
        );
        r.register(
            "publish_retries",
            "Publishes sent again in a recovery round",
            self.publish_retries.clone(),
        );
        r.register(
            "publish_recoveries",
            "Recovery rounds: the stream was asked where it ends and the rest sent again",
            self.publish_rounds.clone(),
        );
        r.register(
            "stream_gap_messages",
            "Messages this ingestor had stored that the stream no longer held at start",
            self.stream_gap.clone(),
        );
        r.register(
            "already_stored",
            "Messages not published again on resume because the stream already held them",
            self.already_stored.clone(),
        );
        r.register(
            "stream_bytes",
            "Bytes the stream holds, as JetStream counts them (before compression)",
            self.stream_bytes.clone(),
        );
        r.register(
            "stream_max_bytes",
            "The stream's max_bytes limit, -1 when it has none",
            self.stream_max_bytes.clone(),
        );
        r.register(
            "lease_acquisitions",
            "Times this process took the single-writer lease",
            self.lease_acquisitions.clone(),
        );
        r.register(
            "lease_losses",
            "Times this process found its lease taken over by another ingestor",
            self.lease_losses.clone(),
        );
        r.register(
            "lease_acquired_time_seconds",
            "When this process last took the lease, seconds since the epoch (0 before)",
            self.lease_acquired_time.clone(),
        );
        r.register(
            "relay_infos",
            "#info frames from the relay",
            self.relay_infos.clone(),
        );
        r
    }

    /// Counts a frame or an op that was skipped.
    pub fn skip(&self, reason: firehose::SkipReason) {
        self.skipped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Records that this process took the lease now.
    pub fn lease_acquired(&self) {
        self.lease_acquisitions.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.lease_acquired_time.set(now);
    }

    /// Counts a reconnection.
    pub fn reconnect(&self, reason: Reconnect) {
        self.reconnects
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}
