//! The 150 real frames through the real ingestor, then feedgen: each feed holds exactly the
//! posts this test picks on its own from production Jetstream's `expected_v1.jsonl`,
//! newest first; and the service's other endpoints answer as the spec says.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{feed, get, posts};
use feedgen::config::{Feed, Media};
use std::collections::HashSet;
use std::sync::Arc;

/// A corpus post: its at-uri, sort time, and the fields the feeds test.
struct Post {
    uri: String,
    sort_at: i64,
    words: Vec<String>,
    langs: Vec<String>,
    link: bool,
    reply: bool,
}

/// The corpus's posts, by the test's own reading of the expected events.
fn corpus_posts() -> Vec<Post> {
    let mut out: Vec<Post> = Vec::new();
    let mut deleted = HashSet::new();
    for e in staging::fixtures::expected().unwrap() {
        let c = &e["commit"];
        if e["kind"] != "commit" || c["collection"] != "app.bsky.feed.post" {
            continue;
        }
        let uri = format!(
            "at://{}/app.bsky.feed.post/{}",
            e["did"].as_str().unwrap(),
            c["rkey"].as_str().unwrap()
        );
        if c["operation"] == "delete" {
            deleted.insert(uri);
            continue;
        }
        let r = &c["record"];
        let time_us = e["time_us"].as_i64().unwrap();
        let created = firehose::parse_rfc3339_micros(r["createdAt"].as_str().unwrap()).unwrap();
        let text = r["text"].as_str().unwrap().to_lowercase();
        let facets = r["facets"].as_array().cloned().unwrap_or_default();
        let link_facet = facets.iter().any(|f| {
            f["features"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["$type"] == "app.bsky.richtext.facet#link")
        });
        out.push(Post {
            uri,
            sort_at: created.min(time_us),
            words: text
                .split(|ch: char| !ch.is_alphanumeric())
                .map(str::to_string)
                .collect(),
            langs: r["langs"]
                .as_array()
                .map(|a| a.iter().map(|l| l.as_str().unwrap().to_string()).collect())
                .unwrap_or_default(),
            link: link_facet || r["embed"]["$type"] == "app.bsky.embed.external",
            reply: r.get("reply").is_some(),
        });
    }
    out.retain(|p| !deleted.contains(&p.uri));
    out.sort_by_key(|p| std::cmp::Reverse(p.sort_at));
    out
}

fn newest_first(all: &[Post], keep: impl Fn(&Post) -> bool) -> Vec<String> {
    all.iter()
        .filter(|p| keep(p))
        .map(|p| p.uri.clone())
        .collect()
}

#[tokio::test]
async fn corpus_feeds_and_endpoints() {
    let all = corpus_posts();
    assert_eq!(all.len(), 17, "the corpus has 17 post creates");
    let government = newest_first(&all, |p| p.words.iter().any(|w| w == "government"));
    assert!(government.len() >= 2, "the word is in several posts");
    assert!(government.len() < all.len());
    let links_no_replies = newest_first(&all, |p| p.link && !p.reply);
    let cjk = newest_first(&all, |p| p.langs.iter().any(|l| l == "ja" || l == "ko"));
    assert!(!links_no_replies.is_empty() && !cjk.is_empty());

    let capture = Arc::new(staging::fixtures::corpus().unwrap());
    let pipeline = ingest::testing::Pipeline::start(capture, Default::default())
        .await
        .unwrap();
    pipeline.wait_stored(152, common::WAIT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let feeds = vec![
        Feed {
            words: vec!["Government".into()],
            ..feed("government")
        },
        Feed {
            has: vec![Media::Link],
            replies: false,
            ..feed("links")
        },
        Feed {
            langs: vec!["ja".into(), "ko".into()],
            ..feed("cjk")
        },
    ];
    let mut cfg = common::config(
        &pipeline.nats.url(),
        &dir.path().join("feedgen.db"),
        "feedgen",
        feeds,
    );
    cfg.service.hostname = "feeds.example.com".into();
    cfg.service.publisher_did = Some("did:plc:publisher".into());
    let fg = common::InProcess::start(cfg, kit::Start::Resume).await;
    common::wait_indexed(&pipeline.nats.url(), fg.addr).await;

    // Each feed: exactly its posts, newest first.
    for (name, want) in [
        ("government", &government),
        ("links", &links_no_replies),
        ("cjk", &cjk),
    ] {
        let (code, body) = fg.skeleton(name, "").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(&posts(&body), want, "feed {name}");
        assert!(body.get("cursor").is_none(), "one page holds it: {body}");
    }
    // A page of one, then the rest from its cursor.
    let (_, first) = fg.skeleton("government", "&limit=1").await;
    assert_eq!(posts(&first), government[..1]);
    let cursor = first["cursor"].as_str().unwrap();
    let (_, rest) = fg
        .skeleton("government", &format!("&cursor={cursor}"))
        .await;
    assert_eq!(posts(&rest), government[1..]);

    // Bad parameters: 400 with an XRPC error body.
    for extra in [
        "&limit=0",
        "&limit=101",
        "&limit=abc",
        "&cursor=not-a-cursor",
        "&cursor=AAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let (code, body) = fg.skeleton("government", extra).await;
        assert_eq!(code, 400, "{extra}: {body}");
        assert_eq!(body["error"], "InvalidRequest", "{extra}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (code, body) = get(fg.addr, "/xrpc/app.bsky.feed.getFeedSkeleton")
        .await
        .unwrap();
    assert_eq!(code, 400, "{body}");
    // A feed this service does not serve.
    let unknown = "at%3A%2F%2Fdid%3Aplc%3Apublisher%2Fapp.bsky.feed.generator%2Fnope";
    let (code, body) = get(
        fg.addr,
        &format!("/xrpc/app.bsky.feed.getFeedSkeleton?feed={unknown}"),
    )
    .await
    .unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, body["error"].as_str()), (400, Some("UnknownFeed")));

    // describeFeedGenerator lists the configured feeds; did.json names the endpoint.
    let (code, body) = get(fg.addr, "/xrpc/app.bsky.feed.describeFeedGenerator")
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200);
    assert_eq!(body["did"], "did:web:feeds.example.com");
    let uris: Vec<&str> = body["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        [
            "at://did:plc:publisher/app.bsky.feed.generator/government",
            "at://did:plc:publisher/app.bsky.feed.generator/links",
            "at://did:plc:publisher/app.bsky.feed.generator/cjk",
        ]
    );
    let (code, body) = get(fg.addr, "/.well-known/did.json").await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200);
    assert_eq!(doc["id"], "did:web:feeds.example.com");
    assert_eq!(doc["service"][0]["id"], "#bsky_fg");
    assert_eq!(doc["service"][0]["type"], "BskyFeedGenerator");
    assert_eq!(
        doc["service"][0]["serviceEndpoint"],
        "https://feeds.example.com"
    );
    let (code, metrics) = get(fg.addr, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            "bsky_feedgen_requests_total{endpoint=\"get_feed_skeleton\",status=\"unknown_feed\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("bsky_feedgen_post_ops_total{outcome=\"indexed\"}"));
    fg.stop().await;
    pipeline.stop().await.unwrap();
}
