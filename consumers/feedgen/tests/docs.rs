//! The feed configurations the documentation shows load and pass the start-up checks:
//! `deploy/feedgen.toml` (what `deploy/run.sh` serves) and the example in
//! `consumers/README.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use feedgen::config::{Config, Flags, Media};
use std::path::Path;

fn load(path: &Path) -> Config {
    let flags = Flags {
        common: kit::config::ConsumerFlags {
            config: Some(path.to_path_buf()),
            ..Default::default()
        },
    };
    Config::load(&flags)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .0
}

#[test]
fn deploy_feedgen_toml_loads() {
    let c = load(&testkit::workspace_root().join("deploy/feedgen.toml"));
    assert!(c.feeds.len() >= 3);
    assert!(c.feeds.iter().any(|f| !f.words.is_empty()));
    assert!(c.feeds.iter().any(|f| !f.regex.is_empty()));
}

#[test]
fn the_readme_example_loads() {
    let readme =
        std::fs::read_to_string(testkit::workspace_root().join("consumers/README.md")).unwrap();
    let section = readme.split("## feedgen").nth(1).unwrap();
    let toml = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.toml");
    std::fs::write(&path, toml).unwrap();
    let c = load(&path);
    let f = &c.feeds[0];
    assert_eq!(f.name, "rust");
    assert_eq!(f.has, [Media::Link, Media::Image, Media::Video]);
    assert_eq!(
        (f.replies, f.max_days, f.max_posts),
        (false, Some(7), Some(10_000))
    );
    assert_eq!(
        c.feed_uri(f),
        "at://did:plc:abc123/app.bsky.feed.generator/rust"
    );
    assert_eq!(c.service_did(), "did:web:feeds.example.com");
}
