//! Gauges of the partition replicas this broker hosts, sampled from their status just before a
//! Prometheus scrape (cheaper than updating them on every change, and never stale at scrape
//! time): counts of replicas by state, and totals of their logs and producer tables. Labels are
//! bounded: per broker only, never per topic or partition, so a broker with 10,000 partitions
//! exports the same handful of series as one with ten (per-partition figures are in
//! `broker topic describe` / `broker cluster partitions`).

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
    /// Bytes of every hosted replica's log segments.
    pub log_size_bytes: u64,
    /// Segments of every hosted replica's log.
    pub log_segments: u64,
    /// Entries of every hosted replica's idempotent-producer table.
    pub producer_ids: u64,
    /// Replicas whose log failed an fsync (out of service until a restart).
    pub storage_failed: u64,
}

/// The gauges, their units and help texts, in the order of [`ReplicaCounts`]' fields.
const GAUGES: [(&str, metrics::Unit, &str); 10] = [
    (
        "broker_partition_replicas",
        metrics::Unit::Count,
        "Partition replicas hosted (the controller group not counted).",
    ),
    (
        "broker_partitions_led",
        metrics::Unit::Count,
        "Partitions this broker leads.",
    ),
    (
        "broker_partitions_under_replicated",
        metrics::Unit::Count,
        "Led partitions whose in-sync replicas are fewer than their voters.",
    ),
    (
        "broker_partition_replicas_without_leader",
        metrics::Unit::Count,
        "Hosted replicas that know no leader.",
    ),
    (
        "broker_partition_replicas_quiet",
        metrics::Unit::Count,
        "Replicas whose group is quiet (Raft timers stopped).",
    ),
    (
        "broker_partition_replicas_held_from_elections",
        metrics::Unit::Count,
        "Replicas held out of elections after losing acknowledged entries.",
    ),
    (
        "broker_log_size_bytes",
        metrics::Unit::Bytes,
        "Bytes of the log segments of every hosted partition replica (indexes aside).",
    ),
    (
        "broker_log_segments",
        metrics::Unit::Count,
        "Log segments of every hosted partition replica.",
    ),
    (
        "broker_producer_ids",
        metrics::Unit::Count,
        "Idempotent producers tracked, summed over the producer tables of every hosted replica.",
    ),
    (
        "broker_partition_replicas_storage_failed",
        metrics::Unit::Count,
        "Replicas whose log failed an fsync: out of service until the broker restarts.",
    ),
];

/// Registers the gauges with their help texts, at zero until the first scrape samples them.
pub fn describe() {
    for (name, unit, help) in GAUGES {
        metrics::describe_gauge!(name, unit, help);
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
        counts.log_size_bytes += status.log_size_bytes;
        counts.log_segments += status.log_segments;
        counts.producer_ids += status.producer_ids;
        if status.storage_failed {
            counts.storage_failed += 1;
        }
    }
    let values = [
        counts.hosted,
        counts.led,
        counts.under_replicated,
        counts.without_leader,
        counts.quiet,
        counts.held_from_elections,
        counts.log_size_bytes,
        counts.log_segments,
        counts.producer_ids,
        counts.storage_failed,
    ];
    for ((name, _, _), value) in GAUGES.iter().zip(values) {
        metrics::gauge!(*name).set(value as f64);
    }
}
