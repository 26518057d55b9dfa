//! Gauges of the partition replicas this broker hosts, sampled from their status just before a
//! Prometheus scrape (cheaper than updating them on every change, and never stale at scrape
//! time). Labels are bounded: per broker only, never per topic or partition, so a broker with
//! 10,000 partitions exports the same handful of series as one with ten.

use super::PartitionManager;
use crate::replication::IsrBounds;

/// Counts over every hosted replica; what each gauge means is in `docs/operations.md`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaCounts {
    /// Replicas hosted.
    pub hosted: u64,
    /// Replicas that lead their partition.
    pub led: u64,
    /// Led partitions whose in-sync replicas are fewer than their voters.
    pub under_replicated: u64,
    /// Replicas that know no leader.
    pub without_leader: u64,
    /// Replicas whose group is quiet (Raft timers stopped).
    pub quiet: u64,
    /// Replicas held out of elections after losing acknowledged entries.
    pub held_from_elections: u64,
}

/// The gauges and their help texts.
const GAUGES: [(&str, &str); 6] = [
    (
        "broker_partition_replicas",
        "Partition replicas hosted (the controller group not counted).",
    ),
    ("broker_partitions_led", "Partitions this broker leads."),
    (
        "broker_partitions_under_replicated",
        "Led partitions whose in-sync replicas are fewer than their voters.",
    ),
    (
        "broker_partition_replicas_without_leader",
        "Hosted replicas that know no leader.",
    ),
    (
        "broker_partition_replicas_quiet",
        "Replicas whose group is quiet (Raft timers stopped).",
    ),
    (
        "broker_partition_replicas_held_from_elections",
        "Replicas held out of elections after losing acknowledged entries.",
    ),
];

/// Registers the gauges with their help texts, at zero until the first scrape samples them.
pub fn describe() {
    for (name, help) in GAUGES {
        metrics::describe_gauge!(name, metrics::Unit::Count, help);
        metrics::gauge!(name).set(0.0);
    }
}

/// Samples every replica's status and sets the gauges.
pub fn record(partitions: &PartitionManager, bounds: IsrBounds) {
    let mut counts = ReplicaCounts::default();
    for (_, replica) in partitions.replicas() {
        let status = replica.status(bounds);
        counts.hosted += 1;
        if status.is_leader {
            counts.led += 1;
            if status.isr.len() < status.voters.len() {
                counts.under_replicated += 1;
            }
        }
        if status.leader.is_none() {
            counts.without_leader += 1;
        }
        if status.quiescent {
            counts.quiet += 1;
        }
        if status.held_from_elections {
            counts.held_from_elections += 1;
        }
    }
    let values = [
        counts.hosted,
        counts.led,
        counts.under_replicated,
        counts.without_leader,
        counts.quiet,
        counts.held_from_elections,
    ];
    for ((name, _), value) in GAUGES.iter().zip(values) {
        metrics::gauge!(*name).set(value as f64);
    }
}
