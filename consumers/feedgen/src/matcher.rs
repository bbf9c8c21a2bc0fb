//! Which feeds a post belongs to: the feeds of the configuration compiled once at start,
//! then one pass per post for all of them.
//!
//! Per post: the cheap tests first (reply, author, languages, media) leave the candidate
//! feeds; only if one of those has text conditions is the text read, **once** for all:
//! lower-cased and cut into words (runs of letters and digits) looked up in one hash map
//! of every feed's words, and matched against one [`RegexSet`] of every feed's patterns.
//!
//! **Words** are case-insensitive and whole: `rust` matches "Rust!" and "#rust" but not
//! "rusty"; a phrase (`open source`) matches its words in a row, whatever separates them
//! ("Open-Source"). Scripts written without spaces (Japanese, Chinese, Thai) have no
//! word breaks to find: use `regex` for them.

use crate::config::Feed;
use crate::post::Post;
use regex::RegexSet;
use std::collections::{HashMap, HashSet};

/// The words of `lower` (already lower-cased): runs of letters and digits.
pub fn tokens(lower: &str) -> impl Iterator<Item = &str> {
    lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// One feed's conditions, compiled.
#[derive(Debug)]
struct Rule {
    replies: bool,
    /// Lower-cased language tags.
    langs: Vec<String>,
    /// Media bits, any of which is enough (0: no condition).
    has: u8,
    allow: Option<HashSet<String>>,
    deny: HashSet<String>,
    /// Whether the feed has `words` or `regex`.
    text: bool,
}

/// A configured phrase, found by its first word.
#[derive(Debug)]
struct Phrase {
    feed: usize,
    /// The words after the first.
    rest: Vec<String>,
}

/// Every feed's conditions, ready to test posts.
#[derive(Debug)]
pub struct Matcher {
    rules: Vec<Rule>,
    words: HashMap<String, Vec<Phrase>>,
    /// Feeds (bits) that have words.
    with_words: u64,
    regex: RegexSet,
    /// The feed of each pattern of `regex`.
    regex_feed: Vec<usize>,
    /// Feeds (bits) that have patterns.
    with_regex: u64,
}

/// The feed configuration does not compile (the configuration check reports it first).
#[derive(Debug, thiserror::Error)]
#[error("feed patterns: {0}")]
pub struct MatcherError(#[from] regex::Error);

impl Matcher {
    /// Compiles `feeds` (at most 64, checked by the configuration); bit `i` of a match is
    /// `feeds[i]`.
    pub fn new(feeds: &[Feed]) -> Result<Matcher, MatcherError> {
        let mut words: HashMap<String, Vec<Phrase>> = HashMap::new();
        let (mut with_words, mut with_regex) = (0u64, 0u64);
        let mut patterns = Vec::new();
        let mut regex_feed = Vec::new();
        let mut rules = Vec::with_capacity(feeds.len());
        for (i, f) in feeds.iter().enumerate() {
            for w in &f.words {
                let lower = w.to_lowercase();
                let mut t = tokens(&lower);
                if let Some(first) = t.next() {
                    let rest = t.map(str::to_string).collect();
                    words
                        .entry(first.to_string())
                        .or_default()
                        .push(Phrase { feed: i, rest });
                    with_words |= 1 << i;
                }
            }
            for r in &f.regex {
                patterns.push(r.as_str());
                regex_feed.push(i);
                with_regex |= 1 << i;
            }
            rules.push(Rule {
                replies: f.replies,
                langs: f.langs.iter().map(|l| l.to_ascii_lowercase()).collect(),
                has: f.has.iter().fold(0, |b, m| b | m.bit()),
                allow: (!f.authors_allow.is_empty())
                    .then(|| f.authors_allow.iter().cloned().collect()),
                deny: f.authors_deny.iter().cloned().collect(),
                text: !f.words.is_empty() || !f.regex.is_empty(),
            });
        }
        Ok(Matcher {
            rules,
            words,
            with_words,
            regex: RegexSet::new(patterns)?,
            regex_feed,
            with_regex,
        })
    }

    /// The feeds `post` by `author` belongs to, as a bit set (bit `i`: feed `i`).
    pub fn matches(&self, author: &str, post: &Post<'_>) -> u64 {
        let (reply, media, langs) = (post.is_reply(), post.media(), post.langs());
        let mut candidates = 0u64;
        let mut matched = 0u64;
        for (i, r) in self.rules.iter().enumerate() {
            let ok = (r.replies || !reply)
                && (r.has == 0 || r.has & media != 0)
                && r.allow.as_ref().is_none_or(|a| a.contains(author))
                && !r.deny.contains(author)
                && (r.langs.is_empty() || langs.iter().any(|l| lang_in(l, &r.langs)));
            if ok {
                if r.text {
                    candidates |= 1 << i;
                } else {
                    matched |= 1 << i;
                }
            }
        }
        if candidates == 0 {
            return matched;
        }
        if candidates & self.with_words != 0 {
            matched |= self.word_matches(&post.text) & candidates;
        }
        if candidates & self.with_regex & !matched != 0 {
            for p in self.regex.matches(&post.text).iter() {
                matched |= (1 << self.regex_feed[p]) & candidates;
            }
        }
        matched
    }

    /// The feeds (bits) one of whose words or phrases `text` holds.
    fn word_matches(&self, text: &str) -> u64 {
        let lower = text.to_lowercase();
        let words: Vec<&str> = tokens(&lower).collect();
        let mut found = 0u64;
        for (k, w) in words.iter().enumerate() {
            let Some(phrases) = self.words.get(*w) else {
                continue;
            };
            for p in phrases {
                let tail = &words[k + 1..];
                if tail.len() >= p.rest.len() && p.rest.iter().zip(tail).all(|(a, b)| a == b) {
                    found |= 1 << p.feed;
                }
            }
        }
        found
    }
}

/// Whether a post's language tag is one of `wanted` (lower-case), or a subtag of one.
fn lang_in(tag: &str, wanted: &[String]) -> bool {
    let t = tag.as_bytes();
    wanted.iter().any(|w| {
        let w = w.as_bytes();
        t.len() >= w.len()
            && t[..w.len()].eq_ignore_ascii_case(w)
            && (t.len() == w.len() || t[w.len()] == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Media;

    fn feed(name: &str) -> Feed {
        Feed {
            name: name.into(),
            ..Feed::default()
        }
    }

    fn post(json: &str) -> Post<'_> {
        serde_json::from_str(json).expect("post")
    }

    #[test]
    fn words_phrases_regex_and_the_cheap_tests() {
        let feeds = vec![
            Feed {
                words: vec!["Rust".into(), "open source".into()],
                ..feed("rust")
            },
            Feed {
                regex: vec!["(?i)gatos?|猫".into()],
                langs: vec!["ja".into(), "pt".into()],
                ..feed("cats")
            },
            Feed {
                has: vec![Media::Image, Media::Video],
                replies: false,
                ..feed("media")
            },
            Feed {
                authors_deny: vec!["did:plc:bad".into()],
                authors_allow: vec!["did:plc:a".into(), "did:plc:bad".into()],
                ..feed("people")
            },
        ];
        let m = Matcher::new(&feeds).expect("compile");
        let at = |author: &str, json: &str| m.matches(author, &post(json));
        let text = |t: &str| format!(r#"{{"text":"{t}","createdAt":"x"}}"#);
        assert_eq!(at("did:plc:x", &text("I love #Rust!")), 0b0001);
        assert_eq!(at("did:plc:x", &text("rusty nails")), 0);
        assert_eq!(at("did:plc:x", &text("Open-Source rocks")), 0b0001);
        assert_eq!(at("did:plc:x", &text("open the source")), 0);
        assert_eq!(at("did:plc:a", &text("open")), 0b1000);
        assert_eq!(at("did:plc:bad", &text("open")), 0);
        let cats = r#"{"text":"猫が好き","createdAt":"x","langs":["ja-JP"]}"#;
        assert_eq!(at("did:plc:x", cats), 0b0010);
        let cats_en = r#"{"text":"猫が好き","createdAt":"x","langs":["en"]}"#;
        assert_eq!(at("did:plc:x", cats_en), 0);
        let img = r#"{"text":"rust","createdAt":"x","embed":{"$type":"app.bsky.embed.images"}}"#;
        assert_eq!(at("did:plc:x", img), 0b0101);
        let reply =
            r#"{"text":"x","createdAt":"x","reply":{},"embed":{"$type":"app.bsky.embed.video"}}"#;
        assert_eq!(at("did:plc:x", reply), 0);
        let link = r#"{"text":"x","createdAt":"x","embed":{"$type":"app.bsky.embed.external"}}"#;
        assert_eq!(at("did:plc:x", link), 0);
    }

    #[test]
    fn language_subtags() {
        let want = vec!["en".to_string(), "pt-br".to_string()];
        assert!(lang_in("en", &want) && lang_in("EN-us", &want) && lang_in("pt-BR", &want));
        assert!(!lang_in("eng", &want) && !lang_in("pt", &want) && !lang_in("é", &want));
    }
}
