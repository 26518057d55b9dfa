//! One hosted replica of a `__consumer_offsets` partition, as the coordinator sees it: the
//! groups materialised from its committed records (on every replica, leader or not, through
//! the partition's [`BatchObserver`]), the lock that orders this broker's writes to it, and —
//! while this broker leads it — the members' session deadlines.
//!
//! The groups are small beside the log that built them (every commit appends a record), so the
//! partition compacts: its snapshots carry the serialized [`GroupsState`] and the log is purged
//! behind them ([`OFFSETS_COMPACTION`]), which bounds the partition's disk usage.

use super::model::{GroupRecord, GroupsState};
use crate::partition::{ObserverSource, TopicPartition};
use crate::replication::{AppliedState, BatchObserver, Compaction};
use crate::storage::Offset;
use bytes::Bytes;
use proto::record_batch::decode_records;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tokio::time::Instant;

/// How the offsets partitions compact: a snapshot of the groups once the log since the last one
/// is as large as that snapshot (at least 4 KiB), and nothing kept behind it. The directory
/// then holds the log since the last snapshot, at most one sealed segment the next purge
/// deletes, and the snapshot — a few times the groups' state, however many commits it has
/// seen — and snapshots at most double what commits write (docs/architecture.md, "Compaction").
///
/// Why keep nothing behind: a follower that misses entries a snapshot covers is sent the
/// snapshot instead, which by this rule is no larger than the log it would have read.
pub const OFFSETS_COMPACTION: Compaction = Compaction {
    log_per_snapshot: 1,
    min_log_bytes: 4 * 1024,
    keep_behind_snapshot: 0,
};

/// A replica of one offsets partition.
pub struct OffsetsPartition {
    state: Mutex<GroupsState>,
    compaction: Compaction,
    /// Held from reading the state to the answer of the write derived from it, so a change is
    /// always computed from everything applied before it.
    pub(super) writes: tokio::sync::Mutex<()>,
    /// The Raft term in which this broker, as leader, last wrote its barrier: until then the
    /// state may miss entries of earlier terms, and the partition does not answer.
    pub(super) loaded_in_term: Mutex<Option<u64>>,
    /// (group, member) → when its session ends. Kept only in memory by the leader: a new
    /// coordinator gives every member a full session from when it loaded.
    pub(super) sessions: Mutex<HashMap<(String, String), Instant>>,
}

impl Default for OffsetsPartition {
    fn default() -> Self {
        OffsetsPartition::with_compaction(OFFSETS_COMPACTION)
    }
}

impl OffsetsPartition {
    /// A replica that has applied nothing and compacts as `compaction` says (tests snapshot
    /// more often than [`OFFSETS_COMPACTION`]).
    pub fn with_compaction(compaction: Compaction) -> Self {
        OffsetsPartition {
            state: Mutex::default(),
            compaction,
            writes: tokio::sync::Mutex::default(),
            loaded_in_term: Mutex::default(),
            sessions: Mutex::default(),
        }
    }

    /// The materialised groups.
    pub fn state(&self) -> MutexGuard<'_, GroupsState> {
        // Applying a record is one replacement that cannot panic half-way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn sessions(&self) -> MutexGuard<'_, HashMap<(String, String), Instant>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn loaded_in_term(&self) -> Option<u64> {
        *self.loaded_in_term.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_loaded_in_term(&self, term: Option<u64>) {
        *self.loaded_in_term.lock().unwrap_or_else(|p| p.into_inner()) = term;
    }
}

impl BatchObserver for OffsetsPartition {
    fn on_applied(&self, _base_offset: Offset, batch: &Bytes, _applied: &AppliedState) {
        let records = match decode_records(batch) {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "undecodable batch in __consumer_offsets; skipped");
                return;
            }
        };
        let mut state = self.state();
        for record in records {
            match record.value.as_deref().map(serde_json::from_slice::<GroupRecord>) {
                Some(Ok(change)) => state.apply(change),
                Some(Err(error)) => tracing::error!(%error, "undecodable group record; skipped"),
                None => tracing::error!("group record without a value; skipped"),
            }
        }
    }

    fn compaction(&self) -> Option<Compaction> {
        Some(self.compaction)
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(serde_json::to_vec(&*self.state()).expect("groups serialize"))
    }

    fn install_snapshot(&self, state: &[u8]) -> std::io::Result<()> {
        let groups: GroupsState = serde_json::from_slice(state)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("groups snapshot: {e}")))?;
        *self.state() = groups;
        Ok(())
    }
}

/// The offsets partitions hosted here, by partition index. Hands the partition manager a fresh
/// observer whenever it starts a replica of `__consumer_offsets`.
#[derive(Default)]
pub struct OffsetsPartitions {
    hosted: RwLock<HashMap<u32, Arc<OffsetsPartition>>>,
}

impl OffsetsPartitions {
    /// The hosted replica of offsets partition `partition`, if any.
    pub fn get(&self, partition: u32) -> Option<Arc<OffsetsPartition>> {
        self.hosted.read().expect("offsets partitions").get(&partition).cloned()
    }

    /// Every hosted offsets partition.
    pub fn all(&self) -> Vec<(u32, Arc<OffsetsPartition>)> {
        self.hosted
            .read()
            .expect("offsets partitions")
            .iter()
            .map(|(p, o)| (*p, Arc::clone(o)))
            .collect()
    }
}

impl ObserverSource for OffsetsPartitions {
    fn observer_for(&self, partition: &TopicPartition) -> Option<Arc<dyn BatchObserver>> {
        if partition.topic != proto::OFFSETS_TOPIC {
            return None;
        }
        // A (re)started replica starts from nothing: openraft installs the persisted snapshot
        // into it, then re-applies the log after the snapshot.
        let fresh = Arc::new(OffsetsPartition::default());
        self.hosted
            .write()
            .expect("offsets partitions")
            .insert(partition.partition, Arc::clone(&fresh));
        Some(fresh)
    }
}
