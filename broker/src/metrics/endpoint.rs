//! The admin HTTP listener of a broker (axum): `GET /metrics` (Prometheus text exposition),
//! `GET /health` (the process is up and answering) and `GET /ready` (the broker has joined the
//! cluster: a controller leader is known and this broker is registered). Probes of Kubernetes
//! and load balancers use the last two; they are cheap and never touch a data path.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Answers whether the broker is ready: `Ok(())`, or why not (shown in the 503 body).
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Runs just before each `/metrics` render, to refresh gauges sampled from live state
/// (partitions led, under-replicated, …) rather than updated on every change.
pub type BeforeScrape = Arc<dyn Fn() + Send + Sync>;

/// What the endpoint needs from the node.
#[derive(Clone)]
pub struct AdminProbes {
    /// Readiness.
    pub ready: ReadinessCheck,
    /// Gauge refresh before a scrape.
    pub before_scrape: BeforeScrape,
}

/// The Prometheus text format's content type (version 0.0.4 is what Prometheus negotiates for
/// plain text).
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    probes: AdminProbes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready));
    #[cfg(feature = "failpoints")]
    let router = router.route(
        "/failpoints/{name}",
        axum::routing::put(set_failpoint).delete(remove_failpoint),
    );
    let router = router.with_state(probes);
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn metrics(State(probes): State<AdminProbes>) -> Response {
    let Some(recorder) = super::recorder() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed in this process\n",
        )
            .into_response();
    };
    (probes.before_scrape)();
    ([(header::CONTENT_TYPE, EXPOSITION_CONTENT_TYPE)], recorder.render()).into_response()
}

/// `PUT /failpoints/{name}` with the `fail` crate's action in the body (e.g. `return(enospc)`):
/// turns a fault point on in this process. Only in builds with the `failpoints` feature.
#[cfg(feature = "failpoints")]
async fn set_failpoint(axum::extract::Path(name): axum::extract::Path<String>, actions: String) -> Response {
    match fail::cfg(name.clone(), actions.trim()) {
        Ok(()) => {
            tracing::warn!(failpoint = %name, actions = %actions.trim(), "fault point turned on");
            (StatusCode::OK, "on\n").into_response()
        }
        Err(reason) => (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response(),
    }
}

/// `DELETE /failpoints/{name}`: turns a fault point off.
#[cfg(feature = "failpoints")]
async fn remove_failpoint(axum::extract::Path(name): axum::extract::Path<String>) -> &'static str {
    fail::remove(&name);
    tracing::warn!(failpoint = %name, "fault point turned off");
    "off\n"
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(probes): State<AdminProbes>) -> Response {
    match (probes.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")).into_response(),
    }
}
