//! The HTTP side, as the AT Protocol feed-generator spec describes it:
//!
//! - `GET /xrpc/app.bsky.feed.getFeedSkeleton?feed=<at-uri>&limit=1..100&cursor=…` →
//!   `{"feed":[{"post":"at://…"}],"cursor":"…"}` (no `cursor` at the feed's end);
//! - `GET /xrpc/app.bsky.feed.describeFeedGenerator` → `{"did":…,"feeds":[{"uri":…}]}`;
//! - `GET /.well-known/did.json`: the `did:web` document naming the service endpoint;
//! - `GET /status`: where the index stands against the stream ([`kit::Progress`]: its
//!   position, the stream's last sequence, what is pending, how far behind in event time);
//! - `GET /healthz`, `GET /metrics` (merged in by [`crate::run`]).
//!
//! Errors are XRPC error bodies `{"error","message"}`: a bad parameter is 400
//! `InvalidRequest`, a feed this service does not serve is 400 `UnknownFeed`, an
//! unreadable index 500 `InternalServerError`, another XRPC method 501
//! `MethodNotImplemented`.

use crate::metrics::{Endpoint, Metrics, Status};
use crate::query::{Cursor, Readers};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use kit::Progress;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

/// `limit` when the request does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest `limit`.
pub const MAX_LIMIT: u32 = 100;

/// What the handlers share.
pub struct AppState {
    /// The index, read-only.
    pub readers: Readers,
    /// The served feeds, in configuration order: (at-uri, `feeds.id`).
    pub feeds: Vec<(String, i64)>,
    /// The service's DID.
    pub did: String,
    /// Where the service is reached (`did.json`'s `serviceEndpoint`).
    pub endpoint: String,
    /// Request counts and latency.
    pub metrics: Metrics,
    /// Where the consumer stands.
    pub progress: watch::Receiver<Progress>,
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/xrpc/app.bsky.feed.getFeedSkeleton", get(skeleton))
        .route("/xrpc/app.bsky.feed.describeFeedGenerator", get(describe))
        .route("/xrpc/{method}", get(not_implemented).post(not_implemented))
        .route("/.well-known/did.json", get(did_json))
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// An XRPC error answer.
fn error(code: StatusCode, name: &str, message: impl Into<String>) -> Response {
    (
        code,
        Json(json!({ "error": name, "message": message.into() })),
    )
        .into_response()
}

/// The checked parameters of `getFeedSkeleton`.
#[derive(Debug, PartialEq, Eq)]
pub struct Params {
    /// The feed's at-uri.
    pub feed: String,
    /// 1–100.
    pub limit: u32,
    /// Where the page starts.
    pub cursor: Option<Cursor>,
}

/// A bad request: the XRPC error name and message.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub &'static str, pub String);

impl Params {
    /// Parses a query string; the error says which parameter is wrong.
    pub fn parse(query: &str) -> Result<Params, BadRequest> {
        let invalid = |m: String| BadRequest("InvalidRequest", m);
        let mut seen: HashMap<String, String> = HashMap::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if seen.insert(k.to_string(), v.to_string()).is_some()
                && matches!(&*k, "feed" | "limit" | "cursor")
            {
                return Err(invalid(format!("{k} is given twice")));
            }
        }
        let feed = seen
            .remove("feed")
            .ok_or_else(|| invalid("Params must have the property \"feed\"".into()))?;
        if !feed.starts_with("at://") {
            return Err(invalid(format!("feed must be an at-uri, got {feed:?}")));
        }
        let limit = match seen.remove("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    invalid(format!(
                        "limit must be an integer from 1 to {MAX_LIMIT}, got {l:?}"
                    ))
                })?,
        };
        let cursor = match seen.remove("cursor") {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => Some(Cursor::decode(&c).ok_or_else(|| invalid("malformed cursor".into()))?),
        };
        Ok(Params {
            feed,
            limit,
            cursor,
        })
    }
}

async fn skeleton(State(s): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let start = Instant::now();
    let ep = Endpoint::GetFeedSkeleton;
    let p = match Params::parse(q.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(BadRequest(name, message)) => {
            s.metrics.request(ep, Status::InvalidRequest);
            return error(StatusCode::BAD_REQUEST, name, message);
        }
    };
    let Some(&(_, feed)) = s.feeds.iter().find(|(uri, _)| *uri == p.feed) else {
        s.metrics.request(ep, Status::UnknownFeed);
        return error(
            StatusCode::BAD_REQUEST,
            "UnknownFeed",
            format!("this service does not serve {}", p.feed),
        );
    };
    let state = s.clone();
    let page =
        tokio::task::spawn_blocking(move || state.readers.page(feed, p.limit, p.cursor)).await;
    let response = match page {
        Ok(Ok(page)) => {
            s.metrics.request(ep, Status::Ok);
            let posts: Vec<_> = page.posts.iter().map(|u| json!({ "post": u })).collect();
            let body = match page.cursor {
                Some(c) => json!({ "feed": posts, "cursor": c.encode() }),
                None => json!({ "feed": posts }),
            };
            Json(body).into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "getFeedSkeleton");
            s.metrics.request(ep, Status::Unavailable);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "the index cannot be read",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "getFeedSkeleton task");
            s.metrics.request(ep, Status::Unavailable);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "internal error",
            )
        }
    };
    s.metrics
        .skeleton_seconds
        .observe(start.elapsed().as_secs_f64());
    response
}

async fn describe(State(s): State<Arc<AppState>>) -> Response {
    s.metrics
        .request(Endpoint::DescribeFeedGenerator, Status::Ok);
    let feeds: Vec<_> = s
        .feeds
        .iter()
        .map(|(uri, _)| json!({ "uri": uri }))
        .collect();
    Json(json!({ "did": s.did, "feeds": feeds })).into_response()
}

async fn did_json(State(s): State<Arc<AppState>>) -> Response {
    if !s.did.starts_with("did:web:") {
        s.metrics.request(Endpoint::DidJson, Status::NotFound);
        return error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "{} is not a did:web; its document is not served here",
                s.did
            ),
        );
    }
    s.metrics.request(Endpoint::DidJson, Status::Ok);
    Json(json!({
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": s.did,
        "service": [{
            "id": "#bsky_fg",
            "type": "BskyFeedGenerator",
            "serviceEndpoint": s.endpoint,
        }],
    }))
    .into_response()
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    let p = s.progress.borrow().clone();
    Json(json!({ "progress": p, "behind_seconds": p.behind_us() / 1_000_000 })).into_response()
}

async fn not_implemented() -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "MethodNotImplemented",
        "this service answers app.bsky.feed.getFeedSkeleton and describeFeedGenerator only",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let feed = "at%3A%2F%2Fdid%3Aweb%3Alocalhost%2Fapp.bsky.feed.generator%2Frust";
        let p = Params::parse(&format!("feed={feed}")).expect("ok");
        assert_eq!(
            p.feed,
            "at://did:web:localhost/app.bsky.feed.generator/rust"
        );
        assert_eq!((p.limit, p.cursor), (DEFAULT_LIMIT, None));
        let c = Cursor {
            sort_at: 7,
            post: 9,
        };
        let p = Params::parse(&format!("feed={feed}&limit=100&cursor={}", c.encode())).expect("ok");
        assert_eq!((p.limit, p.cursor), (100, Some(c)));
        for bad in [
            String::new(),
            "limit=5".into(),
            "feed=rust".into(),
            format!("feed={feed}&limit=0"),
            format!("feed={feed}&limit=101"),
            format!("feed={feed}&limit=ten"),
            format!("feed={feed}&limit=-1"),
            format!("feed={feed}&cursor=nonsense"),
            format!("feed={feed}&feed={feed}"),
        ] {
            let e = Params::parse(&bad).expect_err(&bad);
            assert_eq!(e.0, "InvalidRequest", "{bad}");
        }
    }
}
