//! Starting against a stream that changed while the ingestor was down, against a server
//! that cannot serve, or with credentials: never a hang, never a silent loss, never a
//! secret in the output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream::stream;
use common::*;
use staging::replay::{ReplayOptions, Speed};
use std::time::{Duration, Instant};

/// What happens to the stream while the ingestor is down.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Loss {
    /// `nats stream purge`.
    Purge,
    /// Everything expires by `max_age`.
    Expire,
    /// Deleted and created again (by someone else).
    Recreate,
    /// Deleted; the ingestor creates it again.
    Delete,
}

async fn restart_after(loss: Loss, seed: u64, path: PublishPath) {
    let nats = testkit::NatsServer::start().expect("nats-server");
    let capture = synth(20_000, seed);
    // Paced (~5 s for the whole capture), so events still arrive after the restart.
    let relay = relay(
        capture.clone(),
        ReplayOptions {
            speed: Speed::Factor(4.0),
            ..Default::default()
        },
    )
    .await;
    let mut env = path.with(&[
        ("BSKY_INGEST_CURSOR__SAVE_INTERVAL", "2s"),
        ("BSKY_INGEST_LEASE__TTL", "1s"),
    ]);
    if loss == Loss::Expire {
        env.push(("BSKY_INGEST_STREAM__MAX_AGE", "2s"));
    }
    let name = path.name(&format!("{loss:?}").to_lowercase());
    let mut first = Ingest::spawn(&relay_base(&relay), &nats.url(), &name, &env, &[]);
    first
        .wait_metric("bsky_ingest_acked_total", 4000.0, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // a cursor is stored by then
    first.kill(); // kill -9: the stored cursor is behind the stream's end

    let js = jetstream(&nats.url()).await;
    let stored_before = stream_count(&js, "BSKY").await;
    assert!(stored_before >= 4000, "{stored_before}");
    match loss {
        Loss::Purge => {
            js.get_stream("BSKY").await.unwrap().purge().await.unwrap();
        }
        Loss::Expire => {
            let t = Instant::now();
            while stream_count(&js, "BSKY").await > 0 {
                assert!(t.elapsed() < Duration::from_secs(10), "messages expire");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Loss::Recreate => {
            js.delete_stream("BSKY").await.unwrap();
            let cfg = ingest::stream::stream_config(&ingest::config::Config::default().stream);
            js.create_stream(cfg).await.unwrap();
        }
        Loss::Delete => {
            js.delete_stream("BSKY").await.unwrap();
        }
    }
    assert_eq!(stream_count(&js, "BSKY").await, 0);

    let second = Ingest::spawn(
        &relay_base(&relay),
        &nats.url(),
        &format!("{name}-restart"),
        &env,
        &[],
    );
    // Reading the relay within 5 s (lease takeover included), and storing new events.
    second
        .wait_metric(
            "bsky_ingest_events_total{kind=\"commit\"}",
            1.0,
            Duration::from_secs(5),
        )
        .await;
    second
        .wait_metric("bsky_ingest_acked_total", 100.0, Duration::from_secs(10))
        .await;
    let gap = second
        .metric("bsky_ingest_stream_gap_messages_total")
        .await
        .unwrap_or(-1.0);
    let log = second.log_text();
    match loss {
        Loss::Purge | Loss::Expire => {
            assert_eq!(gap, 0.0, "{log}");
            assert!(log.contains("holds no message"), "{log}");
        }
        Loss::Recreate | Loss::Delete => {
            assert!(gap > 0.0, "{log}");
            assert!(
                log.contains("created again") && log.contains("stream gap"),
                "{log}"
            );
        }
    }
    // Whatever the stream holds now, it holds once.
    let stored = read_all(&js, "BSKY").await;
    let mut ids = std::collections::HashSet::new();
    for m in &stored {
        assert!(ids.insert(m.msg_id.clone()), "stored twice: {}", m.msg_id);
    }
    path.assert_taken(&js, &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_purge() {
    restart_after(Loss::Purge, 21, PublishPath::Batched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_purge_per_message() {
    restart_after(Loss::Purge, 21, PublishPath::PerMessage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_max_age_expired_everything() {
    restart_after(Loss::Expire, 22, PublishPath::Batched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_the_stream_was_recreated() {
    restart_after(Loss::Recreate, 23, PublishPath::Batched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_the_stream_was_deleted() {
    restart_after(Loss::Delete, 24, PublishPath::Batched).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_default_max_payload_is_refused() {
    let nats = testkit::NatsServer::start_with_conf("max_payload: 1MB\n").expect("nats-server");
    let relay = relay(corpus(), Default::default()).await;
    let mut ingest = Ingest::spawn(&relay_base(&relay), &nats.url(), "small-payload", &[], &[]);
    let status = ingest.exit_within(Duration::from_secs(10));
    assert!(!status.success());
    let log = ingest.log_text();
    assert!(log.contains("max_payload") && log.contains("8MB"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_stream_keeps_what_the_operator_set() {
    let nats = testkit::NatsServer::start().expect("nats-server");
    let js = jetstream(&nats.url()).await;
    js.create_stream(stream::Config {
        name: "BSKY".into(),
        subjects: vec!["bsky.>".into(), "extra.>".into()],
        metadata: [("owner".to_string(), "ops".to_string())].into(),
        max_messages_per_subject: 100_000,
        deny_purge: true,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let relay = relay(corpus(), Default::default()).await;
    let ingest = Ingest::spawn(&relay_base(&relay), &nats.url(), "existing", &[], &[]);
    wait_count(&js, "BSKY", 152, Duration::from_secs(30), &ingest).await;
    let info = js
        .get_stream("BSKY")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    let c = info.config;
    // The operator's extra subject stays; the batched path adds the one it ends batches on.
    assert_eq!(
        c.subjects,
        vec![
            "bsky.>".to_string(),
            "extra.>".to_string(),
            contract::subject::batch_end("BSKY")
        ]
    );
    assert_eq!(c.metadata.get("owner").map(String::as_str), Some("ops"));
    assert_eq!(c.max_messages_per_subject, 100_000);
    assert!(c.deny_purge);
    // The settings the ingestor manages follow the configuration.
    assert_eq!(c.max_age, Duration::from_secs(72 * 3600));
    assert!(c.allow_direct);
    assert_eq!(c.compression, Some(stream::Compression::S2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_cannot_serve_is_refused() {
    for (name, config, says) in [
        (
            "memory",
            stream::Config {
                name: "BSKY".into(),
                subjects: vec!["bsky.>".into()],
                storage: stream::StorageType::Memory,
                ..Default::default()
            },
            "file storage",
        ),
        (
            "narrow",
            stream::Config {
                name: "BSKY".into(),
                subjects: vec!["bsky.app.>".into()],
                ..Default::default()
            },
            "do not include bsky.>",
        ),
    ] {
        let nats = testkit::NatsServer::start().expect("nats-server");
        let js = jetstream(&nats.url()).await;
        js.create_stream(config).await.unwrap();
        let relay = relay(corpus(), Default::default()).await;
        let mut ingest = Ingest::spawn(&relay_base(&relay), &nats.url(), name, &[], &[]);
        let status = ingest.exit_within(Duration::from_secs(10));
        assert!(!status.success());
        let log = ingest.log_text();
        assert!(
            log.contains(says) && log.contains("nats stream edit"),
            "{log}"
        );
        assert_eq!(stream_count(&js, "BSKY").await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_urls_work_and_never_show() {
    const PASSWORD: &str = "s3cr3t-pw-9";
    const WRONG: &str = "wr0ng-pw-3";
    const RELAY_PASSWORD: &str = "relay-pw-7";
    let conf = format!(
        "max_payload: 8MB\nauthorization {{ users = [ {{ user: alice, password: \"{PASSWORD}\" }} ] }}\n"
    );
    let nats = testkit::NatsServer::start_with_conf(&conf).expect("nats-server");
    let relay = relay(corpus(), Default::default()).await;
    let relay_url = format!("ws://bob:{RELAY_PASSWORD}@{}", relay.addr());
    let with_url = format!("nats://alice:{PASSWORD}@127.0.0.1:{}", nats.port());
    let client = async_nats::ConnectOptions::new()
        .user_and_password("alice".into(), PASSWORD.into())
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);

    // Credentials in the URL, as other NATS clients take them.
    let mut ingest = Ingest::spawn(&relay_url, &with_url, "creds-url", &[], &[]);
    wait_count(&js, "BSKY", 152, Duration::from_secs(30), &ingest).await;
    let status = ingest.child.terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = ingest.log_text();
    assert!(log.contains("resuming"));

    // The same user through nats.user / nats.password (environment).
    let mut by_key = Ingest::spawn(
        &relay_url,
        &nats.url(),
        "creds-keys",
        &[
            ("BSKY_INGEST_NATS__USER", "alice"),
            ("BSKY_INGEST_NATS__PASSWORD", PASSWORD),
        ],
        &[],
    );
    by_key
        .wait_metric(
            "bsky_ingest_cursor_seq",
            (CORPUS_FIRST_SEQ + 149) as f64,
            Duration::from_secs(30),
        )
        .await;
    let status = by_key.child.terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(stream_count(&js, "BSKY").await, 152);

    // A refused password: a clear error, and no password either.
    let wrong = format!("nats://alice:{WRONG}@127.0.0.1:{}", nats.port());
    let mut refused = Ingest::spawn(&relay_url, &wrong, "creds-wrong", &[], &[]);
    let status = refused.exit_within(Duration::from_secs(15));
    assert!(!status.success());
    let refused_log = refused.log_text();
    assert!(
        refused_log.to_lowercase().contains("authorization"),
        "{refused_log}"
    );

    for text in [log, by_key.log_text(), refused_log] {
        for secret in [PASSWORD, WRONG, RELAY_PASSWORD] {
            assert!(!text.contains(secret), "{secret} in the output:\n{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_stops_the_ingestor_with_the_reason() {
    // The server may keep 3 MB in all: JetStream refuses publishes beyond, for good.
    let nats = testkit::NatsServer::start_with_conf(
        "max_payload: 8MB\njetstream { max_file_store: 3MB }\n",
    )
    .expect("nats-server");
    let relay = relay(synth(5_000, 36), Default::default()).await;
    let mut ingest = Ingest::spawn(&relay_base(&relay), &nats.url(), "full-store", &[], &[]);
    let status = ingest.exit_within(Duration::from_secs(30));
    assert!(!status.success());
    let log = ingest.log_text();
    assert!(
        log.contains("JetStream refuses to store more") && log.contains("raise the limit"),
        "{log}"
    );
}
