//! The stream's payloads (`subjects.md`, Jetstream v1 shape) as typed values.
//!
//! [`Event::parse`] reads one message payload once, borrowing strings from it where it can;
//! a commit's `record` stays raw JSON ([`Commit::record`]) until a consumer asks for the
//! fields it needs ([`Commit::record_as`]). A payload that does not follow the contract is
//! an [`EventError`]: the message is poison (terminate it and count it), never a retry.

use serde::Deserialize;
use std::borrow::Cow;

/// One stream message.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The repository (account) the event is about.
    pub did: Cow<'a, str>,
    /// The event's own time (set upstream), microseconds since the Unix epoch.
    pub time_us: i64,
    /// What happened.
    pub body: Body<'a>,
}

/// The kinds of event.
#[derive(Debug, Clone)]
pub enum Body<'a> {
    /// A record created, updated or deleted.
    Commit(Commit<'a>),
    /// A handle or DID document change.
    Identity(Identity<'a>),
    /// An account's hosting status changed.
    Account(Account<'a>),
    /// A repository announced its current state (resynchronise derived data).
    Sync,
}

/// What a commit op did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// A new record.
    Create,
    /// A record replaced.
    Update,
    /// A record removed.
    Delete,
}

/// A record operation.
#[derive(Debug, Clone, Deserialize)]
pub struct Commit<'a> {
    /// The repository revision (TID) of the commit.
    #[serde(borrow)]
    pub rev: Cow<'a, str>,
    /// Create, update or delete.
    pub operation: Operation,
    /// The record's collection (NSID), e.g. `app.bsky.feed.post`.
    #[serde(borrow)]
    pub collection: Cow<'a, str>,
    /// The record key.
    #[serde(borrow)]
    pub rkey: Cow<'a, str>,
    /// The record, as raw JSON (absent on delete and on tooBig commits).
    #[serde(borrow, default)]
    pub record: Option<&'a serde_json::value::RawValue>,
    /// The record's CID (absent on delete).
    #[serde(borrow, default)]
    pub cid: Option<Cow<'a, str>>,
    /// The relay left the record out (pre-Sync-1.1 tooBig commit).
    #[serde(rename = "tooBig", default)]
    pub too_big: bool,
}

impl<'a> Commit<'a> {
    /// The record parsed into `T` (only the fields `T` names are read), or `None` when the
    /// op carries no record.
    pub fn record_as<T: Deserialize<'a>>(&self) -> Option<Result<T, EventError>> {
        self.record
            .map(|raw| serde_json::from_str(raw.get()).map_err(EventError::Record))
    }

    /// `at://<did>/<collection>/<rkey>`.
    pub fn uri(&self, did: &str) -> String {
        format!("at://{did}/{}/{}", self.collection, self.rkey)
    }
}

/// A `#identity` event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Identity<'a> {
    /// The new handle, when the relay sent one.
    #[serde(borrow, default)]
    pub handle: Option<Cow<'a, str>>,
}

/// A `#account` event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Account<'a> {
    /// Whether the account is active.
    pub active: bool,
    /// Why it is not: `takendown`, `suspended`, `deleted`, `deactivated`, …
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
}

/// Why a payload is not an event of the contract. The message is poison: terminate it.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or a field of the envelope missing or of the wrong type.
    #[error("payload is not a contract event: {0}")]
    Json(#[source] serde_json::Error),
    /// `kind` is not one the contract names, or its body is missing.
    #[error("unknown event kind {0:?}")]
    Kind(String),
    /// The record does not have the shape the consumer asked for.
    #[error("record: {0}")]
    Record(#[source] serde_json::Error),
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    did: Cow<'a, str>,
    time_us: i64,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    commit: Option<Commit<'a>>,
    #[serde(borrow, default)]
    identity: Option<Identity<'a>>,
    #[serde(borrow, default)]
    account: Option<Account<'a>>,
}

impl<'a> Event<'a> {
    /// Parses one message payload.
    pub fn parse(payload: &'a [u8]) -> Result<Event<'a>, EventError> {
        let raw: Raw<'a> = serde_json::from_slice(payload).map_err(EventError::Json)?;
        let body = match (&*raw.kind, raw.commit, raw.identity, raw.account) {
            ("commit", Some(c), _, _) => Body::Commit(c),
            ("identity", _, Some(i), _) => Body::Identity(i),
            ("account", _, _, Some(a)) => Body::Account(a),
            ("sync", _, _, _) => Body::Sync,
            (kind, ..) => return Err(EventError::Kind(kind.to_string())),
        };
        Ok(Event {
            did: raw.did,
            time_us: raw.time_us,
            body,
        })
    }

    /// The commit, if this event is one.
    pub fn commit(&self) -> Option<&Commit<'a>> {
        match &self.body {
            Body::Commit(c) => Some(c),
            _ => None,
        }
    }
}

/// Only the event time of a payload, without reading the rest (for seeking by event time).
pub fn time_us(payload: &[u8]) -> Result<i64, EventError> {
    #[derive(Deserialize)]
    struct T {
        time_us: i64,
    }
    serde_json::from_slice::<T>(payload)
        .map(|t| t.time_us)
        .map_err(EventError::Json)
}
