//! What a client asks for: Jetstream v1's query parameters and `options_update` messages,
//! validated where they enter, and turned into the NATS subject filters of its consumer.
//!
//! Where it sits: `GET /subscribe?…` → **params** → session (consumer `filter_subjects`,
//! DID filter in the gateway). Everything invalid is a [`ParamError`], answered with HTTP
//! 400 and its text before the upgrade (or, for an `options_update`, a close frame).
//!
//! Collections follow Jetstream: a full NSID, or a prefix ending in `.*`
//! (`app.bsky.feed.*` is every collection whose name starts with `app.bsky.feed.`, the
//! subject `bsky.app.bsky.feed.>`). `#identity` and `#account` events have no collection:
//! every client gets them whatever its collections, filtered by its DIDs, as Jetstream
//! does. `#sync` is not sent: Jetstream v1 has no such event and strict clients reject it.

use firehose::syntax::{is_did, Nsid};
use std::collections::{BTreeSet, HashSet};

/// Most `wantedCollections` in one request (Jetstream's limit).
pub const MAX_COLLECTIONS: usize = 100;
/// Most `wantedDids` in one request (Jetstream's limit).
pub const MAX_DIDS: usize = 10_000;

/// Why a request or an `options_update` is refused; the text is sent to the client.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParamError {
    #[error("invalid collection {0:?}: give a full NSID or a prefix ending in \".*\"")]
    Collection(String),
    #[error("too many wantedCollections: {0} (at most 100)")]
    TooManyCollections(usize),
    #[error("invalid DID {0:?}")]
    Did(String),
    #[error("too many wantedDids: {0} (at most 10000)")]
    TooManyDids(usize),
    #[error("invalid cursor {0:?}: unix microseconds, a non-negative integer")]
    Cursor(String),
    #[error("invalid maxMessageSizeBytes {0:?}: a non-negative integer")]
    MaxSize(String),
    #[error("invalid {0} {1:?}: true or false")]
    Bool(&'static str, String),
    #[error("{0} given more than once")]
    Repeated(&'static str),
    #[error(
        "compress=true asks for Jetstream's zstd dictionary, which this gateway does not have; \
         connect without it (permessage-deflate is offered instead)"
    )]
    Zstd,
    #[error("subscriber message: {0}")]
    Message(String),
}

/// The collections a client wants (`None` in [`Filters`] = all).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collections {
    /// Full NSIDs.
    full: BTreeSet<String>,
    /// Prefixes, each ending with `.` (`app.bsky.feed.`).
    prefixes: BTreeSet<String>,
}

/// A client's filters, replaced whole by an `options_update`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filters {
    /// `None`: every collection.
    pub collections: Option<Collections>,
    /// Empty: every DID.
    pub dids: HashSet<String>,
    /// Events larger than this are not sent; 0 = no limit.
    pub max_message_bytes: usize,
}

/// Everything a `GET /subscribe` asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub filters: Filters,
    /// Unix microseconds, in event time.
    pub cursor: Option<i64>,
    /// Send nothing before the first `options_update`.
    pub require_hello: bool,
}

fn prefix_ok(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 317
        && prefix.split('.').all(|seg| {
            !seg.is_empty()
                && seg.len() <= 63
                && seg.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

impl Filters {
    /// Builds filters from the raw lists, as Jetstream validates them.
    pub fn new<C, D>(collections: C, dids: D, max_message_bytes: usize) -> Result<Self, ParamError>
    where
        C: IntoIterator,
        C::Item: AsRef<str>,
        D: IntoIterator,
        D::Item: AsRef<str>,
    {
        let mut wanted = Collections::default();
        let mut any = false;
        for c in collections {
            let c = c.as_ref();
            any = true;
            match c.strip_suffix(".*") {
                Some(prefix) if prefix_ok(prefix) => {
                    wanted.prefixes.insert(format!("{prefix}."));
                }
                Some(_) => return Err(ParamError::Collection(c.to_string())),
                None if Nsid::parse(c).is_some() => {
                    wanted.full.insert(c.to_string());
                }
                None => return Err(ParamError::Collection(c.to_string())),
            }
        }
        let n = wanted.full.len() + wanted.prefixes.len();
        if n > MAX_COLLECTIONS {
            return Err(ParamError::TooManyCollections(n));
        }
        let mut wanted_dids = HashSet::new();
        for d in dids {
            let d = d.as_ref();
            if !is_did(d) {
                return Err(ParamError::Did(d.to_string()));
            }
            wanted_dids.insert(d.to_string());
        }
        if wanted_dids.len() > MAX_DIDS {
            return Err(ParamError::TooManyDids(wanted_dids.len()));
        }
        Ok(Filters {
            collections: any.then_some(wanted),
            dids: wanted_dids,
            max_message_bytes,
        })
    }

    /// Whether an event of this DID passes the DID filter.
    pub fn wants_did(&self, did: &str) -> bool {
        self.dids.is_empty() || self.dids.contains(did)
    }

    /// The consumer's `filter_subjects`: non-overlapping (the server refuses overlaps), so
    /// a full NSID under a wanted prefix, or a prefix under a shorter one, is left out.
    pub fn subjects(&self) -> Vec<String> {
        let p = firehose::SUBJECT_PREFIX;
        let mut out: Vec<String> = match &self.collections {
            // Every collection: one filter for the whole stream. The server's path for a
            // consumer with several filters cost it twice the CPU per message (the gateway
            // benchmark, BENCHMARKS.md); the few `#sync` events are dropped by the pump.
            None => return vec![format!("{p}.>")],
            Some(c) => {
                let covered = |s: &str, own: Option<&str>| {
                    c.prefixes
                        .iter()
                        .any(|q| Some(q.as_str()) != own && s.starts_with(q.as_str()))
                };
                let prefixes = c
                    .prefixes
                    .iter()
                    .filter(|q| !covered(q, Some(q)))
                    .map(|q| format!("{p}.{}>", q));
                let full = c
                    .full
                    .iter()
                    .filter(|n| !covered(n, None))
                    .map(|n| format!("{p}.{n}"));
                prefixes.chain(full).collect()
            }
        };
        out.push(format!("{p}.identity"));
        out.push(format!("{p}.account"));
        out
    }
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, ParamError> {
    match v {
        "true" | "1" | "True" | "TRUE" | "t" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "" => Ok(false),
        _ => Err(ParamError::Bool(name, v.to_string())),
    }
}

fn parse_size(v: &str) -> Result<usize, ParamError> {
    v.parse::<usize>()
        .map_err(|_| ParamError::MaxSize(v.to_string()))
}

/// Parses the query string of `GET /subscribe`. Unknown parameters are ignored, as
/// Jetstream does.
pub fn parse_query(query: &str) -> Result<Request, ParamError> {
    let mut collections = Vec::new();
    let mut dids = Vec::new();
    let (mut cursor, mut max_size, mut hello, mut compress) = (None, None, None, None);
    let once = |slot: &mut Option<String>, name: &'static str, v: String| {
        if slot.replace(v).is_some() {
            return Err(ParamError::Repeated(name));
        }
        Ok(())
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "wantedCollections" => collections.push(v.into_owned()),
            "wantedDids" => dids.push(v.into_owned()),
            "cursor" => once(&mut cursor, "cursor", v.into_owned())?,
            "maxMessageSizeBytes" => once(&mut max_size, "maxMessageSizeBytes", v.into_owned())?,
            "requireHello" => once(&mut hello, "requireHello", v.into_owned())?,
            "compress" => once(&mut compress, "compress", v.into_owned())?,
            _ => {}
        }
    }
    if let Some(c) = &compress {
        if parse_bool("compress", c)? {
            return Err(ParamError::Zstd);
        }
    }
    let max_message_bytes = max_size.as_deref().map(parse_size).transpose()?;
    let cursor = cursor
        .map(|c| match c.parse::<i64>() {
            Ok(t) if t >= 0 => Ok(t),
            _ => Err(ParamError::Cursor(c)),
        })
        .transpose()?;
    Ok(Request {
        filters: Filters::new(&collections, &dids, max_message_bytes.unwrap_or(0))?,
        cursor,
        require_hello: hello
            .as_deref()
            .map(|h| parse_bool("requireHello", h))
            .transpose()?
            .unwrap_or(false),
    })
}

/// What a subscriber sent.
#[derive(Debug, PartialEq)]
pub enum ClientMessage {
    /// New filters, replacing the old ones whole (an absent list means "all").
    OptionsUpdate(Filters),
    /// A message type this gateway does not know; ignored, as Jetstream does.
    Unknown(String),
}

#[derive(serde::Deserialize)]
struct RawMessage {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<RawOptions>,
}

#[derive(serde::Deserialize)]
struct RawOptions {
    #[serde(default, rename = "wantedCollections")]
    collections: Option<Vec<String>>,
    #[serde(default, rename = "wantedDids")]
    dids: Option<Vec<String>>,
    #[serde(default, rename = "maxMessageSizeBytes")]
    max_size: Option<i64>,
}

/// Parses one text message from a subscriber.
pub fn parse_client_message(text: &[u8]) -> Result<ClientMessage, ParamError> {
    let raw: RawMessage =
        serde_json::from_slice(text).map_err(|e| ParamError::Message(e.to_string()))?;
    if raw.kind != "options_update" {
        return Ok(ClientMessage::Unknown(raw.kind));
    }
    let o = raw
        .payload
        .ok_or_else(|| ParamError::Message("options_update without a payload".into()))?;
    let max = match o.max_size {
        None => 0,
        Some(n) => usize::try_from(n).map_err(|_| ParamError::MaxSize(n.to_string()))?,
    };
    Filters::new(
        o.collections.unwrap_or_default(),
        o.dids.unwrap_or_default(),
        max,
    )
    .map(ClientMessage::OptionsUpdate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_collections_is_one_filter() {
        let r = parse_query("").expect("empty");
        assert_eq!(r.filters.subjects(), ["bsky.>"]);
        assert!(r.cursor.is_none() && !r.require_hello);
    }

    #[test]
    fn prefixes_cover_what_is_under_them() {
        let r = parse_query(
            "wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.feed.*\
             &wantedCollections=app.bsky.*&wantedCollections=chat.bsky.actor.declaration\
             &wantedCollections=app.bsky.feed.post",
        )
        .expect("valid");
        assert_eq!(
            r.filters.subjects(),
            [
                "bsky.app.bsky.>",
                "bsky.chat.bsky.actor.declaration",
                "bsky.identity",
                "bsky.account"
            ]
        );
    }

    #[test]
    fn every_parameter() {
        let r = parse_query(
            "wantedDids=did:plc:abc&wantedDids=did:web:example.com&cursor=1725911162329308\
             &maxMessageSizeBytes=1000&requireHello=true&compress=false&other=x",
        )
        .expect("valid");
        assert_eq!(r.cursor, Some(1725911162329308));
        assert!(r.require_hello);
        assert_eq!(r.filters.max_message_bytes, 1000);
        assert!(r.filters.wants_did("did:plc:abc") && !r.filters.wants_did("did:plc:x"));
        assert!(r.filters.collections.is_none());
    }

    #[test]
    fn invalid_requests_say_why() {
        let many: String = (0..101)
            .map(|i| format!("wantedCollections=a.b.c{i}&"))
            .collect();
        for (q, want) in [
            ("wantedCollections=notansid", "invalid collection"),
            ("wantedCollections=*", "invalid collection"),
            ("wantedCollections=app.bs%20ky.*", "invalid collection"),
            ("wantedCollections=app.>.*", "invalid collection"),
            (many.as_str(), "too many wantedCollections"),
            ("wantedDids=alice", "invalid DID"),
            ("cursor=yesterday", "invalid cursor"),
            ("cursor=-5", "invalid cursor"),
            ("cursor=1&cursor=2", "more than once"),
            ("maxMessageSizeBytes=big", "maxMessageSizeBytes"),
            ("requireHello=maybe", "requireHello"),
            ("compress=true", "zstd"),
        ] {
            let e = parse_query(q).expect_err(q).to_string();
            assert!(e.contains(want), "{q}: {e}");
        }
        let dids: Vec<String> = (0..10_001).map(|i| format!("did:plc:{i}")).collect();
        assert_eq!(
            Filters::new(Vec::<String>::new(), &dids, 0),
            Err(ParamError::TooManyDids(10_001))
        );
    }

    #[test]
    fn options_update_replaces_everything() {
        let m = parse_client_message(
            br#"{"type":"options_update","payload":{"wantedCollections":["app.bsky.feed.post"],"wantedDids":[],"maxMessageSizeBytes":0}}"#,
        )
        .expect("valid");
        let ClientMessage::OptionsUpdate(f) = m else {
            panic!("{m:?}")
        };
        assert_eq!(
            f.subjects(),
            ["bsky.app.bsky.feed.post", "bsky.identity", "bsky.account"]
        );
        // An absent list means all (atcute sends `{}` when it has no filters).
        let m = parse_client_message(br#"{"type":"options_update","payload":{}}"#).expect("v");
        assert_eq!(m, ClientMessage::OptionsUpdate(Filters::default()));
        assert_eq!(
            parse_client_message(br#"{"type":"hello"}"#).expect("v"),
            ClientMessage::Unknown("hello".into())
        );
        for bad in [
            &br#"not json"#[..],
            br#"{"type":"options_update"}"#,
            br#"{"type":"options_update","payload":{"wantedDids":["x"]}}"#,
            br#"{"type":"options_update","payload":{"maxMessageSizeBytes":-1}}"#,
        ] {
            assert!(parse_client_message(bad).is_err());
        }
    }
}
