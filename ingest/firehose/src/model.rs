//! What the decoder hands out: [`Decoded`] per frame, with [`Event`]s holding ready-to-
//! publish [`Message`]s, [`Control`] frames, and the [`Kind`]s and [`Action`]s that label
//! metrics.

use crate::event_id;
use crate::skip::{FrameError, SkipReason};

/// The kind of a frame, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Commit,
    Sync,
    Identity,
    Account,
    Info,
    Error,
}

impl Kind {
    /// Every kind, for pre-registering metric series.
    pub const ALL: [Kind; 6] = [
        Kind::Commit,
        Kind::Sync,
        Kind::Identity,
        Kind::Account,
        Kind::Info,
        Kind::Error,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Sync => "sync",
            Kind::Identity => "identity",
            Kind::Account => "account",
            Kind::Info => "info",
            Kind::Error => "error",
        }
    }
}

/// What a message records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
    Identity,
    Account,
    Sync,
}

impl Action {
    /// Every action, for pre-registering metric series.
    pub const ALL: [Action; 6] = [
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Identity,
        Action::Account,
        Action::Sync,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Identity => "identity",
            Action::Account => "account",
            Action::Sync => "sync",
        }
    }
}

/// One message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `bsky.<collection>` for record ops, `bsky.identity` / `bsky.account` / `bsky.sync`.
    pub subject: String,
    /// Jetstream-v1-shaped JSON.
    pub payload: Vec<u8>,
    pub action: Action,
}

impl Message {
    /// The relay-independent event id (subjects.md, "Event ids"), read back from the
    /// payload. Not computed on the hot path: logs and tests ask for it.
    pub fn id(&self) -> String {
        event_id(&self.payload).unwrap_or_default()
    }

    /// The record collection, for record ops.
    pub fn collection(&self) -> Option<&str> {
        match self.action {
            Action::Create | Action::Update | Action::Delete => {
                contract::subject::collection_of(&self.subject).map(|c| c.as_str())
            }
            _ => None,
        }
    }
}

impl Control {
    /// `Kind::Info` or `Kind::Error`.
    pub fn kind(&self) -> Kind {
        match self {
            Control::Info { .. } => Kind::Info,
            Control::Error { .. } => Kind::Error,
        }
    }
}

/// A control message from the relay: not published, acted on by the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `#info`, e.g. `OutdatedCursor`.
    Info {
        name: String,
        message: Option<String>,
    },
    /// An error frame (`op: -1`), e.g. `FutureCursor`, `ConsumerTooSlow`.
    Error {
        error: String,
        message: Option<String>,
    },
}

/// One op skipped inside an otherwise good frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// Why.
    pub reason: SkipReason,
    /// The op's `collection/rkey`.
    pub path: String,
}

/// What one frame is, and so what the caller does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An event of the network: publish its messages.
    Event(Event),
    /// A control frame (`#info`, error): about the connection, never published.
    Control(Control),
    /// A frame that cannot be used: skip it and count it under `error.reason()`.
    Skipped {
        /// The frame's relay seq, when it could still be read.
        seq: Option<i64>,
        /// What is wrong with it.
        error: FrameError,
    },
}

impl Decoded {
    /// The event, if this frame is one.
    pub fn into_event(self) -> Option<Event> {
        match self {
            Decoded::Event(e) => Some(e),
            _ => None,
        }
    }

    /// The control message, if this frame is one.
    pub fn into_control(self) -> Option<Control> {
        match self {
            Decoded::Control(c) => Some(c),
            _ => None,
        }
    }

    /// Why the frame is skipped, if it is.
    pub fn into_skipped(self) -> Option<FrameError> {
        match self {
            Decoded::Skipped { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A `#commit`, `#identity`, `#account` or `#sync` frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Which of the four.
    pub kind: Kind,
    /// The relay's sequence number.
    pub seq: i64,
    /// The event's own time, in microseconds since the Unix epoch.
    pub time_us: i64,
    /// One message per op (commits) or one message (the others), in op order.
    pub messages: Vec<Message>,
    /// Ops left out, with their reasons.
    pub skipped: Vec<Skip>,
    /// A pre-Sync-1.1 `tooBig` commit: ops published without records.
    pub too_big: bool,
}
