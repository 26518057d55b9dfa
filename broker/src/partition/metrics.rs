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
    metrics::gauge!("broker_partition_replicas").set(counts.hosted as f64);
    metrics::gauge!("broker_partitions_led").set(counts.led as f64);
    metrics::gauge!("broker_partitions_under_replicated").set(counts.under_replicated as f64);
    metrics::gauge!("broker_partition_replicas_without_leader").set(counts.without_leader as f64);
    metrics::gauge!("broker_partition_replicas_quiet").set(counts.quiet as f64);
    metrics::gauge!("broker_partition_replicas_held_from_elections").set(counts.held_from_elections as f64);
}
