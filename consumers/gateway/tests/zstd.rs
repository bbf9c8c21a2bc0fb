//! Jetstream v1's zstd, checked by an independent decoder: the `zstd` command-line tool
//! (Debian's package, installed by `deploy/setup-node-clients.sh`) decompresses every binary
//! message with the dictionary to exactly the text message an uncompressed client gets, for
//! both ways of asking (`compress=true`, `Socket-Encoding: zstd`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{corpus_pipeline, Gateway, PATIENCE};
use futures_util::StreamExt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Whether the `zstd` tool runs; without it the test skips, and fails under `CI=true`.
fn zstd_tool() -> bool {
    let ok = Command::new("zstd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the zstd tool is required under CI (bash deploy/setup-node-clients.sh)"
        );
        eprintln!("SKIPPED: no zstd tool (run bash deploy/setup-node-clients.sh)");
    }
    ok
}

/// `frame` decompressed by `zstd -D <dictionary> -d`.
fn decompress(frame: &[u8]) -> Vec<u8> {
    let dict = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zstd/legacy_subscribe.zdict");
    let mut child = Command::new("zstd")
        .arg("-D")
        .arg(dict)
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(frame).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "zstd -d failed: {:?}", out.status);
    out.stdout
}

/// Reads `n` messages (text or binary) as bytes.
async fn read(gw: &Gateway, query: &str, header: Option<&str>, n: usize) -> Vec<Message> {
    let mut req = format!("{}/subscribe?{query}", gw.url())
        .into_client_request()
        .unwrap();
    if let Some(h) = header {
        req.headers_mut()
            .insert("Socket-Encoding", h.parse().unwrap());
    }
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert!(resp.headers().get("sec-websocket-extensions").is_none());
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("messages")
            .unwrap()
            .unwrap();
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_frames_decompress_with_the_dictionary_to_the_plain_messages() {
    if !zstd_tool() {
        return;
    }
    let pipeline = corpus_pipeline().await;
    let gw = Gateway::start(common::config(&pipeline.nats.url())).await;
    let plain: Vec<Vec<u8>> = read(&gw, "cursor=1", None, 152)
        .await
        .into_iter()
        .map(|m| match m {
            Message::Text(t) => t.as_bytes().to_vec(),
            other => panic!("not text: {other:?}"),
        })
        .collect();
    for (query, header) in [("cursor=1&compress=true", None), ("cursor=1", Some("zstd"))] {
        let frames = read(&gw, query, header, 152).await;
        let mut wire = 0;
        for (i, m) in frames.into_iter().enumerate() {
            let Message::Binary(frame) = m else {
                panic!("{query} {header:?}: message {i} is not binary: {m:?}")
            };
            wire += frame.len();
            assert!(
                decompress(&frame) == plain[i],
                "{query} {header:?}: message {i} differs"
            );
        }
        let total: usize = plain.iter().map(Vec::len).sum();
        assert!(
            wire * 2 < total,
            "{query} {header:?}: {wire} of {total} bytes"
        );
    }
    gw.stop().await;
    pipeline.stop().await.unwrap();
}
