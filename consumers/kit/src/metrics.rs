//! The metrics kit keeps for every consumer, under the service's prefix (e.g.
//! `bsky_charts_messages_total`). Labels come from closed sets, all registered at zero:
//! [`Outcome::ALL`], [`Rewind::ALL`], kit's [`POISON_REASONS`] and the handler's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Poison reasons kit itself finds, before the handler sees the message.
pub const POISON_REASONS: &[&str] = &["bad_payload", "unknown_kind"];

/// What became of a delivered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Applied and committed (poison ones included: they are committed as skipped).
    Processed,
    /// Delivered again at or below the committed position: acknowledged, not applied.
    Redelivered,
    /// A second delivery of a message already in hand: dropped.
    Duplicate,
    /// Already counted in the state a `--from-time` rebuild kept: acknowledged, not applied.
    Kept,
    /// NAKed with a delay, to come again (a transient failure, or out of order).
    Nak,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 5] = [
        Outcome::Processed,
        Outcome::Redelivered,
        Outcome::Duplicate,
        Outcome::Kept,
        Outcome::Nak,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::Redelivered => "redelivered",
            Outcome::Duplicate => "duplicate",
            Outcome::Kept => "kept",
            Outcome::Nak => "nak",
        }
    }
}

/// Why the durable consumer was recreated at the committed position mid-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rewind {
    /// A delivery did not arrive (a gap in the consumer's delivery sequence).
    DeliveryGap,
    /// Messages NAKed for a retry did not come back in time.
    Stalled,
    /// The consumer was deleted on the server.
    Deleted,
    /// The stream dropped messages this consumer had not read yet, and an archive holds
    /// them: read from it, then the consumer recreated ([`crate::history`]).
    Behind,
}

impl Rewind {
    /// Every reason.
    pub const ALL: [Rewind; 4] = [
        Rewind::DeliveryGap,
        Rewind::Stalled,
        Rewind::Deleted,
        Rewind::Behind,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rewind::DeliveryGap => "delivery_gap",
            Rewind::Stalled => "stalled",
            Rewind::Deleted => "deleted",
            Rewind::Behind => "behind",
        }
    }
}

/// `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// [`Outcome::as_str`]
    pub outcome: &'static str,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A poison or rewind reason.
    pub reason: &'static str,
}

/// kit's metrics; cheap to clone (shared counters).
#[derive(Clone, Default)]
pub struct Metrics {
    /// Delivered messages by outcome.
    pub messages: Family<OutcomeLabel, Counter>,
    /// Poison messages terminated, by reason.
    pub poison: Family<ReasonLabel, Counter>,
    /// Batches committed.
    pub batches: Counter,
    /// Batches rolled back after a transient failure.
    pub transient_failures: Counter,
    /// Consumer recreated mid-run, by reason.
    pub rewinds: Family<ReasonLabel, Counter>,
    /// Stream messages dropped by the stream's limits before this consumer read them (an
    /// upper bound of those matching its filters).
    pub retention_lost: Counter,
    /// Messages read from the archive (any subject) because the stream no longer held them.
    pub history: Counter,
    /// Stream sequence of the last message applied.
    pub position: Gauge,
    /// Matching messages not yet applied (the server's count: not delivered + unacked).
    pub lag_messages: Gauge,
    /// Event time of the stream's newest message minus that of the last applied, seconds.
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// Messages in hand: delivered to this process, not yet acknowledged.
    pub acks_pending: Gauge,
}

impl Metrics {
    /// Registers every metric in `registry` (give it the service's prefix, e.g.
    /// `Registry::with_prefix("bsky_charts")`), with the labels of kit and of the handler
    /// at zero.
    pub fn register(registry: &mut Registry, handler_reasons: &[&'static str]) -> Metrics {
        let m = Metrics::default();
        for o in Outcome::ALL {
            m.messages
                .get_or_create(&OutcomeLabel {
                    outcome: o.as_str(),
                })
                .get();
        }
        for r in POISON_REASONS.iter().chain(handler_reasons) {
            m.poison.get_or_create(&ReasonLabel { reason: r }).get();
        }
        for r in Rewind::ALL {
            m.rewinds
                .get_or_create(&ReasonLabel { reason: r.as_str() })
                .get();
        }
        registry.register(
            "messages",
            "Delivered messages by outcome",
            m.messages.clone(),
        );
        registry.register(
            "poison",
            "Poison messages terminated, by reason",
            m.poison.clone(),
        );
        registry.register("batches", "Batches committed", m.batches.clone());
        registry.register(
            "transient_failures",
            "Batches rolled back and NAKed after a transient failure",
            m.transient_failures.clone(),
        );
        registry.register(
            "rewinds",
            "Durable consumer recreated at the committed position mid-run",
            m.rewinds.clone(),
        );
        registry.register(
            "retention_lost_messages",
            "Stream messages, of any subject, dropped by the stream's limits before this consumer passed them: exact for a stopped consumer, a lower bound while it runs",
            m.retention_lost.clone(),
        );
        registry.register(
            "history_messages",
            "Messages, of any subject, read from the archive because the stream no longer held them",
            m.history.clone(),
        );
        registry.register(
            "position_seq",
            "Stream sequence of the last message applied",
            m.position.clone(),
        );
        registry.register(
            "lag_messages",
            "Matching messages not yet applied (not delivered, or unacknowledged)",
            m.lag_messages.clone(),
        );
        registry.register(
            "lag_seconds",
            "Event time of the stream's newest message minus that of the last applied",
            m.lag_seconds.clone(),
        );
        registry.register(
            "acks_pending",
            "Messages delivered to this process and not yet acknowledged",
            m.acks_pending.clone(),
        );
        m
    }

    pub(crate) fn count(&self, outcome: Outcome, n: u64) {
        if n > 0 {
            self.messages
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.as_str(),
                })
                .inc_by(n);
        }
    }
}
