//! One hosted replica of a `__consumer_offsets` partition, as the coordinator sees it: the
//! groups materialised from its committed records (on every replica, leader or not, through
//! the partition's [`BatchObserver`]), the lock that orders this broker's writes to it, and —
//! while this broker leads it — the members' session deadlines.

use super::model::{GroupRecord, GroupsState};
use crate::partition::{ObserverSource, TopicPartition};
use crate::replication::{AppliedState, BatchObserver};
use crate::storage::Offset;
use bytes::Bytes;
use proto::record_batch::decode_records;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use tokio::time::Instant;

/// A replica of one offsets partition.
#[derive(Default)]
pub struct OffsetsPartition {
    state: Mutex<GroupsState>,
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

impl OffsetsPartition {
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
        // A replica (re)started from its log re-applies it all: it starts from nothing.
        let fresh = Arc::new(OffsetsPartition::default());
        self.hosted
            .write()
            .expect("offsets partitions")
            .insert(partition.partition, Arc::clone(&fresh));
        Some(fresh)
    }
}
