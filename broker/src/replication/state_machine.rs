//! The partition state machine. A partition's data *is* its log, so applying an entry only
//! advances the applied position, assigns the batch its offset (the same rule the log uses, so
//! both agree), records idempotent producers' batches in the [`ProducerTable`] and tracks
//! membership. A snapshot is therefore small: the applied log id, the membership, the next
//! offset and the producer table — the data it stands for stays in the segment log, whose
//! retention decides when it goes.

use super::producer_state::{BatchIdentity, ProducerTable};
use super::types::{AppliedBatch, LogId, PartitionRaft, RecordBatchPayload};
use crate::storage::Offset;
use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StoredMembership};
use proto::record_batch::{BatchHeader, NO_PRODUCER_ID};
use serde::{Deserialize, Serialize};
use std::io::{self, Cursor};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

type Membership = StoredMembership<openraft::impls::leader_id_adv::LeaderId<u64, u64>, u64, openraft::BasicNode>;
type Meta = SnapshotMeta<openraft::impls::leader_id_adv::LeaderId<u64, u64>, u64, openraft::BasicNode>;
type PartitionSnapshot =
    Snapshot<openraft::impls::leader_id_adv::LeaderId<u64, u64>, u64, openraft::BasicNode, Cursor<Vec<u8>>>;

/// Sees every committed data batch of a group, in log order. An observer may persist what it
/// derives together with the state machine's position ([`AppliedState`]); after a restart the
/// state machine then resumes from that position ([`restore_point`](Self::restore_point))
/// instead of re-applying the whole log. (Groups with observers are never purged, so the log
/// can always rebuild an observer's state from the start.)
pub trait BatchObserver: Send + Sync + 'static {
    /// Called once the batch starting at `base_offset` is committed and applied; `applied` is the
    /// state machine's position with it.
    fn on_applied(&self, base_offset: Offset, batch: &bytes::Bytes, applied: &AppliedState);

    /// The position the observer's persisted state corresponds to, if it keeps one: the state
    /// machine starts there, and only later entries are applied (and observed).
    fn restore_point(&self) -> Option<AppliedState> {
        None
    }

    /// The log does not hold the restore point (it lost entries, e.g. to a damaged disk): the
    /// observer must drop its persisted state; it is fed the whole log again.
    fn restore_rejected(&self) {}
}

/// Where a state machine stands: the last applied entry, the membership as of it and the offset
/// the next record gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppliedState {
    last_applied: Option<LogId>,
    membership: Membership,
    next_offset: Offset,
}

impl AppliedState {
    /// The log id of the last applied entry, as the storage layer names entries.
    pub(crate) fn last_applied_entry(&self) -> Option<crate::storage::EntryId> {
        self.last_applied.as_ref().map(super::types::entry_id_of)
    }
}

/// What a snapshot holds: the applied state and the producer table as of the same entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SnapshotState {
    // Nested, not flattened: serde's flatten cannot read the integer map keys of memberships.
    applied: AppliedState,
    #[serde(default)]
    producers: ProducerTable,
}

/// The producer table of a partition, shared between its state machine (which updates it from
/// committed batches) and its leader (which checks batches against it before proposing).
pub type SharedProducerTable = Arc<Mutex<ProducerTable>>;

/// The state machine of one partition replica.
pub struct PartitionStateMachine {
    state: AppliedState,
    current_snapshot: Option<(Meta, Vec<u8>)>,
    /// The next offset after everything applied, published for the fetch path. Applied
    /// entries are committed ones, so this never exceeds the high watermark.
    applied_next_offset: watch::Sender<u64>,
    observer: Option<Arc<dyn BatchObserver>>,
    producers: SharedProducerTable,
}

/// Builds a snapshot of the state as it was when the builder was made.
pub struct PartitionSnapshotBuilder {
    state: SnapshotState,
}

impl PartitionStateMachine {
    /// A state machine that has applied nothing.
    pub fn new() -> Self {
        PartitionStateMachine {
            state: AppliedState::default(),
            current_snapshot: None,
            applied_next_offset: watch::Sender::new(0),
            observer: None,
            producers: SharedProducerTable::default(),
        }
    }

    /// The producer table this state machine keeps current.
    pub fn producers(&self) -> SharedProducerTable {
        Arc::clone(&self.producers)
    }

    fn producer_table(&self) -> std::sync::MutexGuard<'_, ProducerTable> {
        // The table is only replaced whole or updated in place; a panic elsewhere cannot leave
        // it half-written, so a poisoned lock is still a consistent table.
        self.producers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn snapshot_state(&self) -> SnapshotState {
        SnapshotState {
            applied: self.state.clone(),
            producers: self.producer_table().clone(),
        }
    }

    /// A state machine that starts at `start` (an observer's restore point, already checked
    /// against the log) or at the beginning, and reports every applied batch to `observer`.
    pub fn with_observer(observer: Arc<dyn BatchObserver>, start: Option<AppliedState>) -> Self {
        let machine = PartitionStateMachine {
            state: start.unwrap_or_default(),
            observer: Some(observer),
            ..Self::new()
        };
        machine.publish();
        machine
    }

    /// The offset the next applied record will get: the high watermark once applied entries
    /// are committed ones.
    pub fn next_offset(&self) -> Offset {
        self.state.next_offset
    }

    /// A live view of [`next_offset`](Self::next_offset) that stays current after the state
    /// machine is handed to openraft; fetch long-polls wait on it.
    pub fn applied_next_offset(&self) -> watch::Receiver<u64> {
        self.applied_next_offset.subscribe()
    }

    fn publish(&self) {
        self.applied_next_offset.send_replace(self.state.next_offset.0);
    }
}

fn meta_of(state: &AppliedState) -> Meta {
    Meta {
        last_log_id: state.last_applied,
        last_membership: state.membership.clone(),
    }
}

impl Default for PartitionStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

impl RaftSnapshotBuilder<PartitionRaft> for PartitionSnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> io::Result<PartitionSnapshot> {
        let bytes = serde_json::to_vec(&self.state).map_err(io::Error::other)?;
        Ok(Snapshot {
            meta: meta_of(&self.state.applied),
            snapshot: Cursor::new(bytes),
        })
    }
}

impl RaftStateMachine<PartitionRaft> for PartitionStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = PartitionSnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, Membership)> {
        Ok((self.state.last_applied, self.state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<PartitionRaft>>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            self.state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Membership(membership) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    None
                }
                EntryPayload::Normal(RecordBatchPayload(batch, _)) => {
                    let header = BatchHeader::parse(&batch).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("committed entry {} is not a batch: {e}", entry.log_id),
                        )
                    })?;
                    let base_offset = self.state.next_offset;
                    self.state.next_offset = Offset(base_offset.0 + header.record_count as u64);
                    if header.producer_id != NO_PRODUCER_ID {
                        let identity = BatchIdentity::new(
                            header.producer_id,
                            header.producer_epoch,
                            header.base_sequence,
                            header.record_count,
                        );
                        self.producer_table().record(&identity, base_offset);
                    }
                    if let Some(observer) = &self.observer {
                        observer.on_applied(base_offset, &batch, &self.state);
                    }
                    Some(AppliedBatch { base_offset })
                }
            };
            self.publish();
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PartitionSnapshotBuilder {
            state: self.snapshot_state(),
        }
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        let builder = self.get_snapshot_builder().await;
        let bytes = serde_json::to_vec(&builder.state).ok()?;
        self.current_snapshot = Some((meta_of(&builder.state.applied), bytes));
        Some(builder)
    }

    async fn install_snapshot(&mut self, meta: &Meta, mut snapshot: Cursor<Vec<u8>>) -> io::Result<()> {
        let bytes = std::mem::take(snapshot.get_mut());
        let state: SnapshotState = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot does not parse: {e}")))?;
        if state.applied.last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data disagrees with its metadata",
            ));
        }
        self.state = state.applied;
        *self.producer_table() = state.producers;
        self.publish();
        self.current_snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<PartitionSnapshot>> {
        Ok(self.current_snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Cursor::new(bytes.clone()),
        }))
    }
}
