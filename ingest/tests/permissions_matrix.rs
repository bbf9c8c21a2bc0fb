//! Users × operations, against a real nats-server started from the shipped
//! `deploy/nats-server.conf` (users and permissions from `deploy/accounts.conf`).
//!
//! The expected cells are not written here: the test reads the table of `deploy/README.md`
//! ("Users, permissions, secrets"), performs every row as every user, and checks each cell:
//! `yes` the request succeeds; `no` it is refused and account BSKY is unchanged; `own` (the
//! gateway, in its own account) it succeeds on the gateway's mirror and account BSKY is
//! unchanged. "Unchanged" is a fingerprint of the stream, the four consumers (`charts`,
//! `feedgen`, the operator's `replay`, the archiver's `archive`) and the cursor, read by their
//! owners before and after the cell.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use async_nats::jetstream::{self, consumer};
use async_nats::{Client, Event, HeaderMap};
use common::*;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const USERS_IN_TABLE: [&str; 7] = [
    "ingest", "charts", "feedgen", "operator", "archive", "gateway", "sys",
];
/// The durables of account BSKY, each with the user that owns it.
const DURABLES: [(&str, &str); 4] = [
    ("charts", "charts"),
    ("feedgen", "feedgen"),
    ("operator", "replay"),
    ("archive", "archive"),
];
/// Messages in the fixture stream: enough for every pull and ack of the matrix.
const MESSAGES: usize = 40;
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// One row of the README's table.
struct Row {
    operation: String,
    subject: String,
    cells: HashMap<String, String>,
}

fn table() -> Vec<Row> {
    let path = testkit::workspace_root().join("deploy/README.md");
    let text = std::fs::read_to_string(&path).expect("deploy/README.md");
    let start = text
        .find("<!-- permissions-matrix")
        .expect("the permissions table's marker in deploy/README.md");
    let mut lines = text[start..].lines().skip(1);
    let header: Vec<String> = split_row(lines.next().expect("header"));
    assert_eq!(&header[..2], ["operation", "subject"], "{header:?}");
    assert_eq!(header[2..], USERS_IN_TABLE, "the table's user columns");
    lines.next(); // |---|
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cols = split_row(l);
            assert_eq!(cols.len(), header.len(), "{l}");
            Row {
                operation: cols[0].clone(),
                subject: cols[1].trim_matches('`').to_string(),
                cells: header[2..]
                    .iter()
                    .cloned()
                    .zip(cols[2..].iter().cloned())
                    .collect(),
            }
        })
        .collect()
}

fn split_row(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// A connected user and the server's errors for it (permission violations).
struct User {
    client: Client,
    events: UnboundedReceiver<Event>,
}

impl User {
    async fn connect(url: &str, name: &'static str) -> User {
        let (client, events) = connect_as(url, name).await;
        User { client, events }
    }

    fn forget_events(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// A request; `Err` with the reason when it is refused in any way. The reply is read
    /// from a subscription of its own, not the client's request muxer: a pulled message
    /// arrives on the reply subject but carries the stream's subject.
    async fn request(
        &mut self,
        subject: &str,
        headers: Option<HeaderMap>,
        body: &str,
    ) -> Result<async_nats::Message, String> {
        use futures_util::StreamExt;
        self.forget_events();
        let inbox = self.client.new_inbox();
        let mut replies = self.client.subscribe(inbox.clone()).await.expect("sub");
        let body = body.to_string().into();
        let sent = match headers {
            Some(h) => {
                self.client
                    .publish_with_reply_and_headers(subject.to_string(), inbox, h, body)
                    .await
            }
            None => {
                self.client
                    .publish_with_reply(subject.to_string(), inbox, body)
                    .await
            }
        };
        sent.expect("sent");
        let denied = violation(&mut self.events, subject);
        let msg = tokio::select! {
            m = tokio::time::timeout(REPLY_TIMEOUT, replies.next()) => match m {
                Ok(Some(m)) => m,
                Ok(None) => return Err("subscription closed".into()),
                Err(_) => return Err("no reply".into()),
            },
            why = denied => return Err(why),
        };
        if let Some(status) = msg.status {
            if status != async_nats::StatusCode::OK {
                return Err(format!("status {status} {:?}", msg.description));
            }
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&msg.payload) {
            if let Some(e) = v.get("error") {
                return Err(format!("error answer: {e}"));
            }
        }
        Ok(msg)
    }

    /// A publish without a reply; `Err` when the server refuses it.
    async fn publish(&mut self, subject: &str) -> Result<(), String> {
        self.forget_events();
        self.client
            .publish(subject.to_string(), "x".into())
            .await
            .expect("sent");
        self.client.flush().await.expect("flush");
        settled(&mut self.events, subject).await
    }

    /// A subscription; `Err` when the server refuses it.
    async fn subscribe(&mut self, subject: &str) -> Result<(), String> {
        self.forget_events();
        let sub = self
            .client
            .subscribe(subject.to_string())
            .await
            .expect("sent");
        self.client.flush().await.expect("flush");
        let r = settled(&mut self.events, subject).await;
        drop(sub);
        r
    }
}

/// Waits for a permissions violation naming `subject` (forever: the caller races it).
async fn violation(events: &mut UnboundedReceiver<Event>, subject: &str) -> String {
    loop {
        match events.recv().await {
            Some(Event::ServerError(e)) => {
                let text = e.to_string();
                if text.to_lowercase().contains("permissions violation") && text.contains(subject) {
                    return text;
                }
            }
            Some(_) => {}
            None => std::future::pending::<()>().await,
        }
    }
}

/// After a flush: the server's refusal arrives before its PONG, and the client hands it on
/// at once; a short wait covers the hand-over.
async fn settled(events: &mut UnboundedReceiver<Event>, subject: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_millis(150), violation(events, subject)).await {
        Ok(why) => Err(why),
        Err(_) => Ok(()),
    }
}

fn consumer_body(name: &str, filter: &str) -> String {
    serde_json::json!({
        "stream_name": "BSKY",
        "config": {
            "name": name,
            "durable_name": name,
            "deliver_policy": "all",
            "ack_policy": "explicit",
            "filter_subjects": [filter],
        }
    })
    .to_string()
}

fn durable(name: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        name: Some(name.into()),
        durable_name: Some(name.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        filter_subjects: vec!["bsky.>".into()],
        ..Default::default()
    }
}

/// Everything of account BSKY the matrix could change, read by the owners.
struct Fixture {
    users: HashMap<&'static str, User>,
}

impl Fixture {
    fn js(&self, user: &str) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(REPLY_TIMEOUT)
            .build(self.users[user].client.clone())
    }

    /// Creates what is missing: the stream with its messages, the cursor, the durables, the
    /// gateway's mirror; redefines the durables as they were.
    async fn ensure(&self) {
        let ingest = self.js("ingest");
        let stream = ingest
            .get_or_create_stream(ingest::stream::stream_config(&Default::default()))
            .await
            .expect("ingest creates BSKY");
        let have = stream.cached_info().state.messages as usize;
        for i in have..MESSAGES {
            ingest
                .publish("bsky.app.bsky.feed.post", format!("{{\"n\":{i}}}").into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        let kv = match ingest.get_key_value("BSKY_INGEST").await {
            Ok(kv) => kv,
            Err(_) => ingest
                .create_key_value(jetstream::kv::Config {
                    bucket: "BSKY_INGEST".into(),
                    ..Default::default()
                })
                .await
                .expect("ingest creates BSKY_INGEST"),
        };
        if kv.get("cursor.BSKY").await.expect("cursor").is_none() {
            kv.put("cursor.BSKY", "{\"seq\":1}".into())
                .await
                .expect("cursor");
        }
        for (owner, name) in DURABLES {
            let js = self.js(owner);
            let stream = js.get_stream("BSKY").await.expect("stream info");
            stream
                .create_consumer(durable(name))
                .await
                .unwrap_or_else(|e| panic!("{owner} creates {name}: {e}"));
        }
        // The mirror as the gateway makes it (gateway::mirror::config with the defaults of
        // [stream.mirror]); consumers/gateway/tests/own_account.rs runs the gateway itself.
        let mirror = jetstream::stream::Config {
            name: "BSKY".into(),
            mirror: Some(jetstream::stream::Source {
                name: "BSKY".into(),
                external: Some(jetstream::stream::External {
                    api_prefix: "$JS.BSKY.API".into(),
                    delivery_prefix: Some("deliver.gateway".into()),
                }),
                ..Default::default()
            }),
            max_bytes: 1 << 30,
            allow_direct: true,
            ..Default::default()
        };
        self.js("gateway")
            .get_or_create_stream(mirror)
            .await
            .expect("the gateway creates its mirror");
    }

    /// The state of account BSKY, as text.
    async fn fingerprint(&self) -> String {
        let mut out = String::new();
        let ingest = self.js("ingest");
        match ingest.get_stream("BSKY").await {
            Ok(mut s) => {
                let i = s.info().await.expect("stream info");
                out += &format!(
                    "stream subjects={:?} max_bytes={} messages={} first={} last={}\n",
                    i.config.subjects,
                    i.config.max_bytes,
                    i.state.messages,
                    i.state.first_sequence,
                    i.state.last_sequence
                );
            }
            Err(e) => out += &format!("stream: {e}\n"),
        }
        for (owner, name) in DURABLES {
            let js = self.js(owner);
            let stream = js.get_stream("BSKY").await;
            let info = match stream {
                Ok(s) => s.consumer_info(name).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            out += &match info {
                Ok(c) => format!(
                    "{name}: filters={:?} {:?} delivered={} ack_floor={} ack_pending={} pending={}\n",
                    c.config.filter_subjects,
                    c.config.filter_subject,
                    c.delivered.stream_sequence,
                    c.ack_floor.stream_sequence,
                    c.num_ack_pending,
                    c.num_pending
                ),
                Err(e) => format!("{name}: {e}\n"),
            };
        }
        match ingest.get_key_value("BSKY_INGEST").await {
            Ok(kv) => match kv.entry("cursor.BSKY").await {
                Ok(Some(e)) => {
                    out += &format!(
                        "cursor: rev {} {:?} {:?}\n",
                        e.revision, e.operation, e.value
                    )
                }
                other => out += &format!("cursor: {other:?}\n"),
            },
            Err(e) => out += &format!("cursor bucket: {e}\n"),
        }
        out
    }

    /// The gateway's consumers that a cell may have made on its mirror, removed, so that
    /// one cell does not prepare the next.
    async fn clean_gateway(&self) {
        let js = self.js("gateway");
        if let Ok(s) = js.get_stream("BSKY").await {
            for name in ["charts", "replay", "archive", "gateway_1"] {
                let _ = s.delete_consumer(name).await;
            }
        }
    }

    /// An ack subject of a message delivered to `durable` (pulled by its owner) and not yet
    /// acked.
    async fn ack_subject(&self, owner: &str, durable: &str) -> String {
        let js = self.js(owner);
        let c: consumer::PullConsumer = js
            .get_stream("BSKY")
            .await
            .expect("stream")
            .get_consumer(durable)
            .await
            .unwrap_or_else(|e| panic!("{owner} binds {durable}: {e}"));
        let mut batch = c.fetch().max_messages(1).messages().await.expect("fetch");
        use futures_util::StreamExt;
        let m = batch
            .next()
            .await
            .unwrap_or_else(|| panic!("a message for {durable}"))
            .expect("message");
        m.reply.clone().expect("an ack subject").to_string()
    }
}

/// Performs `row` as `user`: the subject used, and whether it succeeded.
async fn perform(
    f: &mut Fixture,
    row: &Row,
    user: &'static str,
    ack: Option<String>,
) -> (String, Result<(), String>) {
    let redefine = consumer_body("charts", "bsky.nothing.matches");
    let mut kv_delete = HeaderMap::new();
    kv_delete.insert("KV-Operation", "DEL");
    let stream_config =
        serde_json::to_string(&ingest::stream::stream_config(&Default::default())).expect("json");
    let (subject, headers, body): (String, Option<HeaderMap>, String) = match row.operation.as_str()
    {
        "publish an event" => (row.subject.clone(), None, "{}".into()),
        "stream create" | "stream update" => (row.subject.clone(), None, stream_config),
        "message get" | "direct get by sequence" => {
            (row.subject.clone(), None, "{\"seq\":1}".into())
        }
        // Not 1, which the get rows read (ingest may delete: `archive restore`'s gaps).
        "message delete" => (row.subject.clone(), None, "{\"seq\":2}".into()),
        // issue 18's own request: a name in the body, none in the subject
        "redefine charts' durable, unnamed subject" => (
            row.subject.clone(),
            None,
            serde_json::json!({
                "stream_name": "BSKY",
                "config": { "name": "charts", "filter_subjects": ["nothing.matches"] }
            })
            .to_string(),
        ),
        "redefine charts' durable"
        | "redefine charts' durable, durable subject"
        | "redefine charts' durable, gateway's import" => (row.subject.clone(), None, redefine),
        "pull from charts' durable"
        | "pull from feedgen's durable"
        | "pull from the archiver's durable" => (
            row.subject.clone(),
            None,
            "{\"batch\":1,\"no_wait\":true}".into(),
        ),
        "ack on charts' durable" | "ack on the archiver's durable" => {
            (ack.expect("an ack subject"), None, "+ACK".into())
        }
        "create the operator's replay" => {
            (row.subject.clone(), None, consumer_body("replay", "bsky.>"))
        }
        "create or redefine the archiver's durable" => (
            row.subject.clone(),
            None,
            consumer_body("archive", "bsky.>"),
        ),
        "create a gateway consumer" => (
            row.subject.clone(),
            None,
            consumer_body("gateway_1", "bsky.>"),
        ),
        "KV delete of the cursor" => (row.subject.clone(), Some(kv_delete), String::new()),
        "publish into charts' inbox" | "end a fast-ingest batch" => {
            let u = f.users.get_mut(user).expect("user");
            return (row.subject.clone(), u.publish(&row.subject).await);
        }
        op if op.starts_with("subscribe to") => {
            let subject = row.subject.replace("<user>", user);
            let u = f.users.get_mut(user).expect("user");
            return (subject.clone(), u.subscribe(&subject).await);
        }
        _ => (row.subject.clone(), None, String::new()),
    };
    let u = f.users.get_mut(user).expect("user");
    let r = u.request(&subject, headers, &body).await.map(|_| ());
    (subject, r)
}

/// Every cell of the README's table holds against the shipped configuration, among them the
/// seven holes of issue 18: pulling from and redefining another's durable (any subject form),
/// deleting the operator's consumer, the shared `_INBOX.>`, `sys` purging an account, and the
/// operator's `consumer info` of a service's durable; and the archiver's durable, which only
/// the archiver's user may pull from, ack, redefine or delete (the operator no longer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cell_of_the_readme_table_holds() {
    let rows = table();
    assert!(rows.len() >= 30, "{} rows", rows.len());
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    let nats = testkit::NatsServer::start_with_config(conf, &server_env())
        .expect("deploy/nats-server.conf");
    let mut users = HashMap::new();
    for name in USERS_IN_TABLE {
        users.insert(name, User::connect(&nats.url(), name).await);
    }
    let mut f = Fixture { users };
    f.ensure().await;
    // The server fills the gateway's mirror by itself, through the account imports.
    let mirror = f.js("gateway");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stream_count(&mirror, "BSKY").await < MESSAGES as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mirror stays empty"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut before = f.fingerprint().await;
    let mut wrong = Vec::new();
    for row in &rows {
        for user in USERS_IN_TABLE {
            let want = row.cells[user].as_str();
            assert!(
                matches!(want, "yes" | "no" | "own"),
                "{}: cell {user} = {want}",
                row.operation
            );
            let acked = match row.operation.as_str() {
                "ack on charts' durable" => Some(("charts", "charts")),
                "ack on the archiver's durable" => Some(("archive", "archive")),
                _ => None,
            };
            let ack = match acked {
                Some((owner, durable)) => {
                    let subject = f.ack_subject(owner, durable).await;
                    before = f.fingerprint().await;
                    Some(subject)
                }
                None => None,
            };
            let (subject, got) = perform(&mut f, row, user, ack).await;
            let expected_subject = row.subject.replace("<user>", user);
            assert!(
                contract::subject::matches(&expected_subject, &subject),
                "{}: the test used {subject}, the table says {expected_subject}",
                row.operation
            );
            if user == "gateway" {
                f.clean_gateway().await;
            }
            let after = f.fingerprint().await;
            let ok = match (want, &got) {
                ("yes", Ok(())) => true,
                ("own", Ok(())) | ("no", Err(_)) => {
                    if after != before {
                        wrong.push(format!(
                            "{} as {user}: account BSKY changed\n  before {before}  after {after}",
                            row.operation
                        ));
                    }
                    true
                }
                _ => false,
            };
            if !ok {
                wrong.push(format!(
                    "{} ({subject}) as {user}: the table says {want}, the server: {got:?}",
                    row.operation
                ));
            }
            if want == "yes" {
                f.ensure().await;
                before = f.fingerprint().await;
            } else {
                before = after;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
