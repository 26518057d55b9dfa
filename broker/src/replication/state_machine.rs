//! The partition state machine. A partition's data *is* its log, so applying an entry only
//! advances the applied position, assigns the batch its offset (the same rule the log uses, so
//! both agree), records idempotent producers' batches in the [`ProducerTable`] and tracks
//! membership. A snapshot is therefore small: the applied log id, the membership, the next
//! offset and the producer table — the data it stands for stays in the segment log, whose
//! retention decides when it goes. A group whose observer opts in to compaction also carries
//! the observer's state in its snapshots, which are persisted and let the log be purged behind
//! them (see [`super::snapshot`]).
//!
//! Retention purges an ordinary partition's log the same way, at a point every replica agrees
//! on: applying a [`LogStartMark`] publishes it ([`PartitionStateMachine::log_start_marks`]),
//! and the next snapshot is then built *at the mark* (not at the last applied entry: the data
//! after the mark is not in a snapshot, so a follower installing one must continue from there).

use super::producer_state::{BatchIdentity, ProducerTable};
use super::snapshot::{meta_of, Compaction, KeptSnapshot, Meta, SnapshotSlot, SnapshotState};
use super::types::{log_id_of, AppliedBatch, LogId, LogStartMark, PartitionPayload, PartitionRaft, RecordBatchPayload};
use crate::storage::Offset;
use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StoredMembership};
use proto::record_batch::{BatchHeader, NO_PRODUCER_ID};
use serde::{Deserialize, Serialize};
use std::io::{self, Cursor};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

type Membership = StoredMembership<openraft::impls::leader_id_adv::LeaderId<u64, u64>, u64, openraft::BasicNode>;
type PartitionSnapshot =
    Snapshot<openraft::impls::leader_id_adv::LeaderId<u64, u64>, u64, openraft::BasicNode, Cursor<Vec<u8>>>;

/// Sees every committed data batch of a group, in log order. An observer may persist what it
/// derives together with the state machine's position ([`AppliedState`]); after a restart the
/// state machine then resumes from that position ([`restore_point`](Self::restore_point))
/// instead of re-applying the whole log.
///
/// An observer whose state is small beside its log may opt in to compaction
/// ([`compaction`](Self::compaction)): its group's snapshots then carry the observer's state
/// ([`snapshot`](Self::snapshot), [`install_snapshot`](Self::install_snapshot)) and the log is
/// purged behind them. Other groups with observers are never purged, so their log can always
/// rebuild the observer's state from the start.
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

    /// Whether this group's log may be purged behind snapshots of the observer's state, and how
    /// often they are taken. Only an observer whose [`snapshot`](Self::snapshot) returns its
    /// whole state may say so: after a purge the snapshot is all that is left of the entries.
    fn compaction(&self) -> Option<Compaction> {
        None
    }

    /// The observer's state as of the last batch it was shown, for a snapshot; `None` if it
    /// keeps none there. Called on the state machine's task, between batches.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Replaces the observer's state with `state`, which [`snapshot`](Self::snapshot) returned
    /// on this or another replica: a snapshot was installed (sent by the leader, or the
    /// persisted one at a restart). Batches after the snapshot's last entry follow.
    fn install_snapshot(&self, state: &[u8]) -> io::Result<()> {
        let _ = state;
        Err(io::Error::other("this observer keeps no state in snapshots"))
    }
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

    pub(crate) fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    pub(crate) fn membership(&self) -> &Membership {
        &self.membership
    }

    pub(crate) fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// A state at `last_applied` with no membership (tests only).
    #[cfg(test)]
    pub(crate) fn at(last_applied: Option<LogId>, next_offset: Offset) -> AppliedState {
        AppliedState {
            last_applied,
            next_offset,
            ..AppliedState::default()
        }
    }
}

/// The producer table of a partition, shared between its state machine (which updates it from
/// committed batches) and its leader (which checks batches against it before proposing).
pub type SharedProducerTable = Arc<Mutex<ProducerTable>>;

/// The state machine of one partition replica.
pub struct PartitionStateMachine {
    state: AppliedState,
    /// The newest snapshot, built or installed (persisted once `persisting_snapshots` is set,
    /// as every replica a broker runs does).
    snapshots: SnapshotSlot,
    /// The next offset after everything applied, published for the fetch path. Applied
    /// entries are committed ones, so this never exceeds the high watermark.
    applied_next_offset: watch::Sender<u64>,
    observer: Option<Arc<dyn BatchObserver>>,
    producers: SharedProducerTable,
    /// The newest log start retention replicated, once applied: where this replica's log is
    /// to be purged through.
    log_start: watch::Sender<Option<LogStartMark>>,
    /// For a group that compacts: when its next snapshot is due.
    compaction: Option<CompactionClock>,
}

/// How much log a compacting group applied since its last snapshot, and the signal its replica
/// waits on to ask openraft for the next one (`replica/compaction.rs`).
struct CompactionClock {
    compaction: Compaction,
    log_bytes: u64,
    snapshot_bytes: u64,
    /// Bumped by every applied entry while a snapshot is due: openraft ignores a request while
    /// it is still building the previous snapshot, so the request is repeated until one is built.
    due: watch::Sender<u64>,
}

impl CompactionClock {
    /// Counts an applied entry of `bytes`; signals if a snapshot is due.
    fn applied(&mut self, bytes: u64) {
        self.log_bytes = self.log_bytes.saturating_add(bytes);
        if self.compaction.snapshot_due(self.log_bytes, self.snapshot_bytes) {
            self.due.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A snapshot of `bytes` (an estimate while it is being built) now covers everything applied.
    fn snapshotted(&mut self, bytes: u64) {
        self.log_bytes = 0;
        self.snapshot_bytes = bytes;
    }
}

/// What a non-batch entry (blank, membership, log start mark) counts for in the log since a
/// snapshot: about its frame.
const OTHER_ENTRY_BYTES: u64 = 64;
/// What a snapshot's head (applied position, membership, producer table) adds to the
/// observer's bytes, for the estimate of a snapshot's size while it is built.
const SNAPSHOT_HEAD_BYTES: u64 = 256;

/// Builds a snapshot as of the moment the builder was made.
pub struct PartitionSnapshotBuilder {
    /// The state to snapshot; `None`: nothing new, the kept snapshot again (openraft ignores a
    /// snapshot no newer than its own).
    build: Option<SnapshotState>,
    snapshots: SnapshotSlot,
}

impl PartitionStateMachine {
    /// A state machine that has applied nothing.
    pub fn new() -> Self {
        PartitionStateMachine {
            state: AppliedState::default(),
            snapshots: SnapshotSlot::default(),
            applied_next_offset: watch::Sender::new(0),
            observer: None,
            producers: SharedProducerTable::default(),
            log_start: watch::Sender::new(None),
            compaction: None,
        }
    }

    /// For a group that compacts: bumped each time its next snapshot is due, live after the
    /// state machine is handed to openraft (the replica then seals the active segment and asks
    /// for the snapshot). `None` for any other group.
    pub fn snapshots_due(&self) -> Option<watch::Receiver<u64>> {
        self.compaction.as_ref().map(|clock| clock.due.subscribe())
    }

    /// The newest applied log start mark of retention, live after the state machine is handed
    /// to openraft: the replica purges its log through it.
    pub fn log_start_marks(&self) -> watch::Receiver<Option<LogStartMark>> {
        self.log_start.subscribe()
    }

    /// What a snapshot of an ordinary partition holds: the state as of the newest log start
    /// mark, if there is one the snapshot may stand at. The producer table is the current one,
    /// newer than the mark: replaying the entries after the mark records nothing twice (the
    /// table ignores batches older than those it has).
    fn snapshot_at_log_start(&self) -> Option<SnapshotState> {
        let mark = (*self.log_start.borrow())?;
        let through = log_id_of(&mark.through);
        // The membership in force at the mark: the current one, unless it changed since.
        if !self.membership_in_force_at(through) {
            return None;
        }
        Some(SnapshotState {
            applied: AppliedState {
                last_applied: Some(through),
                membership: self.state.membership.clone(),
                next_offset: mark.next_offset,
            },
            producers: self.producer_table().clone(),
            observer: None,
        })
    }

    /// Whether the current membership was already in force at entry `at` (a snapshot standing
    /// there carries it; the leader proposes no mark before a membership change).
    fn membership_in_force_at(&self, at: LogId) -> bool {
        self.state.membership.log_id().as_ref().is_none_or(|id| *id <= at)
    }

    /// Takes `mark` as the log start to purge to, if it is sound and newer than the last one.
    fn apply_log_start(&mut self, mark: LogStartMark, at: &LogId) {
        let sound = mark.through.index.0 < at.index
            && mark.next_offset <= self.state.next_offset
            && self.membership_in_force_at(log_id_of(&mark.through));
        if !sound {
            tracing::warn!(
                ?mark,
                entry = at.index,
                "log start mark ignored: not a point this replica can purge to"
            );
            return;
        }
        self.log_start.send_if_modified(|current| {
            let newer = current.is_none_or(|c| c.through.index < mark.through.index);
            if newer {
                *current = Some(mark);
            }
            newer
        });
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
            observer: self.observer.as_ref().and_then(|o| o.snapshot()),
        }
    }

    /// Persists every snapshot in `dir` (the partition directory) and takes the one persisted
    /// there as the current snapshot; openraft installs it at start-up, so the state machine
    /// resumes from it. For groups whose log is purged behind snapshots: the purged entries
    /// cannot rebuild the state, the persisted snapshot must.
    pub fn persisting_snapshots(mut self, dir: &Path) -> crate::storage::StorageResult<Self> {
        self.snapshots = SnapshotSlot::persisted_in(dir)?;
        if let (Some(clock), Some(kept)) = (&mut self.compaction, self.snapshots.current()) {
            clock.snapshot_bytes = kept.bytes.len() as u64;
        }
        Ok(self)
    }

    /// The slot the newest snapshot is kept in, shared with the log store.
    pub(crate) fn snapshot_slot(&self) -> SnapshotSlot {
        self.snapshots.clone()
    }

    /// A state machine that starts at `start` (an observer's restore point, already checked
    /// against the log) or at the beginning, and reports every applied batch to `observer`.
    pub fn with_observer(observer: Arc<dyn BatchObserver>, start: Option<AppliedState>) -> Self {
        let compaction = observer.compaction().map(|compaction| CompactionClock {
            compaction,
            log_bytes: 0,
            snapshot_bytes: 0,
            due: watch::Sender::new(0),
        });
        let machine = PartitionStateMachine {
            state: start.unwrap_or_default(),
            observer: Some(observer),
            compaction,
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

impl Default for PartitionStateMachine {
    fn default() -> Self {
        Self::new()
    }
}

/// openraft's form of a kept snapshot.
fn snapshot_of(kept: KeptSnapshot) -> PartitionSnapshot {
    Snapshot {
        meta: kept.meta,
        snapshot: Cursor::new(kept.bytes),
    }
}

impl RaftSnapshotBuilder<PartitionRaft> for PartitionSnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> io::Result<PartitionSnapshot> {
        let state = match &self.build {
            Some(state) => state,
            None => {
                return Ok(match self.snapshots.current() {
                    Some(kept) => snapshot_of(kept),
                    None => {
                        let empty = SnapshotState::default();
                        Snapshot {
                            meta: meta_of(&empty.applied),
                            snapshot: Cursor::new(empty.encode()?),
                        }
                    }
                });
            }
        };
        let bytes = state.encode()?;
        let meta = meta_of(&state.applied);
        // Kept (and persisted) before openraft learns the snapshot exists: only then may it
        // purge the log behind it.
        self.snapshots
            .keep_async(KeptSnapshot {
                meta: meta.clone(),
                bytes: bytes.clone(),
                next_offset: state.applied.next_offset,
            })
            .await?;
        Ok(Snapshot {
            meta,
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
            if let Some(clock) = &mut self.compaction {
                clock.applied(match &entry.payload {
                    EntryPayload::Normal(PartitionPayload::Batch(RecordBatchPayload(batch, _))) => batch.len() as u64,
                    _ => OTHER_ENTRY_BYTES,
                });
            }
            self.state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => None,
                EntryPayload::Membership(membership) => {
                    self.state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    None
                }
                EntryPayload::Normal(PartitionPayload::LogStart(mark)) => {
                    self.apply_log_start(mark, &entry.log_id);
                    None
                }
                EntryPayload::Normal(PartitionPayload::Batch(RecordBatchPayload(batch, _))) => {
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
        // A group that compacts snapshots its whole state; any other partition's data is its
        // log, so its snapshot stands where retention starts the log.
        let build = if self.compaction.is_some() {
            let state = self.snapshot_state();
            let observer_bytes = state.observer.as_ref().map_or(0, Vec::len) as u64;
            if let Some(clock) = &mut self.compaction {
                clock.snapshotted(observer_bytes + SNAPSHOT_HEAD_BYTES);
            }
            Some(state)
        } else {
            self.snapshot_at_log_start()
        };
        PartitionSnapshotBuilder {
            build,
            snapshots: self.snapshots.clone(),
        }
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        Some(self.get_snapshot_builder().await)
    }

    async fn install_snapshot(&mut self, meta: &Meta, mut snapshot: Cursor<Vec<u8>>) -> io::Result<()> {
        let bytes = std::mem::take(snapshot.get_mut());
        let bytes_len = bytes.len() as u64;
        let state = SnapshotState::decode(&bytes)?;
        if state.applied.last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data disagrees with its metadata",
            ));
        }
        // The observer's state would silently miss everything the snapshot covers.
        if state.observer.is_none() && self.observer.as_ref().is_some_and(|o| o.compaction().is_some()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot of a compacting group without its observer's state",
            ));
        }
        // Persisted before openraft purges the log behind it (a restart resumes from it); a
        // restart's install of the persisted snapshot itself writes nothing.
        self.snapshots
            .keep_async(KeptSnapshot {
                meta: meta.clone(),
                next_offset: state.applied.next_offset,
                bytes,
            })
            .await?;
        if let (Some(observer), Some(observed)) = (&self.observer, &state.observer) {
            observer.install_snapshot(observed)?;
        }
        if let Some(clock) = &mut self.compaction {
            clock.snapshotted(bytes_len);
        }
        self.state = state.applied;
        *self.producer_table() = state.producers;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<PartitionSnapshot>> {
        Ok(self.snapshots.current().map(snapshot_of))
    }
}
