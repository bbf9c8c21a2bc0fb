//! The relay-independent event id (subjects.md, "Event ids"), derived from a payload.

use serde::Deserialize;

/// The relay-independent id of an event payload (subjects.md, "Event ids"), or `None` when
/// the payload is not one of the contract's events.
pub fn event_id(payload: &[u8]) -> Option<String> {
    use std::borrow::Cow;
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow, default)]
        rev: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        collection: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        rkey: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        time: Option<Cow<'a, str>>,
        #[serde(default)]
        active: Option<bool>,
        #[serde(borrow, default)]
        status: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        did: Cow<'a, str>,
        #[serde(borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        commit: Option<Body<'a>>,
        #[serde(borrow, default)]
        identity: Option<Body<'a>>,
        #[serde(borrow, default)]
        account: Option<Body<'a>>,
        #[serde(borrow, default)]
        sync: Option<Body<'a>>,
    }
    let e: Envelope = serde_json::from_slice(payload).ok()?;
    let did = &e.did;
    Some(match (&*e.kind, e.commit, e.identity, e.account, e.sync) {
        ("commit", Some(c), ..) => format!("{did}/{}/{}@{}", c.collection?, c.rkey?, c.rev?),
        ("identity", _, Some(i), ..) => format!("identity:{did}@{}", i.time?),
        ("account", _, _, Some(a), _) => format!(
            "account:{did}@{}:{}:{}",
            a.time?,
            a.active.unwrap_or(true),
            a.status.as_deref().unwrap_or("")
        ),
        ("sync", .., Some(s)) => format!("sync:{did}@{}", s.rev.or(s.time)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_the_contract() {
        let id = |j: &str| event_id(j.as_bytes());
        assert_eq!(
            id(
                r#"{"did":"did:plc:a","time_us":1,"kind":"commit","commit":{"rev":"3k","operation":"create","collection":"app.bsky.feed.like","rkey":"3l","record":{}}}"#
            ),
            Some("did:plc:a/app.bsky.feed.like/3l@3k".into())
        );
        assert_eq!(
            id(
                r#"{"did":"did:plc:a","time_us":1,"kind":"identity","identity":{"did":"did:plc:a","seq":5,"time":"2026-07-04T14:38:07.877Z"}}"#
            ),
            Some("identity:did:plc:a@2026-07-04T14:38:07.877Z".into())
        );
        assert_eq!(
            id(
                r#"{"did":"did:plc:a","time_us":1,"kind":"account","account":{"active":false,"did":"did:plc:a","seq":5,"status":"takendown","time":"T"}}"#
            ),
            Some("account:did:plc:a@T:false:takendown".into())
        );
        assert_eq!(
            id(
                r#"{"did":"did:plc:a","time_us":1,"kind":"sync","sync":{"did":"did:plc:a","rev":"3m","seq":5,"time":"T"}}"#
            ),
            Some("sync:did:plc:a@3m".into())
        );
        assert_eq!(id(r#"{"did":"did:plc:a","kind":"other"}"#), None);
        assert_eq!(id("not json"), None);
    }
}
