//! Start in any order: every service is started before nats-server, which comes up 5 s
//! later with the shipped configuration (`deploy/nats-server.conf`, each service its own
//! user); every one of them waits for it and comes up without a restart. The services run
//! in this process through the same `run` functions their `main`s call (this crate is the
//! one that already depends on all of them). Once up, the stack's `/metrics` must hold every
//! metric that `deploy/monitoring/` (dashboard and alert rules) names.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(60);

async fn http_status(port: u16, path: &str) -> u16 {
    common::get(port, path).await.0
}

/// The `bsky_…` metric names that a shipped monitoring file names.
fn metrics_named_in(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(testkit::workspace_root().join(file)).expect(file);
    let mut names: Vec<String> = text
        .match_indices("bsky_")
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

async fn until<F: Future<Output = bool>>(what: &str, check: impl FnMut() -> F) {
    common::until(what, PATIENCE, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_started_before_nats_comes_up_without_a_restart() {
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    let mut nats = testkit::NatsServer::start_with_config(conf, &testkit::deploy::server_env())
        .expect("deploy config");
    nats.stop(); // the port and the store stay: nothing listens there now
    let url = nats.url();
    let dir = tempfile::tempdir().expect("tmp");
    let relay = staging::replay::spawn(
        Arc::new(staging::fixtures::corpus().expect("corpus")),
        Default::default(),
    )
    .await
    .expect("relay");

    let shutdown = CancellationToken::new();
    let mut stack = common::Stack::start(&relay, &url, None, dir.path(), &shutdown);
    let gateway_port = stack.start_gateway(&url, &shutdown);
    let common::Stack {
        tasks,
        ingest_port,
        charts_port,
        feedgen_port,
        ..
    } = stack;

    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, task) in &tasks {
        assert!(!task.is_finished(), "{name} gave up while NATS was down");
    }
    nats.restart().expect("nats-server comes up");

    let operator = common::connect(&url, "operator").await;
    let js = jetstream::new(operator);
    let stored = || async {
        match js.get_stream("BSKY").await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0) >= 152,
            Err(_) => false,
        }
    };
    until("ingest stores the corpus", stored).await;
    until("ingest serves /metrics", || async {
        http_status(ingest_port, "/metrics").await == 200
    })
    .await;
    for durable in ["charts", "feedgen"] {
        common::until_consumed(&js, durable, PATIENCE).await;
    }
    until("charts serves /metrics", || async {
        http_status(charts_port, "/metrics").await == 200
    })
    .await;
    until("feedgen serves /healthz", || async {
        http_status(feedgen_port, "/healthz").await == 200
    })
    .await;
    until("the gateway serves /healthz", || async {
        http_status(gateway_port, "/healthz").await == 200
    })
    .await;

    // Every metric the dashboard and the alert rules name is exported by this stack.
    let mut exported = String::new();
    for port in [ingest_port, charts_port, feedgen_port, gateway_port] {
        exported += &common::get(port, "/metrics").await.1;
    }
    for file in [
        "deploy/monitoring/alerts.yml",
        "deploy/monitoring/grafana-dashboard.json",
    ] {
        let names = metrics_named_in(file);
        assert!(names.len() >= 5, "{file}: {names:?}");
        for name in names {
            let present = exported.lines().any(|l| {
                l.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            });
            assert!(present, "{file} names {name}, which no service exports");
        }
    }

    shutdown.cancel();
    for (name, task) in tasks {
        task.await.expect("task").unwrap_or_else(|e| {
            panic!(
                "{name} stopped on an error: {}",
                service::telemetry::Chain(&*e)
            )
        });
    }
}
