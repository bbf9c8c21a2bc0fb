//! The consumer loop against a real nats-server: every message applied once and in order,
//! redeliveries skipped, poison terminated and counted, transient failures retried in
//! order, losses to the stream's retention detected, rebuilds that count nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use async_nats::jetstream::{self, consumer};
use kit::metrics::{Metrics, Outcome, OutcomeLabel, ReasonLabel};
use kit::rusqlite::{self, Transaction};
use kit::{HandleError, Handler, Msg, Progress, Rebuild, Start};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// Records every application of a message: `applied(seq, time_us, n, ord)`.
#[derive(Default, Clone)]
struct Recorder {
    /// Fail this sequence (transiently) this many more times.
    fail: Arc<Mutex<HashMap<u64, u32>>>,
    /// Sleep this long per message.
    slow: Duration,
}

impl Handler for Recorder {
    const POISON_REASONS: &'static [&'static str] = &["test_poison"];

    fn init(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS applied (seq INTEGER PRIMARY KEY, time_us INTEGER,
             n INTEGER NOT NULL, ord INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, next INTEGER);",
        )
    }

    fn rebuild(&mut self, tx: &Transaction<'_>, from: Rebuild) -> rusqlite::Result<()> {
        match from {
            Rebuild::All => tx.execute("DELETE FROM applied", []),
            Rebuild::Since(t) => tx.execute("DELETE FROM applied WHERE time_us >= ?1", [t]),
        }
        .map(drop)
    }

    fn handle(&mut self, tx: &Transaction<'_>, msg: &Msg<'_>) -> Result<(), HandleError> {
        if let Some(n) = self.fail.lock().unwrap().get_mut(&msg.seq) {
            if *n > 0 {
                *n -= 1;
                return Err(HandleError::Transient("injected failure".into()));
            }
        }
        if msg
            .event
            .commit()
            .is_some_and(|c| c.collection == "app.bsky.test.poison")
        {
            return Err(HandleError::Poison("test_poison"));
        }
        std::thread::sleep(self.slow);
        tx.execute(
            "INSERT INTO applied VALUES (?1, ?2, 1, (SELECT COUNT(*) FROM applied))
             ON CONFLICT(seq) DO UPDATE SET n = n + 1",
            (msg.seq as i64, msg.event.time_us),
        )?;
        Ok(())
    }
}

/// (seq, n) of every applied row, in application order.
fn applied(db: &Path) -> Vec<(u64, i64)> {
    let conn = kit::state::open_reader(db).unwrap();
    let mut st = conn
        .prepare("SELECT seq, n FROM applied ORDER BY ord")
        .unwrap();
    st.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), kit::RunError>>,
    progress: watch::Receiver<Progress>,
    metrics: Metrics,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
    fn outcome(&self, o: Outcome) -> u64 {
        self.metrics
            .messages
            .get_or_create(&OutcomeLabel {
                outcome: o.as_str(),
            })
            .get()
    }
    fn poison(&self, reason: &'static str) -> u64 {
        self.metrics
            .poison
            .get_or_create(&ReasonLabel { reason })
            .get()
    }
}

fn options(db: &Path, tune: impl FnOnce(&mut kit::Options)) -> kit::Options {
    let mut o = kit::Options::new("test", &["bsky.>"]);
    o.state.path = db.to_path_buf();
    o.state.synchronous = kit::config::Synchronous::Normal;
    o.consumer.status_interval = Duration::from_millis(100);
    o.consumer.retry_min = Duration::from_millis(100);
    o.consumer.retry_max = Duration::from_millis(400);
    tune(&mut o);
    o
}

async fn start(url: &str, opts: kit::Options, handler: Recorder) -> Running {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry, Recorder::POISON_REASONS);
    let (tx, progress) = watch::channel(Progress::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(kit::run(
        js,
        opts,
        handler,
        metrics.clone(),
        tx,
        shutdown.clone(),
    ));
    Running {
        shutdown,
        task,
        progress,
        metrics,
    }
}

/// A stream like the ingestor's, optionally holding at most `max_messages`.
async fn own_stream(nats: &testkit::NatsServer, max_messages: i64) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut cfg = ingest::stream::stream_config(&ingest::config::Config::default().stream);
    cfg.max_messages = max_messages;
    js.create_stream(cfg).await.unwrap();
    js
}

async fn publish(js: &jetstream::Context, range: std::ops::Range<u64>, collection: &str) {
    for i in range {
        let body = kit::testing::commit_json(
            "did:plc:test",
            1_783_175_887_000_000 + i as i64,
            collection,
            "create",
            &format!("k{i}"),
        );
        js.publish(format!("bsky.{collection}"), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_message_once_in_order_and_redeliveries_skipped() {
    let capture = Arc::new(staging::fixtures::corpus().unwrap());
    let pipeline = ingest::testing::Pipeline::start(capture, Default::default())
        .await
        .unwrap();
    pipeline.wait_stored(152, WAIT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let url = pipeline.nats.url();

    let mut r = start(
        &url,
        options(&db, |o| o.consumer.batch = 16),
        Recorder::default(),
    )
    .await;
    let p = kit::testing::wait_caught_up(&mut r.progress, 152, WAIT)
        .await
        .unwrap();
    assert_eq!(p.seq, 152);
    r.stop().await;
    let rows = applied(&db);
    assert_eq!(
        rows,
        (1..=152).map(|s| (s, 1)).collect::<Vec<_>>(),
        "once each, in order"
    );

    // The server forgets where the consumer was (a restored server, say): kit binds it as
    // it is, and every redelivery at or below the stored position is skipped.
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let stream = js.get_stream("BSKY").await.unwrap();
    stream.delete_consumer("test").await.unwrap();
    let cfg = options(&db, |o| o.consumer.batch = 16).consumer;
    let mut want = kit::consumer::desired(&cfg, 1);
    want.deliver_policy = consumer::DeliverPolicy::All;
    stream.create_consumer(want).await.unwrap();
    let mut r = start(
        &url,
        options(&db, |o| o.consumer.batch = 16),
        Recorder::default(),
    )
    .await;
    kit::testing::wait_caught_up(&mut r.progress, 152, WAIT)
        .await
        .unwrap();
    assert_eq!(r.outcome(Outcome::Redelivered), 152);
    assert_eq!(r.outcome(Outcome::Processed), 0);
    r.stop().await;
    assert_eq!(applied(&db), rows, "nothing applied twice");
    pipeline.stop().await.unwrap();
}

#[tokio::test]
async fn poison_is_terminated_and_counted_by_reason() {
    let nats = testkit::NatsServer::start().unwrap();
    let js = own_stream(&nats, -1).await;
    publish(&js, 0..2, "app.bsky.feed.like").await; // 1, 2
    js.publish("bsky.app.bsky.feed.post", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap(); // 3
    js.publish(
        "bsky.app.bsky.feed.post",
        r#"{"did":"did:plc:x","time_us":1,"kind":"weird"}"#.into(),
    )
    .await
    .unwrap()
    .await
    .unwrap(); // 4
    publish(&js, 4..5, "app.bsky.test.poison").await; // 5
    publish(&js, 5..7, "app.bsky.feed.like").await; // 6, 7
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut r = start(&nats.url(), options(&db, |_| {}), Recorder::default()).await;
    let p = kit::testing::wait_caught_up(&mut r.progress, 7, WAIT)
        .await
        .unwrap();
    assert_eq!(p.seq, 7);
    assert_eq!(
        (
            r.poison("bad_payload"),
            r.poison("unknown_kind"),
            r.poison("test_poison")
        ),
        (1, 1, 1)
    );
    assert_eq!(applied(&db), vec![(1, 1), (2, 1), (6, 1), (7, 1)]);
    // Terminated messages are never delivered again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = js
        .get_stream("BSKY")
        .await
        .unwrap()
        .consumer_info("test")
        .await
        .unwrap();
    assert_eq!((info.num_ack_pending, info.num_redelivered), (0, 0));
    r.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_in_order() {
    let nats = testkit::NatsServer::start().unwrap();
    let js = own_stream(&nats, -1).await;
    publish(&js, 0..300, "app.bsky.feed.like").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let handler = Recorder::default();
    handler
        .fail
        .lock()
        .unwrap()
        .extend([(50, 2), (120, 1), (121, 3)]);
    let mut r = start(
        &nats.url(),
        options(&db, |o| o.consumer.batch = 20),
        handler.clone(),
    )
    .await;
    kit::testing::wait_caught_up(&mut r.progress, 300, WAIT)
        .await
        .unwrap();
    assert_eq!(r.metrics.transient_failures.get(), 6);
    assert!(r.outcome(Outcome::Nak) >= 6, "{}", r.outcome(Outcome::Nak));
    r.stop().await;
    assert_eq!(
        applied(&db),
        (1..=300).map(|s| (s, 1)).collect::<Vec<_>>(),
        "once each, in order"
    );
}

/// The server, the stream, the directory and the database of a stopped consumer.
type Stopped = (
    testkit::NatsServer,
    jetstream::Context,
    tempfile::TempDir,
    std::path::PathBuf,
);

/// A consumer that applied 50 messages (publishes 0..50, sequences 1..=50) and stopped, on
/// a stream keeping at most `max_messages`: the server, the stream, the directory and the
/// database.
async fn stopped_after_50(max_messages: i64) -> Stopped {
    let nats = testkit::NatsServer::start().unwrap();
    let js = own_stream(&nats, max_messages).await;
    publish(&js, 0..50, "app.bsky.feed.like").await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut r = start(&nats.url(), options(&db, |_| {}), Recorder::default()).await;
    kit::testing::wait_caught_up(&mut r.progress, 50, WAIT)
        .await
        .unwrap();
    r.stop().await;
    (nats, js, dir, db)
}

/// [`stopped_after_50`], then 300 more arrive while it is stopped.
async fn stopped_while_300_arrive(max_messages: i64) -> Stopped {
    let (nats, js, dir, db) = stopped_after_50(max_messages).await;
    publish(&js, 50..350, "app.bsky.feed.like").await;
    (nats, js, dir, db)
}

/// The stream's configuration and creation time, as the server reports them.
async fn stream_info(js: &jetstream::Context) -> jetstream::stream::Info {
    js.get_stream("BSKY")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_loss_to_retention_is_detected_at_start() {
    // Stopped while 300 more arrive; the stream keeps the last 100 (251..=350).
    let (nats, _js, _dir, db) = stopped_while_300_arrive(100).await;
    let mut r = start(&nats.url(), options(&db, |_| {}), Recorder::default()).await;
    let p = kit::testing::wait_caught_up(&mut r.progress, 350, WAIT)
        .await
        .unwrap();
    assert_eq!((p.lost, r.metrics.retention_lost.get()), (200, 200));
    r.stop().await;
    let rows = applied(&db);
    assert_eq!(rows.len(), 150);
    assert_eq!(rows[50].0, 251);
}

#[tokio::test]
async fn a_loss_to_retention_is_detected_while_running() {
    let nats = testkit::NatsServer::start().unwrap();
    let js = own_stream(&nats, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let slow = Recorder {
        slow: Duration::from_millis(3),
        ..Recorder::default()
    };
    let mut r = start(
        &nats.url(),
        options(&db, |o| {
            o.consumer.batch = 10;
            o.consumer.max_ack_pending = 20;
        }),
        slow,
    )
    .await;
    publish(&js, 0..2000, "app.bsky.feed.like").await;
    let p = kit::testing::wait_caught_up(&mut r.progress, 2000, WAIT)
        .await
        .unwrap();
    assert_eq!(r.metrics.retention_lost.get(), p.lost);
    let rewinds: u64 = kit::metrics::Rewind::ALL
        .iter()
        .map(|w| {
            r.metrics
                .rewinds
                .get_or_create(&ReasonLabel { reason: w.as_str() })
                .get()
        })
        .sum();
    let outcomes: Vec<u64> = Outcome::ALL.iter().map(|o| r.outcome(*o)).collect();
    r.stop().await;
    let rows = applied(&db);
    assert!(
        p.lost > 0,
        "a slow consumer of a rolling stream loses messages"
    );
    // Without a filter nothing is counted lost that was applied; while running the
    // count may fall short (see kit::status), never over.
    assert!(
        rows.len() as u64 + p.lost <= 2000,
        "applied {} + lost {} > 2000; rewinds {rewinds}, outcomes {outcomes:?}",
        rows.len(),
        p.lost
    );
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 == 1));
}

#[tokio::test]
async fn rebuild_from_time_counts_nothing_twice() {
    let (capture, report) = kit::testing::synth(3_000, 7, 1_783_175_887_000_000, 20.0).unwrap();
    let (t0, t1) = report.time_range.unwrap();
    let pipeline = ingest::testing::Pipeline::start(capture, Default::default())
        .await
        .unwrap();
    let url = pipeline.nats.url();
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let n = expect_settled(&js).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let mut r = start(&url, options(&db, |_| {}), Recorder::default()).await;
    kit::testing::wait_caught_up(&mut r.progress, n, WAIT)
        .await
        .unwrap();
    r.stop().await;
    let full = applied(&db);
    assert_eq!(full.len() as u64, n);

    for (t, margin) in [
        ((t0 + t1) / 2, Duration::from_secs(5)),
        (t0 + (t1 - t0) / 5, Duration::ZERO),
    ] {
        let mut r = start(
            &url,
            options(&db, |o| {
                o.start = Start::FromTime(t);
                o.consumer.seek_margin = margin;
            }),
            Recorder::default(),
        )
        .await;
        kit::testing::wait_caught_up(&mut r.progress, n, WAIT)
            .await
            .unwrap();
        assert!(r.outcome(Outcome::Kept) + r.outcome(Outcome::Processed) > 0);
        r.stop().await;
        let mut again = applied(&db);
        again.sort();
        assert_eq!(again, full, "from {t}: the same rows, each applied once");
    }

    // --from-seq 1 starts over.
    let mut r = start(
        &url,
        options(&db, |o| o.start = Start::FromSeq(1)),
        Recorder::default(),
    )
    .await;
    kit::testing::wait_caught_up(&mut r.progress, n, WAIT)
        .await
        .unwrap();
    r.stop().await;
    assert_eq!(applied(&db), full);
    pipeline.stop().await.unwrap();
}

/// Waits until the ingestor stopped adding to the stream; its last sequence.
async fn expect_settled(js: &jetstream::Context) -> u64 {
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = kit::testing::stream_last_seq(js, "BSKY").await.unwrap_or(0);
        if now > 0 && now == last {
            return now;
        }
        last = now;
    }
}

/// A filtered consumer (posts only, as feedgen) on a rolling stream: likes it skipped and
/// that the stream dropped afterwards are not losses (issue 18: feedgen counted them);
/// stopped past retention, it reports exactly the stream messages dropped unread.
#[tokio::test]
async fn skipped_then_dropped_is_no_loss_and_a_stopped_filtered_consumer_counts_exactly() {
    let nats = testkit::NatsServer::start().unwrap();
    let js = own_stream(&nats, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let posts_only = |o: &mut kit::Options| {
        o.consumer.subjects = vec!["bsky.app.bsky.feed.post".into()];
        o.consumer.status_interval = Duration::from_secs(3);
    };
    let mut r = start(&nats.url(), options(&db, posts_only), Recorder::default()).await;
    let applied_up_to = |n: usize| {
        let db = db.clone();
        async move {
            let t = std::time::Instant::now();
            while applied(&db).len() < n {
                assert!(t.elapsed() < WAIT, "{} of {n} applied", applied(&db).len());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Seqs 1..=200: a like, then a post; all passed before anything is dropped.
    for i in 0..100 {
        publish(&js, i..i + 1, "app.bsky.feed.like").await;
        publish(&js, i..i + 1, "app.bsky.feed.post").await;
    }
    applied_up_to(100).await;
    // Seqs 201..=300 drop 101..=200, likes included, which the consumer had skipped.
    publish(&js, 100..200, "app.bsky.feed.post").await;
    applied_up_to(200).await;
    let p = kit::testing::wait_caught_up(&mut r.progress, 300, WAIT)
        .await
        .unwrap();
    assert_eq!((p.lost, r.metrics.retention_lost.get()), (0, 0));
    r.stop().await;

    // Stopped at 300 while 150 posts arrive: the stream keeps 351..=450, so 301..=350 went
    // unread.
    publish(&js, 200..350, "app.bsky.feed.post").await;
    let mut r = start(&nats.url(), options(&db, posts_only), Recorder::default()).await;
    let p = kit::testing::wait_caught_up(&mut r.progress, 450, WAIT)
        .await
        .unwrap();
    assert_eq!((p.lost, r.metrics.retention_lost.get()), (50, 50));
    r.stop().await;
    assert_eq!(applied(&db).len(), 300);
}

/// An archive in memory (the archive crate's is tested in `consumers/archive`): every
/// message of the stream as it was, whose first `fail` reads fail as a store outage would.
struct Memory {
    kept: Vec<kit::history::Kept>,
    fail: std::sync::atomic::AtomicU32,
    reads: std::sync::atomic::AtomicU32,
}

struct MemoryReader(std::vec::IntoIter<kit::history::Kept>);

impl kit::history::Reader for MemoryReader {
    fn next(
        &mut self,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<Option<kit::history::Kept>, kit::handler::BoxError>,
    > {
        Box::pin(async move { Ok(self.0.next()) })
    }
}

impl kit::history::History for Memory {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn first(
        &self,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<Option<kit::history::Kept>, kit::handler::BoxError>,
    > {
        Box::pin(async move { Ok(self.kept.first().cloned()) })
    }
    fn read(
        &self,
        since: kit::history::Since,
    ) -> futures_util::future::BoxFuture<
        '_,
        Result<Box<dyn kit::history::Reader>, kit::handler::BoxError>,
    > {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            self.reads.fetch_add(1, SeqCst);
            if self
                .fail
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("the store is away".into());
            }
            let kit::history::Since::Seq(from) = since else {
                return Err("only sequences here".into());
            };
            let rest: Vec<_> = self
                .kept
                .iter()
                .filter(|k| k.seq >= from)
                .cloned()
                .collect();
            Ok(Box::new(MemoryReader(rest.into_iter())) as Box<dyn kit::history::Reader>)
        })
    }
}

#[tokio::test]
async fn a_consumer_stopped_past_the_retention_reads_the_history_through_its_outage() {
    // Stopped while 300 more arrive; the archive has them all, the stream only 251..=350.
    let (nats, js, _dir, db) = stopped_while_300_arrive(1000).await;
    let stream = js.get_stream("BSKY").await.unwrap();
    let mut kept = Vec::new();
    for seq in 1..=350 {
        let m = stream.direct_get(seq).await.unwrap();
        kept.push(kit::history::Kept {
            seq,
            subject: m.subject.to_string(),
            payload: m.payload.clone(),
            stored_ns: i64::try_from(m.time.unix_timestamp_nanos()).unwrap(),
        });
    }
    stream.purge().sequence(251).await.unwrap();
    let history = Arc::new(Memory {
        kept,
        fail: 2.into(),
        reads: 0.into(),
    });
    let with_history = |o: &mut kit::Options| o.history = Some(history.clone());
    let mut r = start(&nats.url(), options(&db, with_history), Recorder::default()).await;
    let p = kit::testing::wait_caught_up(&mut r.progress, 350, WAIT)
        .await
        .unwrap();
    assert_eq!((p.lost, r.metrics.retention_lost.get()), (0, 0));
    assert_eq!(
        r.metrics.history.get(),
        300,
        "51..=350: to the history's end, past the stream's start at 251"
    );
    assert_eq!(
        history.reads.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "two failed reads, then one that went to the end"
    );
    r.stop().await;
    assert_eq!(
        applied(&db),
        (1..=350).map(|s| (s, 1)).collect::<Vec<_>>(),
        "once each, in order, across the seam at 251"
    );
}

/// The stream is lost and rebuilt with the same messages at the same sequences (as
/// `archive restore` does). With the restore's lineage in its metadata the consumer goes on
/// from its position; without it, or with a position past what was restored, it refuses
/// (its state may not match the new stream) and says how to rebuild.
#[tokio::test]
async fn a_restored_stream_is_continued_only_where_its_lineage_says() {
    let (nats, js, _dir, db) = stopped_after_50(-1).await;
    let lost_created =
        contract::lineage::created_id(stream_info(&js).await.created.unix_timestamp_nanos());

    // Lost, then rebuilt through 40 or 50, with or without the lineage.
    let rebuild = |through: u64, lineage: bool| {
        let js = js.clone();
        let lost_created = lost_created.clone();
        async move {
            js.delete_stream("BSKY").await.unwrap();
            let mut cfg = ingest::stream::stream_config(&ingest::config::Config::default().stream);
            if lineage {
                cfg.metadata.extend(
                    contract::lineage::Restored {
                        from: vec!["1".into(), lost_created],
                        through,
                    }
                    .metadata(),
                );
            }
            js.create_stream(cfg).await.unwrap();
            publish(&js, 0..through, "app.bsky.feed.like").await;
        }
    };
    for (through, lineage) in [(50, false), (40, true)] {
        rebuild(through, lineage).await;
        let r = start(&nats.url(), options(&db, |_| {}), Recorder::default()).await;
        let err = r.task.await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("recreated") || format!("{err:?}").contains("Recreated"),
            "through {through}, lineage {lineage}: {err:?}"
        );
    }
    rebuild(50, true).await;
    publish(&js, 50..60, "app.bsky.feed.like").await;
    let mut r = start(&nats.url(), options(&db, |_| {}), Recorder::default()).await;
    kit::testing::wait_caught_up(&mut r.progress, 60, WAIT)
        .await
        .unwrap();
    r.stop().await;
    let want: Vec<(u64, i64)> = (1..=60).map(|s| (s, 1)).collect();
    assert_eq!(
        applied(&db),
        want,
        "1..=50 before the loss, 51..=60 after, once each"
    );
    // The position now names the restored stream: a restart needs no lineage any more.
    let mut cfg = stream_info(&js).await.config;
    cfg.metadata.retain(|k, _| !k.starts_with("bsky_"));
    js.update_stream(&cfg).await.unwrap();
    publish(&js, 60..62, "app.bsky.feed.like").await;
    let mut r = start(&nats.url(), options(&db, |_| {}), Recorder::default()).await;
    kit::testing::wait_caught_up(&mut r.progress, 62, WAIT)
        .await
        .unwrap();
    r.stop().await;
    assert_eq!(applied(&db).len(), 62);
}
