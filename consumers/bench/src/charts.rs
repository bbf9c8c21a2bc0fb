//! The charts benchmarks, each in one run:
//! - `consumer-bench charts`: the real `charts` binary (kit, SQLite writes) against a plain
//!   pull consumer on the same filter (`bsky.*.*.>`, every commit op);
//! - `charts-dau`: one UTC day of 3 million distinct DIDs, the same comparison, peak RSS
//!   and the DAU counted against the exact figure;
//! - `charts-page`: `GET /` of every range over 400 days of figures, against `GET
//!   /api/status`.

use consumer_bench as cb;
use std::process::Command;

pub async fn charts(ops: u64, seed: u64, batch: usize) -> anyhow::Result<()> {
    let bin = cb::sibling("charts")?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores; charts binary {}", bin.display());
    let (nats, _stored) = cb::filled(ops, seed).await?;

    let filter = contract::subject::ALL_COMMITS; // charts' default: every commit op
    let plain = cb::plain_consumer(&nats.url(), filter, batch, 20_000).await?;
    println!(
        "plain pull consumer: {} msgs in {:.2} s: {:.0} msgs/s",
        plain.msgs,
        plain.secs,
        plain.per_s()
    );

    let dir = tempfile::tempdir()?;
    let logs = cb::logs_dir()?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--nats",
        &nats.url(),
        "--listen",
        &format!("127.0.0.1:{}", testkit::free_port()?),
    ])
    .arg("--db")
    .arg(dir.path().join("charts.db"))
    .env("BSKY_CHARTS_CONSUMER__BATCH", batch.to_string())
    .env("RUST_LOG", "warn");
    let run = cb::run_consumer(
        &nats.url(),
        cmd,
        "charts",
        plain.msgs,
        nats.pid(),
        &logs.join("charts.log"),
    )
    .await?;
    let rss_mib = run.hwm_kib as f64 / 1024.0;
    let ratio = run.rate.per_s() / plain.per_s();
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| plain pull consumer, explicit acks, `{filter}` | {:.0} msgs/s ({} msgs, {:.2} s) |",
        plain.per_s(),
        plain.msgs,
        plain.secs
    );
    println!("| charts (binary, SQLite, synchronous=full), batch {batch} | {:.0} msgs/s ({:.2} s from start) |", run.rate.per_s(), run.rate.secs);
    println!("| charts / plain | {ratio:.2} |");
    println!("| charts peak RSS (VmHWM) | {rss_mib:.1} MiB |");
    println!(
        "| CPU s: charts / nats-server (charts phase) | {:.1} / {:.1} |",
        run.cpu.0, run.cpu.1
    );
    println!();
    println!(
        "charts_msgs_s={:.0} plain_msgs_s={:.0} ratio={ratio:.2} charts_peak_rss_mib={rss_mib:.1} msgs={}",
        run.rate.per_s(),
        plain.per_s(),
        plain.msgs
    );
    Ok(())
}

/// The day the synthetic captures below are dated on (2026-07-04T00:00:00Z), µs.
const DAY0_US: i64 = 1_783_123_200_000_000;

/// A fresh nats-server whose stream holds one like per `(did, time_us)` of `ops`,
/// published in chunks so a few million need no more memory than a chunk.
async fn likes(n: u64, op: impl Fn(u64) -> (String, i64)) -> anyhow::Result<testkit::NatsServer> {
    let nats = testkit::NatsServer::start()?;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    js.create_stream(ingest::stream::stream_config(
        &ingest::config::Config::default().stream,
    ))
    .await
    .map_err(|e| anyhow::anyhow!("stream: {e}"))?;
    let t = std::time::Instant::now();
    let like = "app.bsky.feed.like";
    let subject = contract::subject::collection(contract::Nsid::parse(like)?);
    let mut i = 0;
    while i < n {
        let chunk: Vec<bench::ceiling::Msg> = (i..n.min(i + 200_000))
            .map(|j| {
                let (did, time_us) = op(j);
                let body =
                    kit::testing::commit_json(&did, time_us, like, "create", &format!("k{j}"));
                bench::ceiling::Msg {
                    subject: subject.as_str().into(),
                    payload: body.into(),
                    seq: String::new(),
                }
            })
            .collect();
        i += chunk.len() as u64;
        bench::ceiling::publish_all(&js, &chunk, 2048, false).await?;
    }
    println!(
        "stream: {n} likes stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(nats)
}

/// `consumer-bench charts-dau`: one UTC day in which `dids` distinct DIDs like once each
/// (and one in ten likes again), then one like two days later that closes the day:
/// charts' msgs/s and peak RSS next to a plain pull consumer, and its DAU against the
/// exact count.
pub async fn dau(dids: u64, batch: usize) -> anyhow::Result<()> {
    let n = dids + dids / 10;
    let exact = n - (n + 1) / 11; // messages that bring a new DID
    let step = 86_400_000_000 / n as i64;
    // Message j: a new DID, except every tenth, which is a DID seen before. Then one like
    // two days later, which closes the big day inside the timed run (its members move to
    // the keyed table), and counts one more user.
    let nats = likes(n + 1, |j| {
        if j == n {
            return (
                format!("did:plc:bench{:019}", 0),
                DAY0_US + 2 * 86_400_000_000,
            );
        }
        let did = if j % 11 == 10 {
            j / 11 * 10 / 3
        } else {
            j - j / 11
        };
        (format!("did:plc:bench{did:019}"), DAY0_US + j as i64 * step)
    })
    .await?;
    let exact_total = exact + 1;
    let plain =
        cb::plain_consumer(&nats.url(), contract::subject::ALL_COMMITS, batch, 20_000).await?;
    let bin = cb::sibling("charts")?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("charts.db");
    let mut cmd = Command::new(&bin);
    cmd.args(["--nats", &nats.url(), "--listen"])
        .arg(format!("127.0.0.1:{}", testkit::free_port()?))
        .arg("--db")
        .arg(&db)
        .env("BSKY_CHARTS_CONSUMER__BATCH", batch.to_string())
        .env("RUST_LOG", "warn");
    let logs = cb::logs_dir()?;
    let run = cb::run_consumer(
        &nats.url(),
        cmd,
        "charts",
        plain.msgs,
        nats.pid(),
        &logs.join("charts-dau.log"),
    )
    .await?;
    let conn = kit::state::open_reader(&db)?;
    let counted: i64 = conn.query_row("SELECT SUM(users) FROM daily", [], |r| r.get(0))?;
    let rss_mib = run.hwm_kib as f64 / 1024.0;
    let ratio = run.rate.per_s() / plain.per_s();
    println!();
    println!("| measure ({exact} distinct DIDs, {n} likes, one UTC day, then the like that closes it) | value |");
    println!("|---|---|");
    println!(
        "| plain pull consumer | {:.0} msgs/s ({:.2} s) |",
        plain.per_s(),
        plain.secs
    );
    println!(
        "| charts, batch {batch} | {:.0} msgs/s ({:.2} s) |",
        run.rate.per_s(),
        run.rate.secs
    );
    println!("| charts / plain | {ratio:.2} |");
    println!("| charts peak RSS (VmHWM) | {rss_mib:.1} MiB |");
    println!("| DAU counted / distinct DIDs (the day, plus the closing like) | {counted} / {exact_total} |");
    println!();
    println!(
        "dids={exact} charts_msgs_s={:.0} plain_msgs_s={:.0} ratio={ratio:.2} charts_peak_rss_mib={rss_mib:.1} dau={counted} dau_exact={exact_total}",
        run.rate.per_s(),
        plain.per_s()
    );
    Ok(())
}

/// `consumer-bench charts-page`: `days` UTC days of activity (`per_hour` likes an hour,
/// ending two days ago) consumed by charts, then `GET /` of every range timed,
/// `requests` times each, next to `GET /api/status` (no figures) as the baseline.
pub async fn page(days: u64, per_hour: u64, requests: usize) -> anyhow::Result<()> {
    let now_day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64
        / 86_400;
    let first = (now_day - days as i64 - 2) * 86_400_000_000;
    let n = days * 24 * per_hour;
    let step = 3_600_000_000 / per_hour as i64;
    let nats = likes(n, |j| {
        (format!("did:plc:page{}", j % 5000), first + j as i64 * step)
    })
    .await?;
    let port = testkit::free_port()?;
    let dir = tempfile::tempdir()?;
    let logs = cb::logs_dir()?;
    let log = std::fs::File::create(logs.join("charts-page.log"))?;
    let mut child = testkit::ChildGuard(
        Command::new(cb::sibling("charts")?)
            .args([
                "--nats",
                &nats.url(),
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--db")
            .arg(dir.path().join("charts.db"))
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let start = std::time::Instant::now();
    loop {
        if let Ok((200, body)) = testkit::http::get(addr, "/api/status").await {
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let p = &v["progress"];
            if p["known"] == true && p["pending"] == 0 && p["stream_last_seq"].as_u64() >= Some(n) {
                break;
            }
        }
        anyhow::ensure!(start.elapsed() < cb::STALL * 5, "charts did not catch up");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    println!(
        "charts caught up with {n} likes in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let time = |path: &'static str| async move {
        let mut ms = Vec::with_capacity(requests);
        for i in 0..requests + 3 {
            let t = std::time::Instant::now();
            let (code, body) = testkit::http::get(addr, path).await?;
            anyhow::ensure!(code == 200, "{path}: {code} {body}");
            if i >= 3 {
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        ms.sort_by(f64::total_cmp);
        Ok::<_, anyhow::Error>((ms[ms.len() / 2], ms[ms.len() * 9 / 10]))
    };
    let (base, base90) = time("/api/status").await?;
    println!();
    println!("| GET ({days} days of data, {requests} requests each) | median ms | p90 ms | median / status |");
    println!("|---|---|---|---|");
    println!("| /api/status (baseline) | {base:.2} | {base90:.2} | 1.0 |");
    let mut line = format!("days={days} status_ms={base:.2}");
    for (range, path) in [
        ("2d", "/?range=2d"),
        ("30d", "/?range=30d"),
        ("1y", "/?range=1y"),
        ("all", "/?range=all"),
    ] {
        let (med, p90) = time(path).await?;
        println!("| {path} | {med:.2} | {p90:.2} | {:.1} |", med / base);
        line.push_str(&format!(" page_{range}_ms={med:.2}"));
    }
    println!();
    println!("{line}");
    child.terminate(std::time::Duration::from_secs(10));
    Ok(())
}
