//! The job routes: start a rebuild or an export (202 with the job), read a job, fetch an
//! export's CSV.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error_response;
use crate::jobs::{Job, JobStatus, Jobs};
use crate::reports::keys;

fn accepted(job: Job) -> Response {
    let location = format!("/v1/jobs/{}", job.id);
    (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(job)).into_response()
}

/// `POST /v1/rebuilds`: recompute the reports from the start of `email-events`.
pub async fn start_rebuild(State(jobs): State<Jobs>) -> Response {
    accepted(jobs.start_rebuild())
}

/// `POST /v1/tenants/{tenant}/exports`: the tenant's last 365 days as CSV.
pub async fn start_export(State(jobs): State<Jobs>, Path(tenant): Path<String>) -> Response {
    if !jobs.knows(&keys::tenant(&tenant)) {
        return error_response(StatusCode::NOT_FOUND, format!("unknown tenant {tenant:?}"));
    }
    accepted(jobs.start_export(&tenant))
}

/// `GET /v1/jobs/{id}`.
pub async fn job(State(jobs): State<Jobs>, Path(id): Path<String>) -> Response {
    match jobs.get(&id) {
        Some(job) => Json(job).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            format!("unknown job {id:?} (jobs are kept by the instance that accepted them)"),
        ),
    }
}

/// `GET /v1/jobs/{id}/result`: an export's CSV once it is done.
pub async fn job_result(State(jobs): State<Jobs>, Path(id): Path<String>) -> Response {
    let Some(job) = jobs.get(&id) else {
        return error_response(StatusCode::NOT_FOUND, format!("unknown job {id:?}"));
    };
    match (job.status, &job.result) {
        (JobStatus::Done, Some(path)) => match tokio::fs::read(path).await {
            Ok(csv) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response(),
            Err(error) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the export: {error}"),
            ),
        },
        (JobStatus::Done, None) => error_response(StatusCode::NOT_FOUND, format!("job {id} has no result")),
        (JobStatus::Running, _) => error_response(StatusCode::CONFLICT, format!("job {id} is still running")),
        (JobStatus::Failed, _) => error_response(
            StatusCode::CONFLICT,
            format!("job {id} failed: {}", job.error.unwrap_or_default()),
        ),
    }
}
