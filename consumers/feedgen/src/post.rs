//! A post record (`app.bsky.feed.post`) as the feeds see it: the fields they test, read
//! with serde from the commit's raw record, borrowing the text where it has no escapes.
//!
//! Only what the feeds use is read; any other field is skipped unparsed. A record whose
//! fields have the wrong shape (no `text` or `createdAt` string, `langs` not a list of
//! strings…) is an error, and its message poison: terminated and counted, never retried.

use crate::config::Media;
use serde::Deserialize;
use std::borrow::Cow;

/// The fields of a post record that the feeds read.
#[derive(Debug, Deserialize)]
pub struct Post<'a> {
    /// The text.
    #[serde(borrow)]
    pub text: Cow<'a, str>,
    /// When the author's client says the post was made (RFC 3339); not trusted for
    /// ordering beyond the event time ([`sort_at`]).
    #[serde(rename = "createdAt", borrow)]
    pub created_at: Cow<'a, str>,
    /// Declared languages (BCP 47 tags).
    #[serde(borrow, default)]
    pub langs: Option<Vec<Cow<'a, str>>>,
    /// Rich-text annotations; links are features of type `app.bsky.richtext.facet#link`.
    #[serde(borrow, default)]
    pub facets: Option<Vec<Facet<'a>>>,
    /// The embed: images, a video, a link card, a quoted record (with media).
    #[serde(borrow, default)]
    pub embed: Option<Embed<'a>>,
    /// Present on replies (its contents are not read).
    #[serde(default)]
    pub reply: Option<serde::de::IgnoredAny>,
}

/// A rich-text facet.
#[derive(Debug, Deserialize)]
pub struct Facet<'a> {
    /// Its features.
    #[serde(borrow, default)]
    pub features: Vec<Typed<'a>>,
}

/// Any union member: only its `$type` is read.
#[derive(Debug, Deserialize)]
pub struct Typed<'a> {
    /// The member's type.
    #[serde(rename = "$type", borrow, default)]
    pub kind: Cow<'a, str>,
}

/// A post's embed.
#[derive(Debug, Deserialize)]
pub struct Embed<'a> {
    /// `app.bsky.embed.images`, `.video`, `.external`, `.record`, `.recordWithMedia`.
    #[serde(rename = "$type", borrow, default)]
    pub kind: Cow<'a, str>,
    /// The media of a `recordWithMedia` embed.
    #[serde(borrow, default)]
    pub media: Option<Typed<'a>>,
}

const LINK_FACET: &str = "app.bsky.richtext.facet#link";

/// The media bit of an embed type, if it is one of the three.
fn embed_media(kind: &str) -> u8 {
    match kind {
        "app.bsky.embed.images" => Media::Image.bit(),
        "app.bsky.embed.video" => Media::Video.bit(),
        "app.bsky.embed.external" => Media::Link.bit(),
        _ => 0,
    }
}

impl Post<'_> {
    /// What the post carries: a set of [`Media::bit`]s.
    pub fn media(&self) -> u8 {
        let mut bits = 0;
        if let Some(e) = &self.embed {
            bits |= embed_media(&e.kind);
            if e.kind == "app.bsky.embed.recordWithMedia" {
                bits |= e.media.as_ref().map_or(0, |m| embed_media(&m.kind));
            }
        }
        let link_facet = self
            .facets
            .iter()
            .flatten()
            .flat_map(|f| &f.features)
            .any(|t| t.kind == LINK_FACET);
        if link_facet {
            bits |= Media::Link.bit();
        }
        bits
    }

    /// Whether the post is a reply.
    pub fn is_reply(&self) -> bool {
        self.reply.is_some()
    }

    /// Its declared languages.
    pub fn langs(&self) -> &[Cow<'_, str>] {
        self.langs.as_deref().unwrap_or(&[])
    }
}

/// Where a post sorts in a feed (µs): its `createdAt`, but never later than the event's own
/// time (a client clock ahead, or a post dated in the future, cannot pin it to the top);
/// the event time when `createdAt` cannot be read.
pub fn sort_at(created_at: &str, event_time_us: i64) -> i64 {
    firehose::parse_rfc3339_micros(created_at).map_or(event_time_us, |c| c.min(event_time_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Post<'_>, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn media_replies_langs() {
        let p = parse(
            r#"{"$type":"app.bsky.feed.post","text":"hi","createdAt":"2026-07-04T14:38:06.240Z",
               "langs":["en"],"facets":[{"index":{"byteStart":0,"byteEnd":2},
               "features":[{"$type":"app.bsky.richtext.facet#link","uri":"https://x"}]}],
               "embed":{"$type":"app.bsky.embed.recordWithMedia","record":{},
               "media":{"$type":"app.bsky.embed.video","video":{}}},
               "reply":{"root":{},"parent":{}}}"#,
        )
        .expect("post");
        assert_eq!(p.media(), Media::Link.bit() | Media::Video.bit());
        assert!(p.is_reply());
        assert_eq!(p.langs(), ["en"]);
        let p = parse(
            r#"{"text":"a","createdAt":"x","embed":{"$type":"app.bsky.embed.images","images":[]}}"#,
        )
        .expect("post");
        assert_eq!(
            (p.media(), p.is_reply(), p.langs().len()),
            (Media::Image.bit(), false, 0)
        );
        let p = parse(
            r#"{"text":"","createdAt":"x","embed":{"$type":"app.bsky.embed.record"},"langs":null}"#,
        )
        .expect("post");
        assert_eq!(p.media(), 0);
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in [
            r#"{"createdAt":"2026-07-04T00:00:00Z"}"#,
            r#"{"text":"a"}"#,
            r#"{"text":7,"createdAt":"2026-07-04T00:00:00Z"}"#,
            r#"{"text":"a","createdAt":"2026-07-04T00:00:00Z","langs":"en"}"#,
            r#"{"text":"a","createdAt":"2026-07-04T00:00:00Z","facets":[{"features":[7]}]}"#,
            r#"[1,2]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sort_at_is_clamped_to_the_event_time() {
        let t = 1_783_175_888_090_631;
        assert_eq!(
            sort_at("2026-07-04T14:38:06.240Z", t),
            1_783_175_886_240_000
        );
        assert_eq!(sort_at("2099-01-01T00:00:00Z", t), t);
        assert_eq!(sort_at("yesterday", t), t);
    }
}
