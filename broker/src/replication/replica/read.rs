//! Reads: the high watermark and committed offsets, committed batches, offsets by timestamp, and
//! the local log for comparisons. Every read is bounded by one high-watermark snapshot, so it
//! never returns an uncommitted record. (Whether this replica may answer as the leader is the
//! lease's question: see `ready_to_read`.)

use super::{PartitionReplica, ReplicationError};
use crate::storage::{Offset, RaftIndex, StoredEntry};
use std::time::Duration;

/// A partition's offsets as one consistent snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffsets {
    /// First offset in the local log.
    pub log_start_offset: Offset,
    /// The high watermark: the offset after the last committed (and applied) record.
    pub high_watermark: Offset,
    /// Next offset of the local log (including uncommitted entries).
    pub log_end_offset: Offset,
}

/// Committed batches and the offsets they were read against: every batch starts below
/// `offsets.high_watermark`.
#[derive(Debug, Clone)]
pub struct CommittedRead {
    /// The partition's offsets at the time of the read.
    pub offsets: CommittedOffsets,
    /// Whole batches from the requested offset on.
    pub batches: Vec<StoredEntry>,
}

impl PartitionReplica {
    /// The high watermark: the offset after the last committed (and applied) record.
    pub fn high_watermark(&self) -> Offset {
        Offset(*self.applied_next_offset.borrow())
    }

    /// Waits until the high watermark is above `offset`, up to `timeout`; returns the high
    /// watermark then.
    pub async fn wait_for_high_watermark_above(&self, offset: Offset, timeout: Duration) -> Offset {
        let mut receiver = self.applied_next_offset.clone();
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|hw| *hw > offset.0)).await;
        self.high_watermark()
    }

    /// The offset of the first record with a timestamp ≥ `timestamp`, among committed records.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>, ReplicationError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().map_err(|_| self.poisoned())?;
        Ok(log
            .offset_for_timestamp(timestamp)?
            .filter(|offset| *offset < high_watermark))
    }

    pub(super) fn poisoned(&self) -> ReplicationError {
        ReplicationError::Raft {
            group: self.group,
            message: "log lock poisoned".into(),
        }
    }

    /// The log start, high watermark and log end, read together.
    pub fn committed_offsets(&self) -> Result<CommittedOffsets, ReplicationError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().map_err(|_| self.poisoned())?;
        Ok(CommittedOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark,
            log_end_offset: log.log_end_offset(),
        })
    }

    /// Batches from `from` on, never past the high watermark, with the offsets they were read
    /// against (one high-watermark snapshot bounds the read and is reported with it).
    pub fn read_committed(&self, from: Offset, max_bytes: usize) -> Result<CommittedRead, ReplicationError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().map_err(|_| self.poisoned())?;
        let offsets = CommittedOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark,
            log_end_offset: log.log_end_offset(),
        };
        let nothing_committed_yet =
            from >= high_watermark && from >= offsets.log_start_offset && from <= offsets.log_end_offset;
        let batches = if nothing_committed_yet {
            Vec::new()
        } else {
            log.read_batches(from, max_bytes, high_watermark)?
        };
        Ok(CommittedRead { offsets, batches })
    }

    /// Every entry in the local log (committed or not), for replica comparisons in tests and
    /// diagnostics.
    pub fn local_entries(&self) -> Result<Vec<StoredEntry>, ReplicationError> {
        let log = self.log.read().map_err(|_| self.poisoned())?;
        Ok(log.read_entries(RaftIndex(0), RaftIndex(u64::MAX))?)
    }

    /// Index of the last entry in the local log.
    pub fn last_log_index(&self) -> Option<u64> {
        self.raft.with_metrics(|metrics| metrics.last_log_index)
    }

    /// Waits until this replica has applied (so committed) everything up to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ReplicationError> {
        if self
            .raft
            .with_metrics(|metrics| metrics.last_applied.is_some_and(|applied| applied.index >= index))
        {
            return Ok(());
        }
        self.live()
            .await?
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied")
            .await
            .map(|_| ())
            .map_err(|_| ReplicationError::Timeout {
                group: self.group,
                what: format!("applied index {index}"),
            })
    }
}
