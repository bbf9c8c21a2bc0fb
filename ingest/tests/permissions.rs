//! Least privilege, against a real nats-server running the shipped `deploy/nats-server.conf`
//! (users and permissions from `deploy/accounts.conf`): the ingestor's credentials work end
//! to end, a consumer's credentials cannot publish into `bsky.>`, and wrong or missing
//! credentials are refused. Every user × operation cell of the README's table is checked by
//! `permissions_matrix.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream;
use common::*;
use staging::replay::ReplayOptions;
use std::time::Duration;

fn server() -> testkit::NatsServer {
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    testkit::NatsServer::start_with_config(conf, &server_env()).expect("deploy/nats-server.conf")
}

/// The ingestor with its own user and a password file stores the whole corpus; the charts
/// user reads all of it through its durable consumer; the charts user's publish into
/// `bsky.app.bsky.feed.post` is refused with a permissions violation and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_credentials_work_end_to_end_and_consumer_credentials_cannot_publish() {
    let nats = server();
    let secrets = tempfile::tempdir().expect("tmp");
    let pw = password_file(secrets.path(), "ingest");
    let capture = corpus();
    let expected = expected_messages(&capture);
    let relay = relay(capture, ReplayOptions::default()).await;
    let ingest = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        "permissions-ingest",
        &[
            ("BSKY_INGEST_NATS__USER", "ingest"),
            ("BSKY_INGEST_NATS__PASSWORD_FILE", pw.to_str().unwrap()),
        ],
        &[],
    );

    let (operator, _) = connect_as(&nats.url(), "operator").await;
    let ops = jetstream::new(operator);
    wait_count(
        &ops,
        "BSKY",
        expected.len() as u64,
        Duration::from_secs(60),
        &ingest,
    )
    .await;
    let kv = ops
        .get_key_value("BSKY_INGEST")
        .await
        .expect("cursor bucket");
    assert!(
        kv.get("cursor.BSKY").await.expect("cursor").is_some(),
        "the ingestor stored its cursor"
    );

    let (charts, mut charts_events) = connect_as(&nats.url(), "charts").await;
    let charts_js = jetstream::new(charts.clone());
    let stored = read_durable(&charts_js, "BSKY", "charts").await;
    assert_exact_stored(&stored, &expected);

    // A consumer's credentials cannot publish into the stream's subjects.
    charts
        .publish("bsky.app.bsky.feed.post", "{\"forged\":true}".into())
        .await
        .expect("the client sends it; the server refuses it");
    charts.flush().await.expect("flush");
    let refused = permission_error(&mut charts_events, Duration::from_secs(5))
        .await
        .expect("a permissions violation for the publish");
    assert!(refused.contains("bsky.app.bsky.feed.post"), "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stream_count(&ops, "BSKY").await,
        expected.len() as u64,
        "the forged message was not stored"
    );
    drop(ingest);
}

/// A wrong password, and no credentials at all, are refused; the ingestor says so and exits
/// without printing the password it was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_credentials_are_refused() {
    let nats = server();
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        "ingest".into(),
        "pNotThePassword9".into(),
    )
    .connect(nats.url())
    .await;
    let err = wrong.expect_err("a wrong password must be refused");
    assert_eq!(
        err.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    let anonymous = async_nats::connect(nats.url()).await;
    assert!(anonymous.is_err(), "no credentials must be refused");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["--relay", "ws://127.0.0.1:9", "--nats", &nats.url()])
        .env("BSKY_INGEST_METRICS__LISTEN", "")
        .env("BSKY_INGEST_NATS__USER", "ingest")
        .env("BSKY_INGEST_NATS__PASSWORD", "pNotThePassword9")
        .output()
        .expect("run ingest");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("authorization"),
        "the refusal is named: {stderr}"
    );
    assert!(
        !stderr.contains("pNotThePassword9"),
        "the password must not be printed: {stderr}"
    );
}
