//! Replication metrics, recorded through the `metrics` facade (served on the broker's admin
//! endpoint, `/metrics`, when it has one: `crate::metrics`): how long acks=all proposals take
//! to commit. Gauges of replica state are sampled by `crate::partition` from
//! [`ReplicaStatus`](super::ReplicaStatus) instead, so openraft stays inside this module.

use std::time::Duration;

/// An acks=all proposal was committed and applied on this leader `took` after it was proposed.
pub fn commit_latency(took: Duration) {
    metrics::histogram!("broker_raft_commit_duration_seconds").record(took);
}

/// Registers the histogram with its help text (empty until the first commit), so a scrape shows
/// it from the start. Called once by the node after it installs the recorder.
pub fn describe() {
    metrics::describe_histogram!(
        "broker_raft_commit_duration_seconds",
        metrics::Unit::Seconds,
        "Time from proposing an acks=all batch to its commit and apply on this leader."
    );
    let _ = metrics::histogram!("broker_raft_commit_duration_seconds");
}
