//! The Raft timers of partition groups ([`RaftTimers`]) and the openraft configuration they
//! make, with why each non-default openraft setting is what it is.

use super::ReplicationError;
use openraft::SnapshotPolicy;
use std::sync::Arc;

/// Raft timers of partition groups. A follower only votes for a new leader once the old
/// leader's lease (openraft uses `election_timeout_max`) has expired, so failover takes roughly
/// one to two election timeouts: the defaults aim at ≤ 1.5 s. Shorter timers cost idle CPU per
/// group (heartbeats), which coalescing per peer is meant to pay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimers {
    /// Leader heartbeat period (ms).
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout (ms).
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout (ms).
    pub election_timeout_max_ms: u64,
    /// A partition group idle this long (no writes, no reads, every follower caught up) stops
    /// its Raft timers until something wakes it (ms; 0 = never). See `replication::quiesce`.
    pub quiesce_after_ms: u64,
    /// A replica whose group has been quiet this long puts its Raft node to sleep — no openraft
    /// instance, ~10x less memory — until a request or a wake needs it (ms; 0 = never). Needs
    /// quiescence. See `replication::raft_node`.
    pub dormant_after_ms: u64,
}

impl Default for RaftTimers {
    fn default() -> Self {
        RaftTimers {
            heartbeat_ms: 150,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 750,
            quiesce_after_ms: 1000,
            dormant_after_ms: 10_000,
        }
    }
}

impl RaftTimers {
    /// The openraft configuration for a partition group with these timers.
    pub fn raft_config(&self, cluster_name: &str) -> Result<Arc<openraft::Config>, ReplicationError> {
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Retention, not openraft, decides when log data may go (docs/architecture.md).
            snapshot_policy: SnapshotPolicy::Never,
            // A follower whose disk lost acknowledged entries (a torn or corrupted tail cut at
            // recovery) comes back with a shorter log than it once acknowledged. By default the
            // leader treats that as a bug and its Raft core panics, taking the partition down;
            // allowed, the leader re-replicates the missing entries (found by the nemesis test).
            allow_log_reversion: Some(true),
            // A restarted leader does not resume its old term: leading again takes an election.
            // Resumed, it handed the log ids of entries its torn tail had lost to new batches
            // while followers kept the originals under the same ids (nemesis seed 4), and its
            // producer table lacked the batches it had proposed and not yet applied.
            enable_leader_restore: Some(false),
            // A candidate first asks whether it would win, without raising its term: a replica
            // that was cut off (or restarted beside quiet groups) cannot depose a live leader
            // by coming back with a higher term.
            enable_pre_vote: Some(true),
            ..openraft::Config::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|e| ReplicationError::InvalidTimers(e.to_string()))
    }
}
