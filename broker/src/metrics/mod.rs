//! Metrics of the broker process: the Prometheus recorder behind the `metrics` facade and the
//! admin HTTP endpoint that serves it (`/metrics`, `/health`, `/ready`).
//!
//! Owns: the one process-wide recorder ([`recorder`]), its histogram buckets, and the admin
//! listener ([`endpoint`]), and the per-request counts and latencies measured around the gRPC
//! server ([`requests`]). Subsystems record through the `metrics` macros in their own
//! `metrics.rs` (e.g. `storage/metrics.rs`); nothing here knows their names. Pure cores record
//! nothing.
//!
//! Invariants: the recorder is installed at most once per process (a process may run several
//! nodes in tests; they share it); rendering never blocks a data path (the facade's handles are
//! atomics, the render copies them).
//!
//! Must not depend on: storage, replication or the controller — the endpoint learns readiness
//! through a closure the node gives it.

pub mod disk;
pub mod endpoint;
pub mod labels;
pub mod requests;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Bucket bounds (seconds) of every `*_seconds` histogram: 100 µs … 10 s, roughly ×2.5 apart,
/// so an fsync (≈3 ms median here) and a produce under load (tens of ms) both land mid-range.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes (the
/// exporter keeps raw samples until then, so without this memory would grow between scrapes).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed as the global `metrics` recorder on first use.
/// `None` when another global recorder was installed first (a library embedding the broker);
/// the endpoint then answers 503 on `/metrics` instead of serving an empty page.
pub fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("bucket bounds are non-empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    let upkeep = handle.clone();
                    std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || loop {
                            std::thread::sleep(UPKEEP_INTERVAL);
                            upkeep.run_upkeep();
                        })
                        .expect("spawning the metrics upkeep thread");
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "a metrics recorder is already installed; /metrics is off");
                    None
                }
            }
        })
        .as_ref()
}
