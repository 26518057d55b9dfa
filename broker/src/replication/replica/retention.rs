//! Retention of one replica ([`PartitionReplica::apply_retention`]): the leader decides where
//! the log starts, every replica purges through the same entry.
//!
//! Why the leader decides and replicates the point, rather than each replica applying the rule
//! to its own log: entries are identical on every replica, but segment boundaries are not (a
//! replica rolls when *it* appends, and restarts and catch-up shift the times). Each replica
//! deleting its own whole segments would leave replicas disagreeing on the log start, and a
//! consumer moved to another leader would see records reappear or vanish. So the leader picks
//! the end of its newest expired segment and proposes a [`LogStartMark`]; once applied, every
//! replica builds a snapshot *at that entry* (see `state_machine`), and openraft purges its log
//! through it. The purge deletes the segments wholly before the mark; the storage layer's log
//! start becomes the mark's offset on every replica. A follower that needs purged entries is
//! sent that snapshot and continues from the mark.

use super::{PartitionReplica, ReplicationError};
use crate::replication::types::{log_id_of, LogStartMark, PartitionPayload};
use crate::storage::{Offset, SegmentLog};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// How long one step of a pass (the proposal, the snapshot) may wait before the pass gives up
/// until the next check.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// What one retention pass of a replica did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPass {
    /// The active segment was old enough and sealed.
    pub rolled: bool,
    /// As the leader, it replicated a new log start (this offset).
    pub proposed: Option<Offset>,
    /// It asked openraft to purge its log through the newest mark, which starts the log here.
    pub purged_to: Option<Offset>,
}

impl PartitionReplica {
    /// One retention pass at `now_ms`: seals an aged active segment, proposes a new log start
    /// if this replica leads and a segment expired, and purges this replica's log through the
    /// newest applied mark. Groups with an observer (the controller, `__consumer_offsets`)
    /// have no retention: their logs rebuild state, or compact on their own.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<RetentionPass, ReplicationError> {
        let mut pass = RetentionPass::default();
        if !self.retention {
            return Ok(pass);
        }
        pass.rolled = self.roll_if_aged(now_ms).await?;
        pass.proposed = self.propose_log_start(now_ms).await?;
        pass.purged_to = self.purge_to_log_start().await?;
        Ok(pass)
    }

    async fn roll_if_aged(&self, now_ms: i64) -> Result<bool, ReplicationError> {
        let log: Arc<RwLock<SegmentLog>> = Arc::clone(&self.log);
        let group = self.group;
        // A roll fsyncs the sealed segment: off the runtime.
        tokio::task::spawn_blocking(move || {
            let mut log = log.write().map_err(|_| ReplicationError::Raft {
                group,
                message: "partition log lock poisoned by an earlier panic".into(),
            })?;
            Ok(log.roll_if_aged(now_ms)?)
        })
        .await
        .map_err(|e| ReplicationError::Raft {
            group,
            message: format!("segment roll task: {e}"),
        })?
    }

    /// As the leader: where retention would start the log, if that is later than where it
    /// starts and the point is one every replica can snapshot at (applied, and no membership
    /// change after it); then proposes it and waits until it is applied.
    async fn propose_log_start(&self, now_ms: i64) -> Result<Option<Offset>, ReplicationError> {
        let leader_state = self.raft.with_metrics(|metrics| {
            (metrics.state == openraft::ServerState::Leader).then(|| {
                (
                    metrics.last_applied,
                    metrics.membership_config.log_id().as_ref().copied(),
                )
            })
        });
        let Some((last_applied, membership_at)) = leader_state else {
            return Ok(None);
        };
        let Some((through, next_offset)) = ({
            let log = self.log.read().map_err(|_| self.poisoned())?;
            log.retention_point(now_ms)
                .filter(|(_, next_offset)| *next_offset > log.log_start_offset())
        }) else {
            return Ok(None);
        };
        let point = log_id_of(&through);
        if last_applied.is_none_or(|applied| applied < point) || membership_at.is_some_and(|m| m > point) {
            return Ok(None);
        }
        if self
            .log_start_marks
            .borrow()
            .is_some_and(|mark| mark.next_offset >= next_offset)
        {
            return Ok(None);
        }
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + STEP_TIMEOUT, true).await?;
        let mark = LogStartMark { through, next_offset };
        self.live()
            .await?
            .client_write(PartitionPayload::LogStart(mark))
            .await
            .map_err(|e| ReplicationError::Raft {
                group: self.group,
                message: format!("proposing log start {}: {e}", next_offset.0),
            })?;
        tracing::info!(
            group = self.group,
            log_start = next_offset.0,
            through = through.index.0,
            "retention moved the log start"
        );
        Ok(Some(next_offset))
    }

    /// Purges this replica's log through the newest applied mark, if it is not yet: a snapshot
    /// at the mark first (openraft purges only what a snapshot covers), then the purge, which
    /// openraft carries out once no replication stream still reads those entries.
    async fn purge_to_log_start(&self) -> Result<Option<Offset>, ReplicationError> {
        let Some(mark) = *self.log_start_marks.borrow() else {
            return Ok(None);
        };
        let point = log_id_of(&mark.through);
        let (snapshot, purged) = self.raft.with_metrics(|metrics| (metrics.snapshot, metrics.purged));
        if purged.is_some_and(|purged| purged >= point) {
            return Ok(None);
        }
        let raft = self.live().await?;
        if snapshot.is_none_or(|snapshot| snapshot < point) {
            raft.trigger().snapshot().await.map_err(|e| ReplicationError::Raft {
                group: self.group,
                message: format!("snapshot for retention: {e}"),
            })?;
            raft.wait(Some(STEP_TIMEOUT))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s >= point),
                    "a snapshot at the log start",
                )
                .await
                .map_err(|_| ReplicationError::Timeout {
                    group: self.group,
                    what: format!("a snapshot at entry {}", point.index),
                })?;
        }
        raft.trigger()
            .purge_log(point.index)
            .await
            .map_err(|e| ReplicationError::Raft {
                group: self.group,
                message: format!("purge for retention: {e}"),
            })?;
        Ok(Some(mark.next_offset))
    }
}
