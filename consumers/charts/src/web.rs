//! The web side: the page (`GET /`), the same figures as JSON (`/api/hourly`, `/api/dau`,
//! `/api/langs`, `/api/status`) and `/metrics`, all read from the database through a
//! read-only connection per request. `?days=N` (1–31, default `http.days`) sets the window:
//! the N UTC days up to the newest hour with data.
//!
//! The page carries its figures twice: drawn as SVG ([`crate::svg`]) and as tables, so a
//! reader (or a test) can check the numbers. A few lines of inline script, our own, record
//! in `body[data-charts-drawn]` how many charts the browser laid out with visible marks.

use crate::handler::FIGURES;
use crate::query::{self, Window};
use crate::svg::{self, Series};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use kit::Progress;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Most days one request may ask for.
pub const MAX_DAYS: u32 = 31;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#ff7f0e",
];

/// What the handlers share.
pub struct AppState {
    /// The charts database.
    pub db: PathBuf,
    /// Where the consumer stands.
    pub progress: watch::Receiver<Progress>,
    /// Default window, in days.
    pub days: u32,
    /// Where the stream's events come from.
    pub upstream: crate::config::UpstreamLabel,
}

/// `?days=N`
#[derive(serde::Deserialize)]
pub struct Params {
    days: Option<u32>,
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/hourly", get(hourly))
        .route("/api/dau", get(dau))
        .route("/api/langs", get(langs))
        .route("/api/status", get(status))
        .with_state(state)
}

async fn load(state: &AppState, p: &Params) -> Result<Window, Response> {
    let days = p.days.unwrap_or(state.days).clamp(1, MAX_DAYS);
    let db = state.db.clone();
    let result = tokio::task::spawn_blocking(move || {
        if !db.is_file() {
            return Err("no data yet".to_string());
        }
        let conn = kit::state::open_reader(&db).map_err(|e| e.to_string())?;
        query::window(&conn, days).map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the charts database");
            Err((StatusCode::SERVICE_UNAVAILABLE, e).into_response())
        }
        Err(e) => Err((StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()),
    }
}

async fn hourly(State(s): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    match load(&s, &p).await {
        Ok(w) => Json(serde_json::json!({
            "from": w.from, "to": w.to, "figures": FIGURES, "hours": w.hours,
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn dau(State(s): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    match load(&s, &p).await {
        Ok(w) => Json(serde_json::json!({ "days": w.days })).into_response(),
        Err(r) => r,
    }
}

async fn langs(State(s): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    match load(&s, &p).await {
        Ok(w) => Json(serde_json::json!({ "from": w.from, "to": w.to, "langs": w.langs }))
            .into_response(),
        Err(r) => r,
    }
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    let p = s.progress.borrow().clone();
    Json(serde_json::json!({
        "progress": p,
        "behind_seconds": p.behind_us() / 1_000_000,
        "text": status_text(&p),
        "upstream": s.upstream,
    }))
    .into_response()
}

/// "Data up to 2026-07-04 14:05 UTC, 3 min behind the stream."
pub fn status_text(p: &Progress) -> String {
    let Some(t) = p.time_us else {
        return "No data yet.".into();
    };
    let up_to = query::utc_minute(t.div_euclid(1_000_000));
    if !p.known {
        return format!("Data up to {up_to} (the stream's position is not known yet).");
    }
    let behind = p.behind_us() / 1_000_000;
    let lag = match behind {
        0 if p.pending == 0 => "up to date with the stream".to_string(),
        0..=59 => format!("{behind} s behind the stream"),
        60..=3599 => format!("{} min behind the stream", behind / 60),
        _ => format!(
            "{} h {} min behind the stream",
            behind / 3600,
            behind % 3600 / 60
        ),
    };
    let mut text = format!("Data up to {up_to}, {lag}.");
    if p.lost > 0 {
        let _ = write!(
            text,
            " {} stream messages were dropped by the stream's retention before they were read: the figures miss at most that many.",
            p.lost
        );
    }
    text
}

async fn page(State(s): State<Arc<AppState>>, Query(p): Query<Params>) -> Response {
    let w = match load(&s, &p).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let progress = s.progress.borrow().clone();
    Html(render(&w, &progress, s.upstream)).into_response()
}

/// The whole page.
pub fn render(w: &Window, progress: &Progress, upstream: crate::config::UpstreamLabel) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Bluesky activity charts</title><style>
body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}figure{margin:0 0 1em}
</style></head><body><h1>Bluesky activity</h1>"#,
    );
    if upstream == crate::config::UpstreamLabel::Staging {
        out.push_str(
            r#"<p id="upstream" style="background:#fe8;padding:.4em">Staging data: a recorded capture replayed locally, not the live network.</p>"#,
        );
    }
    let _ = write!(
        out,
        r#"<p id="status">{}</p>"#,
        svg::esc(&status_text(progress))
    );
    let last_hour = w.to - 3600;
    let series = |idx: &[usize]| -> Vec<Series<'static>> {
        idx.iter()
            .map(|&i| Series {
                name: FIGURES[i],
                color: COLORS[i],
                points: w.hours.iter().map(|h| (h.hour, h.counts[i])).collect(),
            })
            .collect()
    };
    let hour_label = |x: i64| {
        let t = query::utc_hour(x);
        t[5..16].replace('T', " ")
    };
    for (id, title, idx) in [
        (
            "chart-activity",
            "Per hour (UTC, event time)",
            &[0usize, 1, 2, 3][..],
        ),
        (
            "chart-accounts",
            "Per hour (UTC, event time)",
            &[4, 5, 6, 7][..],
        ),
    ] {
        let _ = write!(
            out,
            r#"<figure id="{id}">{}</figure>"#,
            svg::lines(title, &series(idx), (w.from, last_hour), 3600, hour_label)
        );
    }
    let dau: Vec<(String, i64)> = w.days.iter().map(|d| (d.utc.clone(), d.users)).collect();
    let _ = write!(
        out,
        r#"<figure id="chart-dau">{}</figure>"#,
        svg::bars(
            "Daily active users (distinct DIDs with a commit, UTC day)",
            &dau,
            "#1f77b4"
        )
    );
    let langs: Vec<(String, i64)> = w
        .langs
        .iter()
        .take(15)
        .map(|l| (l.lang.clone(), l.posts))
        .collect();
    let _ = write!(
        out,
        r#"<figure id="chart-langs">{}</figure>"#,
        svg::bars("Languages of posts (first 15)", &langs, "#2ca02c")
    );

    out.push_str(r#"<h2>Per hour</h2><table id="hourly"><thead><tr><th>hour (UTC)</th>"#);
    for f in FIGURES {
        let _ = write!(out, "<th>{}</th>", f.replace('_', " "));
    }
    out.push_str("</tr></thead><tbody>");
    for h in &w.hours {
        let _ = write!(out, r#"<tr data-hour="{}"><td>{}</td>"#, h.hour, h.utc);
        for (f, c) in FIGURES.iter().zip(h.counts) {
            let _ = write!(out, r#"<td data-figure="{f}">{c}</td>"#);
        }
        out.push_str("</tr>");
    }
    out.push_str(r#"</tbody></table><h2>Daily active users</h2><table id="daily"><thead><tr><th>day (UTC)</th><th>users</th></tr></thead><tbody>"#);
    for d in &w.days {
        let _ = write!(
            out,
            r#"<tr data-day="{}"><td>{}</td><td data-figure="users">{}</td></tr>"#,
            d.day, d.utc, d.users
        );
    }
    out.push_str(r#"</tbody></table><h2>Languages of posts</h2><table id="langs"><thead><tr><th>language</th><th>posts</th></tr></thead><tbody>"#);
    for l in &w.langs {
        let _ = write!(
            out,
            r#"<tr data-lang="{l}"><td>{l}</td><td data-figure="posts">{}</td></tr>"#,
            l.posts,
            l = svg::esc(&l.lang)
        );
    }
    out.push_str(
        r#"</tbody></table><p>JSON: <a href="api/hourly">hourly</a>, <a href="api/dau">dau</a>, <a href="api/langs">langs</a>, <a href="api/status">status</a>; <a href="metrics">metrics</a>.</p>
<script>
// Count the charts the browser laid out with at least one visible mark.
var drawn = 0;
document.querySelectorAll("figure svg").forEach(function (svg) {
  var marks = svg.querySelectorAll(".mark"), ok = marks.length > 0;
  marks.forEach(function (m) { var b = m.getBBox(); if (!(b.width > 0 || b.height > 0)) ok = false; });
  if (ok) drawn++;
});
document.body.setAttribute("data-charts-drawn", String(drawn));
</script></body></html>"#,
    );
    out
}
