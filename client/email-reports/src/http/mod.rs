//! # HTTP: the service's one listener
//!
//! **Owns:** the routes — `POST /webhooks/{provider}` ([`ingest`]), the reports API under
//! `/v1` ([`reports`]), `/health` and `/v1/status` (this instance's progress) — and the JSON
//! error shape every route answers with: `{"error": "..."}`.

pub mod ingest;
pub mod jobs;
pub mod reports;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::reports::store::Store;

/// A JSON error with `status`.
pub fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The routes. `ingest` is `None` on an instance that serves reports only.
pub fn router(
    store: Store,
    jobs: crate::jobs::Jobs,
    ingest: Option<Arc<ingest::Ingest>>,
    partitions: u32,
    max_body_bytes: usize,
) -> Router {
    let reports = Router::new()
        .route("/v1/tenants", get(reports::tenants))
        .route("/v1/tenants/{tenant}", get(reports::tenant))
        .route("/v1/tenants/{tenant}/campaigns", get(reports::tenant_campaigns))
        .route("/v1/tenants/{tenant}/suppressions", get(reports::suppressions))
        .route("/v1/campaigns/{campaign}", get(reports::campaign))
        .route("/v1/campaigns/{campaign}/daily", get(reports::campaign_daily))
        .route("/v1/campaigns/{campaign}/engaged", get(reports::engaged))
        .route("/v1/alerts", get(reports::alerts))
        .route("/v1/status", get(status))
        .with_state(store)
        .layer(axum::Extension(Partitions(partitions)));
    let jobs = Router::new()
        .route("/v1/rebuilds", post(jobs::start_rebuild))
        .route("/v1/tenants/{tenant}/exports", post(jobs::start_export))
        .route("/v1/jobs/{id}", get(jobs::job))
        .route("/v1/jobs/{id}/result", get(jobs::job_result))
        .with_state(jobs);
    let mut router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .merge(reports)
        .merge(jobs);
    if let Some(ingest) = ingest {
        router = router.merge(
            Router::new()
                .route("/webhooks/{provider}", post(ingest::webhook).head(ingest::probe))
                .with_state(ingest)
                .layer(DefaultBodyLimit::max(max_body_bytes))
                .layer(axum::middleware::map_response(close_after_refused_body)),
        );
    }
    router.fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such route".into()) })
}

/// A body refused for its size (413) is left unread, so the server drops the connection after
/// answering; saying so (`Connection: close`) keeps the client from sending its next request
/// on it — without it a client that pools connections (providers' do) could get its next
/// request cut off by that close, a race the pipeline test met in CI.
async fn close_after_refused_body(mut response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}

#[derive(Clone, Copy)]
struct Partitions(u32);

/// `GET /v1/status`: per partition, the next source offset counted and the changelog applied.
async fn status(
    State(store): State<Store>,
    axum::Extension(Partitions(partitions)): axum::Extension<Partitions>,
) -> Response {
    let partitions: Vec<_> = (0..partitions)
        .map(|partition| {
            json!({
                "partition": partition,
                "next_offset": store.next_offset(partition),
                "changelog_position": store.changelog_position(partition),
            })
        })
        .collect();
    Json(json!({ "partitions": partitions })).into_response()
}
