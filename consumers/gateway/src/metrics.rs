//! Prometheus metrics of the gateway, served on `GET /metrics` beside `/subscribe`.
//!
//! Labels come from closed sets only ([`CloseReason::ALL`], pre-registered at zero): never
//! a DID, an IP or a client id. Per-client lag is a histogram sampled once a second per
//! client, so its size does not grow with the number of clients.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why a client's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client closed it, or its socket went away.
    Client,
    /// Its socket accepted nothing for `client.stuck_timeout`.
    Stuck,
    /// It sent something the gateway cannot accept (bad `options_update`, binary, too big).
    BadMessage,
    /// Reading the stream failed (NATS unreachable for too long, stream deleted).
    Stream,
    /// The gateway is stopping.
    Shutdown,
}

impl CloseReason {
    /// Every reason, for pre-registration.
    pub const ALL: [CloseReason; 5] = [
        CloseReason::Client,
        CloseReason::Stuck,
        CloseReason::BadMessage,
        CloseReason::Stream,
        CloseReason::Shutdown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Stuck => "stuck",
            CloseReason::BadMessage => "bad_message",
            CloseReason::Stream => "stream",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// All metrics; cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    pub clients: Gauge,
    pub messages_sent: Counter,
    pub bytes_sent: Counter,
    pub closed: Family<ReasonLabel, Counter>,
    pub rejected: Counter,
    pub options_updates: Counter,
    pub cursor_clamped: Counter,
    pub lag_messages: Histogram,
    pub lag_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            clients: Gauge::default(),
            messages_sent: Counter::default(),
            bytes_sent: Counter::default(),
            closed: Family::default(),
            rejected: Counter::default(),
            options_updates: Counter::default(),
            cursor_clamped: Counter::default(),
            // 1 .. ~16 million messages behind.
            lag_messages: Histogram::new(exponential_buckets(1.0, 4.0, 13)),
            // 10 ms .. ~3 days behind.
            lag_seconds: Histogram::new(exponential_buckets(0.01, 4.0, 14)),
        }
    }
}

impl Metrics {
    /// A registry holding these metrics, every close reason registered at zero.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("bsky_gateway");
        for reason in CloseReason::ALL {
            let _ = self.closed.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        r.register(
            "clients",
            "WebSocket clients connected",
            self.clients.clone(),
        );
        r.register(
            "messages_sent",
            "Events written to clients",
            self.messages_sent.clone(),
        );
        r.register(
            "bytes_sent",
            "Event payload bytes written to clients (before compression)",
            self.bytes_sent.clone(),
        );
        r.register(
            "clients_closed",
            "Client connections ended, by reason",
            self.closed.clone(),
        );
        r.register(
            "requests_rejected",
            "GET /subscribe answered with 400 or 503",
            self.rejected.clone(),
        );
        r.register(
            "options_updates",
            "options_update messages applied",
            self.options_updates.clone(),
        );
        r.register(
            "cursor_clamped",
            "Clients whose cursor was older than everything kept (the stream, or the archive when there is one): they start at the oldest message kept",
            self.cursor_clamped.clone(),
        );
        r.register(
            "client_lag_messages",
            "Per client, sampled each second: stream messages matching its filters not yet read",
            self.lag_messages.clone(),
        );
        r.register(
            "client_lag_seconds",
            "Per client, sampled each second: wall clock minus the storage time of its last event",
            self.lag_seconds.clone(),
        );
        r
    }

    /// Counts a connection that ended.
    pub fn close(&self, reason: CloseReason) {
        self.closed
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}
