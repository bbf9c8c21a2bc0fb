//! The archive on a local directory: complete and exactly once across `kill -9` and a store
//! outage while the stream's retention drops what was archived; restored into a fresh
//! stream sequence for sequence; replayed from a sequence and from an event time; a gap
//! recorded when the archiver starts after the stream dropped messages.

mod common;

use archive::format::Entry;
use archive::reader::{Archive, From};
use async_nats::jetstream;
use common::{Archiver, LocalDir, StoreUnderTest};
use futures_util::StreamExt;
use kit::history::History;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_across_kills_and_an_outage_then_restored_and_replayed() -> anyhow::Result<()> {
    let mut store = LocalDir::new()?;
    let (ops, secs) = common::scenario_size();
    let (_capture, msgs, nats) = common::kills_and_outage(&mut store, ops, 5, secs).await?;
    let n = msgs.len() as u64;
    let archive = Archive::new(store.open()?);

    // Replay from a sequence: exactly k..=n, in order.
    let k = n / 3;
    let mut replay = archive.replay(From::Seq(k)).await?;
    let mut want = k;
    while let Some(r) = replay.next().await? {
        anyhow::ensure!(
            r.seq == want,
            "replay from {k}: {} where {want} was expected",
            r.seq
        );
        want += 1;
    }
    anyhow::ensure!(want == n + 1, "replay from {k} ended at {}", want - 1);

    // Replay from an event time: starts at the first message at or after it.
    let t = kit::event::time_us(&msgs[usize::try_from(n / 2)?].payload)?;
    let mut replay = archive.replay(From::Time(t)).await?;
    let first = replay
        .next()
        .await?
        .ok_or_else(|| anyhow::anyhow!("nothing from {t}"))?;
    anyhow::ensure!(kit::event::time_us(&first.payload)? >= t);
    for m in &msgs[..usize::try_from(first.seq - 1)?] {
        anyhow::ensure!(
            kit::event::time_us(&m.payload)? < t,
            "an earlier message is at or after {t}"
        );
    }
    let mut count = 1;
    while replay.next().await?.is_some() {
        count += 1;
    }
    anyhow::ensure!(
        count == n - first.seq + 1,
        "replay from a time: {count} messages"
    );

    // Restore into a fresh stream on another server, with the command an operator runs.
    let target = testkit::NatsServer::start()?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_archive"))
        .args(["--nats", &target.url(), "--store"])
        .arg(store.dir.path().join("archive"))
        .args(["--listen", "", "restore", "--into", "BSKY"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let js = jetstream::new(async_nats::connect(target.url()).await?);
    let (first, last) = common::stream_range(&js).await?;
    anyhow::ensure!(
        (first, last) == (1, n),
        "restored stream holds {first}..={last}"
    );
    // Its metadata names the archived stream, so consumers built on it go on.
    let original = jetstream::new(async_nats::connect(nats.url()).await?)
        .get_stream("BSKY")
        .await?
        .info()
        .await?
        .created;
    let original = contract::lineage::created_id(original.unix_timestamp_nanos());
    let metadata = js
        .get_stream("BSKY")
        .await?
        .info()
        .await?
        .config
        .metadata
        .clone();
    let restored = contract::lineage::Restored::from_metadata(&metadata);
    anyhow::ensure!(
        restored
            .as_ref()
            .is_some_and(|r| r.from == [original.clone()] && r.through == n),
        "lineage {restored:?}, want from [{original}] through {n}"
    );
    let stream = js.get_stream("BSKY").await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    for (i, want) in msgs.iter().enumerate() {
        let m = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the restored stream ended at {i}"))??;
        let seq = m.info().map_err(anyhow::Error::msg)?.stream_sequence;
        anyhow::ensure!(
            seq == i as u64 + 1,
            "restored sequence {seq} at position {i}"
        );
        anyhow::ensure!(
            m.subject.as_str() == want.subject.as_str() && m.payload == want.payload,
            "restored seq {seq} differs"
        );
        let bsky_seq = m
            .headers
            .as_ref()
            .and_then(|h| h.get(contract::header::SEQ))
            .map(|v| v.as_str().to_string());
        anyhow::ensure!(
            bsky_seq.as_deref() == Some(want.seq.as_str()),
            "restored seq {seq}: Bsky-Seq {bsky_seq:?}"
        );
    }

    // A gap inside the archive (its second segment turned into a gap entry), restored as
    // user ingest under the shipped permissions: the gap's sequences stay empty (their
    // placeholders deleted) and every other message lands at its own.
    let gapped = tempfile::tempdir()?;
    testkit::copy_dir(&store.dir.path().join("archive"), gapped.path())?;
    let Some(Entry::Segment(hole)) = archive.manifest().await?.get(1).cloned() else {
        anyhow::bail!("the archive has no second segment");
    };
    std::fs::remove_file(gapped.path().join(&hole.key))?;
    let gap = Entry::Gap(archive::format::GapEntry {
        first_seq: hole.first_seq,
        last_seq: hole.last_seq,
        detected_ns: 0,
        reason: "retention".into(),
    });
    std::fs::write(
        gapped
            .path()
            .join(archive::format::manifest_key(hole.first_seq)),
        serde_json::to_vec(&gap)?,
    )?;
    let conf = testkit::workspace_root().join("deploy/nats-server.conf");
    let secured = testkit::NatsServer::start_with_config(conf, &testkit::deploy::server_env())?;
    let password = testkit::deploy::password("ingest").unwrap_or_default();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_archive"))
        .args(["--nats", &secured.url(), "--store"])
        .arg(gapped.path())
        .args(["--listen", "", "restore", "--into", "BSKY"])
        .env("BSKY_ARCHIVE_NATS__USER", "ingest")
        .env("BSKY_ARCHIVE_NATS__PASSWORD", password)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "restore with a gap, as ingest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ingest =
        async_nats::ConnectOptions::with_user_and_password("ingest".into(), password.into())
            .custom_inbox_prefix("_INBOX_ingest")
            .connect(secured.url())
            .await?;
    let state = jetstream::new(ingest)
        .get_stream("BSKY")
        .await?
        .info()
        .await?
        .state
        .clone();
    let holes = hole.last_seq - hole.first_seq + 1;
    anyhow::ensure!(
        (
            state.first_sequence,
            state.last_sequence,
            state.messages,
            state.deleted_count
        ) == (1, n, n - holes, Some(holes)),
        "restored with a gap of {holes}: {state:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_archiver_records_the_gap_and_goes_on() -> anyhow::Result<()> {
    let (capture, msgs) = common::capture(3_000, 5)?;
    let n = msgs.len() as u64;
    let total: usize = msgs
        .iter()
        .map(|m| m.payload.len() + m.subject.len() + 100)
        .sum();
    let pipeline = ingest::testing::Pipeline::start_on(
        testkit::NatsServer::start()?,
        capture,
        Default::default(),
        |c| c.stream.max_bytes = i64::try_from(total / 3).unwrap_or(i64::MAX),
    )
    .await?;
    let url = pipeline.nats.url();
    let js = jetstream::new(async_nats::connect(&url).await?);
    common::wait_last_seq(&js, n, Duration::from_secs(60)).await?;
    let (first, _) = common::stream_range(&js).await?;
    anyhow::ensure!(first > 1, "retention dropped nothing");

    let store = LocalDir::new()?;
    let work = tempfile::tempdir()?;
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", testkit::free_port()?).parse()?;
    let mut archiver = Archiver::start(work.path(), &common::archiver_toml(&url, &store, metrics))?;
    let archive = Archive::new(store.open()?);
    common::wait_archived(&archive, &mut archiver, n, Duration::from_secs(60)).await?;

    let entries = archive.manifest().await?;
    let Some(Entry::Gap(g)) = entries.first() else {
        anyhow::bail!("the first entry is not a gap: {:?}", entries.first());
    };
    anyhow::ensure!(
        (g.first_seq, g.last_seq) == (1, first - 1),
        "gap {g:?}, stream starts at {first}"
    );
    let mut next = first;
    for e in &entries[1..] {
        let Entry::Segment(s) = e else {
            anyhow::bail!("a second gap: {e:?}")
        };
        anyhow::ensure!(s.first_seq == next, "segment {} after {}", s.key, next - 1);
        for r in archive.segment(s).await? {
            let want = &msgs[usize::try_from(r.seq - 1)?];
            anyhow::ensure!(r.payload == want.payload, "seq {} differs", r.seq);
        }
        next = s.last_seq + 1;
    }
    anyhow::ensure!(next == n + 1);
    // As history, its first kept message is the stream's first, past the gap: from the
    // manifest alone, and from the first segment.
    let history = archive::history::ArchiveHistory::new(store.open()?, "test".into());
    let from_segment = history.first().await.map_err(anyhow::Error::msg)?;
    let from_manifest = history.first_seq().await.map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        from_manifest == Some(first) && from_segment.map(|k| k.seq) == Some(first),
        "first kept: {from_manifest:?} from the manifest, stream starts at {first}"
    );

    let (code, body) = testkit::http::get(metrics, "/metrics").await?;
    anyhow::ensure!(code == 200);
    let line = format!("bsky_archive_gap_messages_total {}", first - 1);
    anyhow::ensure!(body.contains(&line), "no `{line}` in:\n{body}");
    anyhow::ensure!(body.contains("bsky_archive_gaps_total 1"), "{body}");
    anyhow::ensure!(std::fs::read_to_string(&archiver.log)?
        .contains("removed messages before they were archived"));
    archiver.child.terminate(Duration::from_secs(10));
    pipeline.stop().await?;
    Ok(())
}
