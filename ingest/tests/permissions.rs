//! Least privilege, against a real nats-server running the shipped `deploy/nats-server.conf`
//! (users and permissions from `deploy/accounts.conf`): the ingestor's credentials work end
//! to end, a consumer's credentials cannot publish into `bsky.>` or touch another service's
//! consumer, and wrong or missing credentials are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream::{self, consumer};
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

/// Each service reaches only its own durable consumer: charts cannot create or delete the
/// feedgen consumer, the gateway cannot delete charts', nobody but the ingestor writes the
/// cursor bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_cannot_touch_each_others_consumers_or_the_cursor() {
    let nats = server();
    let (ingest, _) = connect_as(&nats.url(), "ingest").await;
    let ingest_js = jetstream::new(ingest);
    ingest_js
        .create_stream(ingest::stream::stream_config(&Default::default()))
        .await
        .expect("the ingestor creates BSKY");
    ingest_js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "BSKY_INGEST".into(),
            ..Default::default()
        })
        .await
        .expect("the ingestor creates BSKY_INGEST");

    let short = |client: async_nats::Client| {
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(1))
            .build(client)
    };
    let durable = |name: &str| consumer::pull::Config {
        durable_name: Some(name.to_string()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    };

    let (charts, _) = connect_as(&nats.url(), "charts").await;
    let charts_js = short(charts);
    let (feedgen, _) = connect_as(&nats.url(), "feedgen").await;
    let feedgen_js = short(feedgen);
    let (gateway, _) = connect_as(&nats.url(), "gateway").await;
    let gateway_js = short(gateway);

    let stream = charts_js
        .get_stream("BSKY")
        .await
        .expect("charts reads stream info");
    stream
        .create_consumer(durable("charts"))
        .await
        .expect("charts creates its own durable");
    assert!(
        stream.create_consumer(durable("feedgen")).await.is_err(),
        "charts must not create the feedgen consumer"
    );
    let feedgen_stream = feedgen_js.get_stream("BSKY").await.expect("stream info");
    feedgen_stream
        .create_consumer(durable("feedgen"))
        .await
        .expect("feedgen creates its own durable");
    assert!(
        stream.delete_consumer("feedgen").await.is_err(),
        "charts must not delete the feedgen consumer"
    );

    // The gateway makes ephemeral consumers, but cannot remove a service's durable.
    let gateway_stream = gateway_js.get_stream("BSKY").await.expect("stream info");
    gateway_stream
        .create_consumer(consumer::pull::Config::default())
        .await
        .expect("gateway creates an ephemeral consumer");
    assert!(
        gateway_stream.delete_consumer("charts").await.is_err(),
        "gateway must not delete the charts consumer"
    );
    let names = feedgen_stream
        .get_consumer::<consumer::pull::Config>("charts")
        .await;
    assert!(names.is_err(), "feedgen must not read the charts consumer");
    let still = stream
        .get_consumer::<consumer::pull::Config>("charts")
        .await
        .expect("charts still has its consumer");
    assert_eq!(still.cached_info().name, "charts");

    // The cursor bucket is the ingestor's alone.
    let kv = ingest_js.get_key_value("BSKY_INGEST").await.expect("kv");
    kv.put("cursor.BSKY", "{}".into())
        .await
        .expect("ingest writes");
    let (gateway2, _) = connect_as(&nats.url(), "gateway").await;
    let gw = short(gateway2);
    assert!(
        gw.publish("$KV.BSKY_INGEST.cursor.BSKY", "{}".into())
            .await
            .expect("sent")
            .await
            .is_err(),
        "gateway must not write the cursor"
    );
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
