//! The charts page in a real headless browser (Debian's `chromium`): it loads, its four
//! charts are laid out with visible marks, and the figures it shows equal those in the
//! database. A screenshot is kept in `target/test-artifacts/charts.png`.
//!
//! Without `/usr/bin/chromium` (or `$CHROMIUM`) the test says why and passes, unless
//! `CI` is set: there it must run (`deploy/setup-chromium.sh` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!(
            "{} is missing and CI is set: run deploy/setup-chromium.sh",
            path.display()
        );
    }
    eprintln!(
        "SKIP: {} not found (install it with deploy/setup-chromium.sh)",
        path.display()
    );
    None
}

/// Runs headless chromium with `args` on `url`, in its own profile directory.
fn run_chromium(bin: &PathBuf, args: &[&str], url: &str) -> Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The value of `attr="…"` in `tag`.
fn attr<'a>(tag: &'a str, attr: &str) -> Option<&'a str> {
    let start = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    tag[start..].split('"').next()
}

/// The rows of table `id` in the dumped DOM: (row key attribute, figure → value).
fn rows(dom: &str, id: &str, key: &str) -> BTreeMap<String, BTreeMap<String, i64>> {
    let table = dom
        .split(&format!("<table id=\"{id}\""))
        .nth(1)
        .unwrap()
        .split("</table>")
        .next()
        .unwrap();
    let mut out = BTreeMap::new();
    for row in table.split("<tr").skip(1) {
        let Some(k) = attr(row, key) else { continue };
        let mut cells = BTreeMap::new();
        for cell in row.split("<td").skip(1) {
            if let Some(f) = attr(cell, "data-figure") {
                let v = cell.split('>').nth(1).unwrap().split('<').next().unwrap();
                cells.insert(f.to_string(), v.parse().unwrap());
            }
        }
        out.insert(k.to_string(), cells);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_renders_and_shows_the_database_figures() {
    let Some(bin) = chromium() else { return };
    let capture = Arc::new(staging::fixtures::corpus().unwrap());
    let pipeline = ingest::testing::Pipeline::start(capture, Default::default())
        .await
        .unwrap();
    pipeline.wait_stored(152, common::WAIT).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(
        &pipeline.nats.url(),
        &dir.path().join("charts.db"),
        "charts",
    );
    let charts = common::InProcess::start(cfg, kit::Start::Resume);
    common::wait_caught_up(charts.addr, 152, common::WAIT).await;
    let url = format!("http://{}/", charts.addr);

    let b = bin.clone();
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_chromium(&b, &["--virtual-time-budget=5000", "--dump-dom"], &u)
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("Bluesky activity"),
        "chromium: {}\n{dom}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = dom.split("<body").nth(1).unwrap();
    assert_eq!(
        attr(body, "data-charts-drawn"),
        Some("4"),
        "the browser laid out all four charts"
    );
    assert!(dom.contains("up to date with the stream"));

    let t = common::tables(&charts.db);
    let hours = rows(&dom, "hourly", "data-hour");
    assert_eq!(hours.len(), t.hours.len());
    for h in &t.hours {
        let shown = &hours[&h.hour.to_string()];
        for (f, v) in charts::handler::FIGURES.iter().zip(h.counts) {
            assert_eq!(shown[*f], v, "{} {f}", h.utc);
        }
    }
    let days = rows(&dom, "daily", "data-day");
    assert_eq!(days.len(), t.days.len());
    for d in &t.days {
        assert_eq!(days[&d.day.to_string()]["users"], d.users);
    }
    let langs = rows(&dom, "langs", "data-lang");
    for l in &t.langs {
        assert_eq!(langs[&l.lang]["posts"], l.posts);
    }

    let shots = testkit::workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("charts.png");
    let _ = std::fs::remove_file(&png);
    let arg = format!("--screenshot={}", png.display());
    let out = tokio::task::spawn_blocking(move || {
        run_chromium(
            &bin,
            &[
                "--virtual-time-budget=5000",
                "--window-size=1024,1400",
                &arg,
            ],
            &url,
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 20_000,
        "screenshot {} is {size} bytes",
        png.display()
    );
    eprintln!("screenshot: {}", png.display());
    charts.stop().await;
    pipeline.stop().await.unwrap();
}
