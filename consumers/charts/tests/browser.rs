//! The charts page in a real headless browser (Debian's `chromium`), for every range: it
//! loads, its five charts are laid out with visible marks, the hover titles of the
//! charts carry the numbers and they equal the JSON downloads, and so do the tables.
//! Screenshots are kept in `target/test-artifacts/charts-<range>.png`.
//!
//! Without `/usr/bin/chromium` (or `$CHROMIUM`) the test says why and passes, unless
//! `CI` is set: there it must run (`deploy/setup-chromium.sh` installs it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use charts::handler::FIGURES;
use charts::query::Range;
use common::Op;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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

/// 40 days of activity ending two days ago: a few events an hour some hours, posts in
/// four languages.
fn capture() -> Vec<Op> {
    let colls = [
        "app.bsky.feed.like",
        "app.bsky.feed.post",
        "app.bsky.feed.like",
        "app.bsky.feed.repost",
        "app.bsky.graph.follow",
        "app.bsky.feed.like",
        "app.bsky.actor.profile",
        "app.bsky.graph.block",
    ];
    let langs = [vec!["en"], vec!["ja"], vec!["pt-BR", "en"], vec!["de"]];
    let first = common::days_ago(42);
    let mut out = Vec::new();
    for h in 0..40 * 24 {
        for k in 0..(h * 7 % 11) {
            let collection = colls[((h + k) % 8) as usize];
            out.push(Op {
                did: format!("did:plc:u{}", (h * 3 + k) % (20 + h / 24)),
                time_us: first + h * 3_600_000_000 + k * 60_000_000,
                collection,
                langs: if collection.ends_with("post") {
                    langs[((h / 3 + k) % 4) as usize].clone()
                } else {
                    Vec::new()
                },
            });
        }
    }
    out
}

/// The hover titles ("label, name: value") of each chart in the dumped DOM.
fn titles(dom: &str) -> BTreeMap<String, Vec<(String, String, i64)>> {
    let mut out = BTreeMap::new();
    for fig in dom.split("<figure id=\"").skip(1) {
        let id = fig.split('"').next().unwrap().to_string();
        let fig = fig.split("</figure>").next().unwrap();
        let mut list = Vec::new();
        for t in fig.split("<title>").skip(1) {
            let t = t.split("</title>").next().unwrap();
            let (label, rest) = t.split_once(", ").unwrap();
            let (name, value) = rest.split_once(": ").unwrap();
            list.push((label.to_string(), name.to_string(), value.parse().unwrap()));
        }
        out.insert(id, list);
    }
    out
}

/// Every figure of the JSON downloads of `range`: (label, name) → value.
async fn json_figures(addr: std::net::SocketAddr, range: &str) -> BTreeMap<(String, String), i64> {
    let get = |path: String| async move {
        let (code, body) = common::get(addr, &path).await.unwrap();
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let mut out = BTreeMap::new();
    let hourly = get(format!("/api/hourly?range={range}")).await;
    for h in hourly["hours"].as_array().unwrap() {
        for (i, f) in FIGURES.iter().enumerate() {
            let v = h["counts"][i].as_i64().unwrap();
            out.insert((h["utc"].as_str().unwrap().to_string(), f.to_string()), v);
        }
    }
    let daily = get(format!("/api/daily?range={range}")).await;
    for d in daily["days"].as_array().unwrap() {
        let day = d["utc"].as_str().unwrap().to_string();
        out.insert((day.clone(), "users".into()), d["users"].as_i64().unwrap());
        for (i, f) in FIGURES.iter().enumerate() {
            out.insert(
                (day.clone(), f.to_string()),
                d["counts"][i].as_i64().unwrap(),
            );
        }
    }
    let langs = get(format!("/api/langs?range={range}")).await;
    for l in langs["langs"].as_array().unwrap() {
        out.insert(
            (l["lang"].as_str().unwrap().to_string(), "posts".into()),
            l["posts"].as_i64().unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_range_renders_and_its_hover_titles_equal_the_json() {
    let Some(bin) = chromium() else { return };
    let mut nats = testkit::NatsServer::start().unwrap();
    let js = common::own_stream(&nats).await;
    let last = common::publish(&js, &capture()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::config(&nats.url(), &dir.path().join("charts.db"), "charts");
    let charts = common::InProcess::start(cfg, kit::Start::Resume);
    common::wait_caught_up(charts.addr, last, common::WAIT).await;
    let shots = testkit::workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();

    for range in Range::EVERY {
        let r = range.as_str();
        let url = format!("http://{}/?range={r}", charts.addr);
        let (b, u) = (bin.clone(), url.clone());
        let out = tokio::task::spawn_blocking(move || {
            run_chromium(&b, &["--virtual-time-budget=5000", "--dump-dom"], &u)
        })
        .await
        .unwrap();
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && dom.contains("Bluesky activity"),
            "chromium on {r}: {}\n{dom}",
            String::from_utf8_lossy(&out.stderr)
        );
        let body = dom.split("<body").nth(1).unwrap();
        assert_eq!(attr(body, "data-range"), Some(r));
        assert_eq!(
            attr(body, "data-charts-drawn"),
            Some("5"),
            "the browser laid out all five charts of {r}"
        );
        assert!(dom.contains("up to date with the stream"));

        let want = json_figures(charts.addr, r).await;
        let charts_titles = titles(&dom);
        assert_eq!(charts_titles.len(), 5, "{r}: {:?}", charts_titles.keys());
        for (chart, list) in &charts_titles {
            assert!(!list.is_empty(), "{r} {chart} has hover titles");
            assert!(list.iter().any(|t| t.2 > 0), "{r} {chart} shows data");
            for (label, name, value) in list {
                let json = want
                    .get(&(label.clone(), name.clone()))
                    .copied()
                    .unwrap_or(0);
                assert_eq!(*value, json, "{r} {chart}: {label} {name}");
            }
        }
        // Every like of the range is on the likes chart.
        let likes: i64 = charts_titles["chart-likes"].iter().map(|t| t.2).sum();
        let json_likes: i64 = want
            .iter()
            .filter(|((label, name), _)| name == "likes" && (label.len() == 10) != range.hourly())
            .map(|(_, v)| v)
            .sum();
        assert_eq!(likes, json_likes, "{r}: likes on the chart and in the JSON");

        // The tables say the same.
        for (key, row) in rows(&dom, "daily", "data-day") {
            let day = charts::query::utc_day(key.parse().unwrap());
            for (f, v) in row {
                assert_eq!(
                    Some(&v),
                    want.get(&(day.clone(), f.clone())),
                    "{r} table {day} {f}"
                );
            }
        }
        if range.hourly() {
            let hours = rows(&dom, "hourly", "data-hour");
            assert!(!hours.is_empty());
            for (key, row) in hours {
                let hour = charts::query::utc_hour(key.parse().unwrap());
                for (f, v) in row {
                    assert_eq!(
                        Some(&v),
                        want.get(&(hour.clone(), f.clone())),
                        "{r} {hour} {f}"
                    );
                }
            }
        }

        let png = shots.join(format!("charts-{r}.png"));
        let _ = std::fs::remove_file(&png);
        let arg = format!("--screenshot={}", png.display());
        let b = bin.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_chromium(
                &b,
                &[
                    "--virtual-time-budget=5000",
                    "--window-size=1024,2200",
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
    }
    charts.stop().await;
    nats.stop();
}
