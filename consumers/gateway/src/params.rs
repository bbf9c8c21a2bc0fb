//! What a client asks for: Jetstream v1's query parameters and `options_update` messages,
//! validated where they enter, and turned into the NATS subject filters of its consumer.
//!
//! Where it sits: `GET /subscribe?…` → **params** → session (consumer `filter_subjects`,
//! DID filter in the gateway). Everything invalid is a [`ParamError`], answered with HTTP
//! 400 and its text before the upgrade (or, for an `options_update`, a close frame).
//!
//! Parsing follows Jetstream v1 where clients rely on it: the first of a repeated single
//! parameter wins, `requireHello` and `compress` are on only for the exact value `true`, a
//! negative or unparsable `maxMessageSizeBytes` means no limit, and `compress=true` or a
//! `Socket-Encoding` header naming `zstd` turns on zstd. What v1 refuses (a bad NSID or DID,
//! too many of either, a non-integer cursor) is refused here too.
//!
//! Collections follow Jetstream: a full NSID, or a prefix ending in `.*`
//! (`app.bsky.feed.*` is every collection whose name starts with `app.bsky.feed.`, the
//! subject `bsky.app.bsky.feed.>`). `#identity` and `#account` events have no collection:
//! every client gets them whatever its collections, filtered by its DIDs, as Jetstream
//! does. `#sync` is not sent: Jetstream v1 has no such event and strict clients reject it.

use contract::{Did, Nsid};
use std::collections::{BTreeSet, HashSet};

/// Most `wantedCollections` in one request (Jetstream's limit).
pub const MAX_COLLECTIONS: usize = 100;
/// Most `wantedDids` in one request (Jetstream's limit).
pub const MAX_DIDS: usize = 10_000;

/// Why a request or an `options_update` is refused; the text is sent to the client.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("invalid collection {0:?}: give a full NSID or a prefix ending in \".*\"")]
    Collection(String),
    #[error("too many wantedCollections: {0} (at most 100)")]
    TooManyCollections(usize),
    #[error("invalid DID {0:?}")]
    Did(String),
    #[error("too many wantedDids: {0} (at most 10000)")]
    TooManyDids(usize),
    #[error(
        "invalid cursor {0:?}: an integer, a stream sequence (below 10^15) or unix microseconds"
    )]
    Cursor(String),
    /// The parser's words are in the message itself, which is all the client gets.
    #[error("subscriber message: {0}")]
    Message(serde_json::Error),
    #[error("subscriber message: options_update without a payload")]
    NoPayload,
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

/// Values of `cursor` from here up are times (unix microseconds, after 2001-09-09); below,
/// stream sequences.
pub const TIME_CURSOR_FROM: i64 = 1_000_000_000_000_000;

/// Where a client starts: Jetstream v2's cursor, which takes both forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// A stream sequence (the `cursor` field of a message), inclusive. 0 and negative
    /// values: the stream's first message.
    Seq(u64),
    /// Unix microseconds of storage time (the `time_us` of a message): the first message
    /// stored at or after it.
    Time(i64),
}

impl Cursor {
    /// The cursor a client sent, by its size.
    pub fn from_value(v: i64) -> Cursor {
        if v >= TIME_CURSOR_FROM {
            Cursor::Time(v)
        } else {
            Cursor::Seq(u64::try_from(v).unwrap_or(0))
        }
    }
}

/// Everything a `GET /subscribe` asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub filters: Filters,
    pub cursor: Option<Cursor>,
    /// Send nothing before the first `options_update`.
    pub require_hello: bool,
    /// Jetstream v1's zstd: one frame per message, with its dictionary, as binary messages.
    pub zstd: bool,
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
                None if Nsid::parse(c).is_ok() => {
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
            if Did::parse(d).is_err() {
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
        let p = contract::subject::PREFIX;
        let mut out: Vec<String> = match &self.collections {
            // Every collection: one filter for the whole stream. The server's path for a
            // consumer with several filters cost it twice the CPU per message (the gateway
            // benchmark, BENCHMARKS.md); the few `#sync` events are dropped by the pump.
            None => return vec![contract::subject::ALL.to_string()],
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

/// `maxMessageSizeBytes` as Jetstream v1 reads it: anything but a non-negative integer is
/// 0, no limit.
fn lenient_size(v: &str) -> usize {
    v.parse::<i64>()
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
}

/// Parses the query string of `GET /subscribe` and its `Socket-Encoding` header. Unknown
/// parameters are ignored, as Jetstream does.
pub fn parse_query(query: &str, socket_encoding: Option<&str>) -> Result<Request, ParamError> {
    let mut collections = Vec::new();
    let mut dids = Vec::new();
    let (mut cursor, mut max_size, mut hello, mut compress) = (None, None, None, None);
    // Jetstream v1 (Go's `Query().Get`) takes the first of a repeated parameter.
    let first = |slot: &mut Option<String>, v: std::borrow::Cow<'_, str>| {
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "wantedCollections" => collections.push(v.into_owned()),
            "wantedDids" => dids.push(v.into_owned()),
            "cursor" => first(&mut cursor, v),
            "maxMessageSizeBytes" => first(&mut max_size, v),
            "requireHello" => first(&mut hello, v),
            "compress" => first(&mut compress, v),
            _ => {}
        }
    }
    let zstd =
        compress.as_deref() == Some("true") || socket_encoding.is_some_and(|e| e.contains("zstd"));
    let cursor = match cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(Cursor::from_value(
            c.parse::<i64>()
                .map_err(|_| ParamError::Cursor(c.to_string()))?,
        )),
    };
    Ok(Request {
        filters: Filters::new(
            &collections,
            &dids,
            max_size.as_deref().map(lenient_size).unwrap_or(0),
        )?,
        cursor,
        require_hello: hello.as_deref() == Some("true"),
        zstd,
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
    let raw: RawMessage = serde_json::from_slice(text).map_err(ParamError::Message)?;
    if raw.kind != "options_update" {
        return Ok(ClientMessage::Unknown(raw.kind));
    }
    let o = raw.payload.ok_or(ParamError::NoPayload)?;
    // As in Jetstream v1: negative means no limit.
    let max = o
        .max_size
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
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
        let r = parse_query("", None).expect("empty");
        assert_eq!(r.filters.subjects(), ["bsky.>"]);
        assert!(r.cursor.is_none() && !r.require_hello);
    }

    #[test]
    fn prefixes_cover_what_is_under_them() {
        let r = parse_query(
            "wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.feed.*\
             &wantedCollections=app.bsky.*&wantedCollections=chat.bsky.actor.declaration\
             &wantedCollections=app.bsky.feed.post",
            None,
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
            None,
        )
        .expect("valid");
        assert_eq!(r.cursor, Some(Cursor::Time(1725911162329308)));
        assert!(r.require_hello && !r.zstd);
        assert_eq!(r.filters.max_message_bytes, 1000);
        assert!(r.filters.wants_did("did:plc:abc") && !r.filters.wants_did("did:plc:x"));
        assert!(r.filters.collections.is_none());
    }

    #[test]
    fn cursors_below_10_15_are_sequences() {
        let c = |q: &str| parse_query(q, None).expect(q).cursor;
        assert_eq!(c("cursor=1"), Some(Cursor::Seq(1)));
        assert_eq!(
            c("cursor=999999999999999"),
            Some(Cursor::Seq(999_999_999_999_999))
        );
        assert_eq!(
            c("cursor=1000000000000000"),
            Some(Cursor::Time(TIME_CURSOR_FROM))
        );
        assert_eq!(c("cursor=0"), Some(Cursor::Seq(0)));
        assert_eq!(c("cursor=-5"), Some(Cursor::Seq(0)));
        assert_eq!(c("cursor="), None);
        assert_eq!(c(""), None);
    }

    #[test]
    fn lenient_where_jetstream_v1_is() {
        let r = |q: &str| parse_query(q, None).expect(q);
        // A negative or unparsable size is no limit; the first of a repeated value wins.
        for q in [
            "maxMessageSizeBytes=-1",
            "maxMessageSizeBytes=big",
            "maxMessageSizeBytes=",
        ] {
            assert_eq!(r(q).filters.max_message_bytes, 0, "{q}");
        }
        assert_eq!(
            r("maxMessageSizeBytes=10&maxMessageSizeBytes=20")
                .filters
                .max_message_bytes,
            10
        );
        assert_eq!(r("cursor=5&cursor=x").cursor, Some(Cursor::Seq(5)));
        // Only the exact `true` turns a flag on.
        assert!(r("requireHello=true").require_hello);
        for q in [
            "requireHello=1",
            "requireHello=True",
            "requireHello=perhaps",
        ] {
            assert!(!r(q).require_hello, "{q}");
        }
        assert!(r("compress=true").zstd && !r("compress=1").zstd);
        // zstd through the header, as Jetstream's Go client asks.
        let h = parse_query("", Some("zstd")).expect("header");
        assert!(h.zstd);
        assert!(!parse_query("", Some("gzip")).expect("other").zstd);
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
            ("cursor=1.5", "invalid cursor"),
        ] {
            let e = parse_query(q, None).expect_err(q).to_string();
            assert!(e.contains(want), "{q}: {e}");
        }
        let dids: Vec<String> = (0..10_001).map(|i| format!("did:plc:{i}")).collect();
        assert!(matches!(
            Filters::new(Vec::<String>::new(), &dids, 0),
            Err(ParamError::TooManyDids(10_001))
        ));
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
            br#"{"type":"options_update","payload":{"maxMessageSizeBytes":"x"}}"#,
        ] {
            assert!(parse_client_message(bad).is_err());
        }
        // Negative: no limit, as in Jetstream v1.
        let m = parse_client_message(
            br#"{"type":"options_update","payload":{"maxMessageSizeBytes":-1}}"#,
        )
        .expect("v");
        assert_eq!(m, ClientMessage::OptionsUpdate(Filters::default()));
    }
}
