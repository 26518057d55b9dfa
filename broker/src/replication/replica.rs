//! A partition replica: the segment log, the state machine and the openraft node of one
//! partition on this broker, with the operations the API layer needs (append with acks=all,
//! read up to the high watermark, leadership).

use super::log_store::PartitionLogStore;
use super::network::{GroupNetworkFactory, PeerChannels};
use super::raft_service::{PartitionRaftNode, RaftGroups};
use super::state_machine::PartitionStateMachine;
use super::types::RecordBatchPayload;
use crate::storage::{FlushHandle, LogConfig, Offset, SegmentLog, StorageError, StoredEntry};
use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Errors of replicated operations.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// This replica is not the leader; `leader` is the current one if known. Retriable there.
    #[error("not the leader of group {group}; leader is {leader:?}")]
    NotLeader {
        /// The Raft group.
        group: u64,
        /// The leader's node id, if known.
        leader: Option<u64>,
    },
    /// The local log failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The Raft node stopped or refused the request for another reason.
    #[error("raft group {group}: {message}")]
    Raft {
        /// The Raft group.
        group: u64,
        /// What openraft said.
        message: String,
    },
    /// Waiting for a condition took longer than allowed.
    #[error("raft group {group}: timed out waiting for {what}")]
    Timeout {
        /// The Raft group.
        group: u64,
        /// What was waited for.
        what: String,
    },
}

/// Raft timers of partition groups. Defaults aim at failover well under 1.5 s while keeping
/// idle groups cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimers {
    /// Leader heartbeat period (ms).
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout (ms).
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout (ms).
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTimers {
    fn default() -> Self {
        RaftTimers {
            heartbeat_ms: 250,
            election_timeout_min_ms: 800,
            election_timeout_max_ms: 1200,
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
            ..openraft::Config::default()
        };
        config.validate().map(Arc::new).map_err(|e| ReplicationError::Raft {
            group: 0,
            message: format!("invalid raft timers: {e}"),
        })
    }
}

/// One partition replica on this broker.
pub struct PartitionReplica {
    group: u64,
    raft: PartitionRaftNode,
    log: Arc<RwLock<SegmentLog>>,
    applied_next_offset: Arc<AtomicU64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl PartitionReplica {
    /// Opens the log in `dir` and starts the Raft node of `group`, reachable through `groups`.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        node_id: u64,
        group: u64,
        dir: &Path,
        log_config: LogConfig,
        flush: FlushHandle,
        peers: PeerChannels,
        groups: &RaftGroups,
        raft_config: Arc<openraft::Config>,
    ) -> Result<PartitionReplica, ReplicationError> {
        let (log, report) = SegmentLog::open(dir, log_config, flush, now_ms())?;
        if report.truncated_bytes > 0 || report.rebuilt_indexes > 0 {
            tracing::warn!(group, ?report, "partition log recovered");
        }
        let store = PartitionLogStore::new(log);
        let log = store.log();
        let state_machine = PartitionStateMachine::new();
        let applied_next_offset = state_machine.applied_next_offset();
        let network = GroupNetworkFactory::new(group, peers);
        let raft = openraft::Raft::new(node_id, raft_config, network, store, state_machine)
            .await
            .map_err(|e| ReplicationError::Raft {
                group,
                message: e.to_string(),
            })?;
        groups.insert(group, raft.clone());
        Ok(PartitionReplica {
            group,
            raft,
            log,
            applied_next_offset,
        })
    }

    /// Forms the group with `members` (node id → Raft address) if it has never been formed;
    /// a no-op on a group that already has a membership.
    pub async fn bootstrap(&self, members: BTreeMap<u64, String>) -> Result<(), ReplicationError> {
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, address)| (id, BasicNode { addr: address }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ReplicationError::Raft {
                group: self.group,
                message: e.to_string(),
            }),
        }
    }

    /// Appends `batch` and answers once it is committed — a majority holds it durably (per the
    /// topic's fsync policy) — with the offset of its first record. This is `acks=all`.
    pub async fn append_committed(&self, batch: Bytes) -> Result<Offset, ReplicationError> {
        match self.raft.client_write(RecordBatchPayload(batch)).await {
            Ok(response) => response
                .data
                .map(|applied| applied.base_offset)
                .ok_or_else(|| ReplicationError::Raft {
                    group: self.group,
                    message: "a data entry applied without an offset".into(),
                }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => Err(ReplicationError::NotLeader {
                group: self.group,
                leader: forward.leader_id,
            }),
            Err(e) => Err(ReplicationError::Raft {
                group: self.group,
                message: e.to_string(),
            }),
        }
    }

    /// The high watermark: the offset after the last committed (and applied) record.
    pub fn high_watermark(&self) -> Offset {
        Offset(self.applied_next_offset.load(Ordering::Acquire))
    }

    /// Batches from `from` on, never past the high watermark.
    pub fn read_committed(&self, from: Offset, max_bytes: usize) -> Result<Vec<StoredEntry>, ReplicationError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().map_err(|_| ReplicationError::Raft {
            group: self.group,
            message: "log lock poisoned".into(),
        })?;
        Ok(log.read_batches(from, max_bytes, high_watermark)?)
    }

    /// Every entry in the local log (committed or not), for replica comparisons in tests and
    /// diagnostics.
    pub fn local_entries(&self) -> Result<Vec<StoredEntry>, ReplicationError> {
        let log = self.log.read().map_err(|_| ReplicationError::Raft {
            group: self.group,
            message: "log lock poisoned".into(),
        })?;
        Ok(log.read_entries(crate::storage::RaftIndex(0), crate::storage::RaftIndex(u64::MAX))?)
    }

    /// The current leader as this replica knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Index of the last entry in the local log.
    pub fn last_log_index(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().last_log_index
    }

    /// Waits until some replica is leader as seen from here, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, ReplicationError> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some() && m.vote.committed,
                "an established leader",
            )
            .await
            .map_err(|_| ReplicationError::Timeout {
                group: self.group,
                what: "a leader".into(),
            })?;
        Ok(metrics.current_leader.expect("checked by the wait condition"))
    }

    /// openraft's metrics of this replica, for diagnostics.
    pub fn describe(&self) -> String {
        format!("{:?}", self.raft.metrics().borrow_watched())
    }

    /// Whether this replica is a leader ready for writes: its vote is committed and a quorum
    /// has acknowledged it (a new leader refuses writes with `NotLeader` until then).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics.state == openraft::ServerState::Leader && metrics.vote.committed && metrics.last_quorum_acked.is_some()
    }

    /// Waits until this replica has applied (so committed) everything up to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ReplicationError> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied")
            .await
            .map(|_| ())
            .map_err(|_| ReplicationError::Timeout {
                group: self.group,
                what: format!("applied index {index}"),
            })
    }

    /// Stops the Raft node and closes the log durably.
    pub async fn shutdown(self, groups: &RaftGroups) -> Result<(), ReplicationError> {
        groups.remove(self.group);
        self.raft.shutdown().await.map_err(|e| ReplicationError::Raft {
            group: self.group,
            message: e.to_string(),
        })?;
        let mut log = self.log.write().map_err(|_| ReplicationError::Raft {
            group: self.group,
            message: "log lock poisoned".into(),
        })?;
        Ok(log.close()?)
    }
}
