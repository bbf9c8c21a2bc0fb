//! feedgen's own metrics, next to kit's, under `bsky_feedgen_`: what became of each post
//! op, what retention removed, the feeds' sizes, and the requests with their latency.
//! Every label comes from a closed set registered at zero: [`Op::ALL`], [`Evict::ALL`],
//! [`Endpoint::ALL`] × [`Status::ALL`], and the configured feed names (fixed at start).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What became of a post op (committed batches only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// A create that went into at least one feed.
    Indexed,
    /// A create that matched no feed.
    Unmatched,
    /// A create of an at-uri already indexed (the first stays).
    Duplicate,
    /// A create without its record (a tooBig commit): nothing to match.
    NoRecord,
    /// A delete that removed an indexed post.
    Deleted,
    /// A delete of a post that was not indexed.
    DeleteUnindexed,
    /// An update: posts are not edited in the app; the indexed post stays as created.
    Update,
}

impl Op {
    /// Every outcome.
    pub const ALL: [Op; 7] = [
        Op::Indexed,
        Op::Unmatched,
        Op::Duplicate,
        Op::NoRecord,
        Op::Deleted,
        Op::DeleteUnindexed,
        Op::Update,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Indexed => "indexed",
            Op::Unmatched => "unmatched",
            Op::Duplicate => "duplicate",
            Op::NoRecord => "no_record",
            Op::Deleted => "deleted",
            Op::DeleteUnindexed => "delete_unindexed",
            Op::Update => "update",
        }
    }
}

/// Why retention removed a post from a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evict {
    /// Older than the feed's `max_days`.
    MaxDays,
    /// Beyond the feed's `max_posts`.
    MaxPosts,
}

impl Evict {
    /// Every reason.
    pub const ALL: [Evict; 2] = [Evict::MaxDays, Evict::MaxPosts];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Evict::MaxDays => "max_days",
            Evict::MaxPosts => "max_posts",
        }
    }
}

/// An HTTP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `app.bsky.feed.getFeedSkeleton`
    GetFeedSkeleton,
    /// `app.bsky.feed.describeFeedGenerator`
    DescribeFeedGenerator,
    /// `/.well-known/did.json`
    DidJson,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 3] = [
        Endpoint::GetFeedSkeleton,
        Endpoint::DescribeFeedGenerator,
        Endpoint::DidJson,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::GetFeedSkeleton => "get_feed_skeleton",
            Endpoint::DescribeFeedGenerator => "describe_feed_generator",
            Endpoint::DidJson => "did_json",
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 200.
    Ok,
    /// 400 `InvalidRequest`.
    InvalidRequest,
    /// 400 `UnknownFeed`.
    UnknownFeed,
    /// 404: no such document (did.json for a DID that is not did:web).
    NotFound,
    /// 500 / 503: the index could not be read.
    Unavailable,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 5] = [
        Status::Ok,
        Status::InvalidRequest,
        Status::UnknownFeed,
        Status::NotFound,
        Status::Unavailable,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::InvalidRequest => "invalid_request",
            Status::UnknownFeed => "unknown_feed",
            Status::NotFound => "not_found",
            Status::Unavailable => "unavailable",
        }
    }
}

/// `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// [`Op::as_str`]
    pub outcome: &'static str,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// [`Evict::as_str`]
    pub reason: &'static str,
}

/// `feed` label: a configured feed's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabel {
    /// The feed's name (from the configuration, a closed set).
    pub feed: String,
}

/// `endpoint` and `status` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// [`Endpoint::as_str`]
    pub endpoint: &'static str,
    /// [`Status::as_str`]
    pub status: &'static str,
}

/// feedgen's metrics; cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    /// Post ops by outcome.
    pub ops: Family<OutcomeLabel, Counter>,
    /// Posts removed from a feed by retention, by reason.
    pub evicted: Family<ReasonLabel, Counter>,
    /// Posts in each feed (as committed).
    pub feed_posts: Family<FeedLabel, Gauge>,
    /// Requests by endpoint and status.
    pub requests: Family<RequestLabel, Counter>,
    /// Time to answer `getFeedSkeleton`, seconds.
    pub skeleton_seconds: Histogram,
}

impl Metrics {
    /// Registers every metric in `registry` (prefixed `bsky_feedgen`), each label at zero.
    pub fn register(registry: &mut Registry, feeds: &[String]) -> Metrics {
        let m = Metrics {
            ops: Family::default(),
            evicted: Family::default(),
            feed_posts: Family::default(),
            requests: Family::default(),
            skeleton_seconds: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
            ]),
        };
        for op in Op::ALL {
            m.op(op, 0);
        }
        for e in Evict::ALL {
            let _ = m.evicted.get_or_create(&ReasonLabel { reason: e.as_str() });
        }
        for f in feeds {
            let _ = m.feed_posts.get_or_create(&FeedLabel { feed: f.clone() });
        }
        for e in Endpoint::ALL {
            for s in Status::ALL {
                let _ = m.requests.get_or_create(&RequestLabel {
                    endpoint: e.as_str(),
                    status: s.as_str(),
                });
            }
        }
        registry.register(
            "post_ops",
            "Post ops read, by what became of them",
            m.ops.clone(),
        );
        registry.register(
            "evicted_posts",
            "Posts removed from a feed by its retention, by reason",
            m.evicted.clone(),
        );
        registry.register("feed_posts", "Posts in each feed", m.feed_posts.clone());
        registry.register(
            "requests",
            "HTTP requests by endpoint and status",
            m.requests.clone(),
        );
        registry.register(
            "feed_skeleton_duration_seconds",
            "Time to answer getFeedSkeleton",
            m.skeleton_seconds.clone(),
        );
        m
    }

    /// Adds `n` to an op outcome.
    pub fn op(&self, op: Op, n: u64) {
        self.ops
            .get_or_create(&OutcomeLabel {
                outcome: op.as_str(),
            })
            .inc_by(n);
    }

    /// Counts one request.
    pub fn request(&self, endpoint: Endpoint, status: Status) {
        self.requests
            .get_or_create(&RequestLabel {
                endpoint: endpoint.as_str(),
                status: status.as_str(),
            })
            .inc();
    }
}
