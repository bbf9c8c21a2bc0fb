//! The web side: the page (`GET /`), the same figures as JSON and CSV, the status, and
//! `/metrics`, all read from the database through a read-only connection per request.
//!
//! | path | what |
//! |---|---|
//! | `/?range=2d\|30d\|1y\|all` | the page: charts drawn on the server ([`crate::chart`]) and the same figures as tables |
//! | `/api/hourly`, `/api/hourly.csv` | hourly figures of the range |
//! | `/api/daily`, `/api/daily.csv` | daily figures (DAU and the sums of the hourly ones) |
//! | `/api/dau`, `/api/dau.csv` | daily active users |
//! | `/api/langs`, `/api/langs.csv` | languages of posts over the range |
//! | `/api/status` | newest event time charted, lag behind the stream, events skipped by the clock checks |
//!
//! Every download takes `?range=` (default `http.range`) and keys its figures by event
//! time, like the page. The HTML is written with [`maud`], which escapes by default. A
//! few lines of inline script, our own, record in `body[data-charts-drawn]` how many
//! charts the browser laid out with visible marks (the page needs no script to work).

use crate::chart::{self, ChartError, Series};
use crate::handler::{Clock, FIGURES, SKIP_REASONS};
use crate::query::{self, Figures, Range, Window};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use kit::Progress;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

const COLORS: [(u8, u8, u8); 8] = [
    (0x1f, 0x77, 0xb4),
    (0xd6, 0x27, 0x28),
    (0x2c, 0xa0, 0x2c),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xff, 0x7f, 0x0e),
];
const LIKES: usize = 1;
const HOUR_S: i64 = 3600;
const DAY_S: i64 = 86_400;

/// What the handlers share.
pub struct AppState {
    /// The charts database.
    pub db: PathBuf,
    /// Where the consumer stands.
    pub progress: watch::Receiver<Progress>,
    /// Range shown when the request does not say.
    pub range: Range,
    /// Where the stream's events come from.
    pub upstream: crate::config::UpstreamLabel,
    /// The clock-sanity bounds (the status names them).
    pub clock: Clock,
}

/// `?range=…`
#[derive(serde::Deserialize)]
pub struct Params {
    range: Option<Range>,
}

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The consumer has not created the database yet: try again later (503).
    #[error("no data yet")]
    NoData,
    /// The database cannot be read now (503).
    #[error("reading the charts database")]
    State(#[from] kit::state::StateError),
    /// A query failed (503).
    #[error("reading the charts database")]
    Sqlite(#[from] kit::rusqlite::Error),
    /// A chart could not be drawn: a bug (500).
    #[error(transparent)]
    Chart(#[from] ChartError),
    /// A CSV download could not be written: a bug (500).
    #[error("writing the CSV")]
    Csv(#[from] csv::Error),
    /// The reading task failed: a bug (500).
    #[error("the reading task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let code = match self {
            WebError::NoData | WebError::State(_) | WebError::Sqlite(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            WebError::Chart(_) | WebError::Csv(_) | WebError::Task(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        tracing::warn!(
            error = &self as &dyn std::error::Error,
            "a charts request failed"
        );
        (code, self.to_string()).into_response()
    }
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/hourly", get(|s, p| json(s, p, Download::Hourly)))
        .route("/api/daily", get(|s, p| json(s, p, Download::Daily)))
        .route("/api/dau", get(|s, p| json(s, p, Download::Dau)))
        .route("/api/langs", get(|s, p| json(s, p, Download::Langs)))
        .route("/api/hourly.csv", get(|s, p| csv(s, p, Download::Hourly)))
        .route("/api/daily.csv", get(|s, p| csv(s, p, Download::Daily)))
        .route("/api/dau.csv", get(|s, p| csv(s, p, Download::Dau)))
        .route("/api/langs.csv", get(|s, p| csv(s, p, Download::Langs)))
        .route("/api/status", get(status))
        .with_state(state)
}

/// The figures of the range and what they say about themselves.
async fn load(state: &AppState, range: Range) -> Result<(Window, Figures), WebError> {
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || {
        if !db.is_file() {
            return Err(WebError::NoData);
        }
        let conn = kit::state::open_reader(&db)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Ok((query::window(&conn, range, now)?, query::figures(&conn)?))
    })
    .await?
}

/// The downloads.
#[derive(Debug, Clone, Copy)]
enum Download {
    Hourly,
    Daily,
    Dau,
    Langs,
}

async fn json(
    State(s): State<Arc<AppState>>,
    Query(p): Query<Params>,
    what: Download,
) -> Result<Response, WebError> {
    let range = p.range.unwrap_or(s.range);
    let (w, _) = load(&s, range).await?;
    let (from, to) = (w.from, w.to);
    let body = match what {
        Download::Hourly => serde_json::json!({
            "range": range, "from": from, "to": to, "figures": FIGURES, "hours": w.hours,
        }),
        Download::Daily => serde_json::json!({
            "range": range, "from": from, "to": to, "figures": FIGURES, "days": w.days,
        }),
        Download::Dau => serde_json::json!({
            "range": range, "from": from, "to": to,
            "days": w.days.iter().map(|d| serde_json::json!({"day": d.day, "utc": d.utc, "users": d.users})).collect::<Vec<_>>(),
        }),
        Download::Langs => serde_json::json!({
            "range": range, "from": from, "to": to, "langs": w.langs,
        }),
    };
    Ok(Json(body).into_response())
}

async fn csv(
    State(s): State<Arc<AppState>>,
    Query(p): Query<Params>,
    what: Download,
) -> Result<Response, WebError> {
    let range = p.range.unwrap_or(s.range);
    let (w, _) = load(&s, range).await?;
    let body = csv_body(&w, what)?;
    let name = format!(
        "attachment; filename=\"bsky-charts-{}-{}.csv\"",
        format!("{what:?}").to_lowercase(),
        range.as_str()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response())
}

/// The CSV of a download: a header row, then one row per hour, day or language.
fn csv_body(w: &Window, what: Download) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    match what {
        Download::Hourly => {
            out.write_record(["hour_utc", "hour_unix"].iter().chain(FIGURES.iter()))?;
            for h in &w.hours {
                let mut row = vec![query::utc_rfc3339(h.hour), h.hour.to_string()];
                row.extend(h.counts.iter().map(i64::to_string));
                out.write_record(&row)?;
            }
        }
        Download::Daily => {
            let head = ["day_utc", "day_unix", "users"];
            out.write_record(head.iter().chain(FIGURES.iter()))?;
            for d in &w.days {
                let mut row = vec![d.utc.clone(), d.day.to_string(), d.users.to_string()];
                row.extend(d.counts.iter().map(i64::to_string));
                out.write_record(&row)?;
            }
        }
        Download::Dau => {
            out.write_record(["day_utc", "day_unix", "users"])?;
            for d in &w.days {
                out.write_record([d.utc.clone(), d.day.to_string(), d.users.to_string()])?;
            }
        }
        Download::Langs => {
            out.write_record(["lang", "posts"])?;
            for l in &w.langs {
                out.write_record([l.lang.clone(), l.posts.to_string()])?;
            }
        }
    }
    out.into_inner().map_err(|e| e.into_error().into())
}

async fn status(State(s): State<Arc<AppState>>) -> Result<Response, WebError> {
    let p = s.progress.borrow().clone();
    let db = s.db.clone();
    let figures = tokio::task::spawn_blocking(move || -> Result<Figures, WebError> {
        if !db.is_file() {
            return Ok(Figures::default());
        }
        Ok(query::figures(&kit::state::open_reader(&db)?)?)
    })
    .await??;
    let skipped: serde_json::Map<String, serde_json::Value> = SKIP_REASONS
        .iter()
        .zip(figures.skipped)
        .map(|(r, n)| (r.to_string(), n.into()))
        .collect();
    Ok(Json(serde_json::json!({
        "data_up_to": figures.newest_us.map(kit::seek::rfc3339),
        "newest_event_us": figures.newest_us,
        "text": data_text(&figures),
        "lag": lag_text(&p),
        "behind_seconds": p.behind_us() / 1_000_000,
        "progress": p,
        "clock": {
            "skipped": skipped,
            "text": clock_text(&figures, &s.clock),
            "future_skew_seconds": s.clock.future_skew_us / 1_000_000,
            "floor": kit::seek::rfc3339(s.clock.floor_us),
        },
        "upstream": s.upstream,
    }))
    .into_response())
}

/// "Data up to 2026-07-04 14:05 UTC (the newest event time charted)."
pub fn data_text(f: &Figures) -> String {
    match f.newest_us {
        Some(t) => format!(
            "Data up to {} (the newest event time charted).",
            query::utc_minute(t.div_euclid(1_000_000))
        ),
        None => "No data yet.".into(),
    }
}

/// "Events kept out of the charts: 1 dated more than 10 min ahead of the moment it was
/// stored, 1 dated before 2023-01-01."
pub fn clock_text(f: &Figures, c: &Clock) -> String {
    format!(
        "Events kept out of the charts: {} dated more than {} min ahead of the moment they \
         were stored, \
         {} dated before {}.",
        f.skipped[0],
        c.future_skew_us / 60_000_000,
        f.skipped[1],
        query::utc_day(c.floor_us.div_euclid(1_000_000))
    )
}

/// "The consumer is 3 min (1,200 messages) behind the stream."
pub fn lag_text(p: &Progress) -> String {
    if !p.known {
        return "The consumer's position in the stream is not known yet.".into();
    }
    let behind = p.behind_us() / 1_000_000;
    let mut text = match behind {
        _ if p.pending == 0 => "The consumer is up to date with the stream.".to_string(),
        0..=59 => format!(
            "The consumer is {} messages, {behind} s, behind the stream.",
            p.pending
        ),
        60..=3599 => format!(
            "The consumer is {} messages, {} min, behind the stream.",
            p.pending,
            behind / 60
        ),
        _ => format!(
            "The consumer is {} messages, {} h {} min, behind the stream.",
            p.pending,
            behind / 3600,
            behind % 3600 / 60
        ),
    };
    if p.lost > 0 {
        text.push_str(&format!(
            " {} stream messages were dropped by the stream's retention before they were \
             read: the figures miss at most that many.",
            p.lost
        ));
    }
    text
}

async fn page(
    State(s): State<Arc<AppState>>,
    Query(p): Query<Params>,
) -> Result<Response, WebError> {
    let range = p.range.unwrap_or(s.range);
    let (w, figures) = load(&s, range).await?;
    let progress = s.progress.borrow().clone();
    let markup =
        tokio::task::spawn_blocking(move || render(&w, range, &figures, &progress, s.upstream))
            .await??;
    Ok(Html(markup.into_string()).into_response())
}

/// A chart in its `<figure>`.
fn figure(id: &str, svg: String) -> Markup {
    html! { figure id=(id) { (PreEscaped(svg)) } }
}

/// The charts of a range.
fn charts(w: &Window, range: Range) -> Result<Vec<Markup>, ChartError> {
    let line =
        |labels: &[String], title: &str, idx: &[usize], values: &dyn Fn(usize) -> Vec<i64>| {
            let series: Vec<Series<'_>> = idx
                .iter()
                .map(|&i| Series {
                    name: FIGURES[i],
                    color: COLORS[i],
                    values: values(i),
                })
                .collect();
            chart::lines(title, labels, &series)
        };
    // Every hour and day of the window, with zeros where nothing happened.
    let hours: BTreeMap<i64, &query::Hour> = w.hours.iter().map(|h| (h.hour, h)).collect();
    let days: BTreeMap<i64, &query::Day> = w.days.iter().map(|d| (d.day, d)).collect();
    let first_day = w.from.div_euclid(DAY_S) * DAY_S;
    let all_days: Vec<i64> = (first_day..w.to).step_by(DAY_S as usize).collect();
    let day_labels: Vec<String> = all_days.iter().map(|d| query::utc_day(*d)).collect();
    let users: Vec<i64> = all_days
        .iter()
        .map(|d| days.get(d).map_or(0, |d| d.users))
        .collect();
    let mut out = Vec::new();
    if range.hourly() {
        let all_hours: Vec<i64> = (w.from..w.to).step_by(HOUR_S as usize).collect();
        let labels: Vec<String> = all_hours.iter().map(|h| query::utc_hour(*h)).collect();
        let by_hour = |i: usize| {
            all_hours
                .iter()
                .map(|h| hours.get(h).map_or(0, |h| h.counts[i]))
                .collect()
        };
        out.push(figure(
            "chart-likes",
            line(
                &labels,
                "Likes per hour (UTC, event time)",
                &[LIKES],
                &by_hour,
            )?,
        ));
        out.push(figure(
            "chart-activity",
            line(
                &labels,
                "Posts, reposts and follows per hour",
                &[0, 2, 3],
                &by_hour,
            )?,
        ));
        out.push(figure(
            "chart-accounts",
            line(
                &labels,
                "Blocks, profile updates, deletes and new accounts per hour",
                &[4, 5, 6, 7],
                &by_hour,
            )?,
        ));
        out.push(figure(
            "chart-dau",
            chart::bars(
                "Daily active users (distinct DIDs with a commit, UTC day)",
                &day_labels,
                "users",
                &users,
                COLORS[0],
            )?,
        ));
    } else {
        let by_day = |i: usize| {
            all_days
                .iter()
                .map(|d| days.get(d).map_or(0, |d| d.counts[i]))
                .collect()
        };
        out.push(figure(
            "chart-dau",
            chart::lines(
                "Daily active users (distinct DIDs with a commit, UTC day)",
                &day_labels,
                &[Series {
                    name: "users",
                    color: COLORS[0],
                    values: users,
                }],
            )?,
        ));
        out.push(figure(
            "chart-likes",
            line(&day_labels, "Likes per day", &[LIKES], &by_day)?,
        ));
        out.push(figure(
            "chart-activity",
            line(
                &day_labels,
                "Posts, reposts and follows per day",
                &[0, 2, 3],
                &by_day,
            )?,
        ));
        out.push(figure(
            "chart-accounts",
            line(&day_labels, "New accounts per day", &[7], &by_day)?,
        ));
    }
    let top: Vec<_> = w.langs.iter().take(15).collect();
    out.push(figure(
        "chart-langs",
        chart::bars(
            "Languages of posts (first 15)",
            &top.iter().map(|l| l.lang.clone()).collect::<Vec<_>>(),
            "posts",
            &top.iter().map(|l| l.posts).collect::<Vec<_>>(),
            COLORS[2],
        )?,
    ));
    Ok(out)
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}\
figure{margin:0 0 1em}nav a{margin-right:1em}nav a[aria-current]{font-weight:bold;color:#222}\
#upstream{background:#fe8;padding:.4em}";

const SCRIPT: &str = r#"
// Count the charts the browser laid out with at least one visible mark.
var drawn = 0;
document.querySelectorAll("figure svg").forEach(function (svg) {
  var marks = svg.querySelectorAll(".mark"), ok = marks.length > 0;
  marks.forEach(function (m) { var b = m.getBBox(); if (!(b.width > 0 || b.height > 0)) ok = false; });
  if (ok) drawn++;
});
document.body.setAttribute("data-charts-drawn", String(drawn));
"#;

/// The whole page.
pub fn render(
    w: &Window,
    range: Range,
    figures: &Figures,
    progress: &Progress,
    upstream: crate::config::UpstreamLabel,
) -> Result<Markup, ChartError> {
    let charts = charts(w, range)?;
    let r = range.as_str();
    Ok(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Bluesky activity charts" }
                style { (PreEscaped(STYLE)) }
            }
            body data-range=(r) {
                h1 { "Bluesky activity" }
                @if upstream == crate::config::UpstreamLabel::Staging {
                    p id="upstream" { "Staging data: a recorded capture replayed locally, not the live network." }
                }
                p id="status" { (data_text(figures)) }
                p id="lag" { (lag_text(progress)) }
                nav id="ranges" {
                    "Range: "
                    @for choice in Range::EVERY {
                        @if choice == range {
                            a href={ "?range=" (choice.as_str()) } aria-current="page" { (choice.label()) }
                        } @else {
                            a href={ "?range=" (choice.as_str()) } { (choice.label()) }
                        }
                    }
                }
                @for c in &charts { (c) }
                @if range.hourly() {
                    h2 { "Per hour" }
                    table id="hourly" {
                        thead { tr { th { "hour (UTC)" } @for f in FIGURES { th { (f.replace('_', " ")) } } } }
                        tbody {
                            @for h in &w.hours {
                                tr data-hour=(h.hour) {
                                    td { (h.utc) }
                                    @for (f, c) in FIGURES.iter().zip(h.counts) { td data-figure=(f) { (c) } }
                                }
                            }
                        }
                    }
                }
                h2 { "Per day" }
                table id="daily" {
                    thead { tr { th { "day (UTC)" } th { "users" } @for f in FIGURES { th { (f.replace('_', " ")) } } } }
                    tbody {
                        @for d in &w.days {
                            tr data-day=(d.day) {
                                td { (d.utc) }
                                td data-figure="users" { (d.users) }
                                @for (f, c) in FIGURES.iter().zip(d.counts) { td data-figure=(f) { (c) } }
                            }
                        }
                    }
                }
                h2 { "Languages of posts" }
                table id="langs" {
                    thead { tr { th { "language" } th { "posts" } } }
                    tbody {
                        @for l in &w.langs {
                            tr data-lang=(l.lang) { td { (l.lang) } td data-figure="posts" { (l.posts) } }
                        }
                    }
                }
                p id="downloads" {
                    "This range as JSON: "
                    @for (name, path) in [("hourly", "api/hourly"), ("daily", "api/daily"), ("dau", "api/dau"), ("langs", "api/langs")] {
                        a href={ (path) "?range=" (r) } { (name) } " "
                    }
                    "; as CSV: "
                    @for (name, path) in [("hourly", "api/hourly.csv"), ("daily", "api/daily.csv"), ("dau", "api/dau.csv"), ("langs", "api/langs.csv")] {
                        a href={ (path) "?range=" (r) } { (name) } " "
                    }
                    "; " a href="api/status" { "status" } ", " a href="metrics" { "metrics" } "."
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    })
}
