//! Space on the filesystem holding the broker's data directory, sampled at scrape time:
//! `broker_data_dir_available_bytes` (what an unprivileged writer can still use) and
//! `broker_data_dir_capacity_bytes`. The "disk above 85 %" alert divides the two, so it needs
//! no node exporter beside the broker.

use std::path::Path;

/// Registers the gauges with their help texts.
pub fn describe() {
    metrics::describe_gauge!(
        "broker_data_dir_available_bytes",
        metrics::Unit::Bytes,
        "Bytes still available to the broker on the filesystem of its data directory."
    );
    metrics::describe_gauge!(
        "broker_data_dir_capacity_bytes",
        metrics::Unit::Bytes,
        "Size of the filesystem holding the broker's data directory."
    );
}

/// Samples the filesystem of `data_dir` and sets the gauges (left as they were if it cannot be
/// read, with a warning: a scrape must not fail because of it).
pub fn record(data_dir: &Path) {
    match rustix::fs::statvfs(data_dir) {
        Ok(stats) => {
            metrics::gauge!("broker_data_dir_available_bytes").set((stats.f_bavail * stats.f_frsize) as f64);
            metrics::gauge!("broker_data_dir_capacity_bytes").set((stats.f_blocks * stats.f_frsize) as f64);
        }
        Err(error) => tracing::warn!(%error, dir = %data_dir.display(), "cannot read the data directory's filesystem"),
    }
}
