//! Snapshots of a partition state machine: what one holds ([`SnapshotState`] and its byte form),
//! where the newest one is kept ([`SnapshotSlot`]), and which groups may purge their log behind
//! one ([`Compaction`]).
//!
//! An ordinary partition's data *is* its log, so its snapshot is a few hundred bytes of position
//! (and the producer table) and it is never taken by policy (`SnapshotPolicy::Never`):
//! retention takes one at the replicated log start and purges the log behind it
//! (`replica/retention.rs`).
//! A group whose [`BatchObserver`](super::BatchObserver) materialises a small state from a log
//! of whole-value records (`__consumer_offsets`) opts in to compaction instead: it snapshots
//! once the log since its last snapshot outgrows that snapshot ([`Compaction::snapshot_due`]),
//! the observer's state included (`replica/compaction.rs` seals the active segment and asks
//! openraft for the snapshot), the snapshot is persisted in the partition directory before
//! openraft learns it was built, and openraft then purges the log behind it.

use super::producer_state::ProducerTable;
use super::state_machine::AppliedState;
use crate::storage::{snapshot_file, Offset, StorageError, StorageResult};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub(crate) type Meta =
    openraft::SnapshotMeta<openraft::impls::leader_id_adv::LeaderId<u64, u64>, u64, openraft::BasicNode>;

/// A group that may purge its log behind snapshots of its state: when it snapshots and how much
/// log it keeps behind a snapshot.
///
/// Snapshots are due by size, not by entry count: once the log written since the last snapshot
/// is `log_per_snapshot` times that snapshot's size (and at least `min_log_bytes`). So the log
/// kept on disk stays a small multiple of the state it builds, however many commits a state of
/// a few groups or of a hundred thousand sees, and the snapshots' writes cost at most
/// `1 / log_per_snapshot` of the log's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Log bytes written since the last snapshot, as a multiple of its size, that make the
    /// next one due.
    pub log_per_snapshot: u64,
    /// Log bytes since the last snapshot below which none is due, however small the state
    /// (not a snapshot and a segment roll for every commit to a tiny group).
    pub min_log_bytes: u64,
    /// Entries kept in the log behind a snapshot, so a follower a little behind is caught up
    /// from the log rather than sent the whole state (openraft's `max_in_snapshot_log_to_keep`).
    pub keep_behind_snapshot: u64,
}

impl Compaction {
    /// Whether `log_bytes` written since a snapshot of `snapshot_bytes` make the next one due.
    pub fn snapshot_due(&self, log_bytes: u64, snapshot_bytes: u64) -> bool {
        log_bytes
            >= self
                .min_log_bytes
                .max(snapshot_bytes.saturating_mul(self.log_per_snapshot))
    }
}

/// What a snapshot holds: the applied state, the producer table and the observer's state, all
/// as of the same entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SnapshotState {
    pub(crate) applied: AppliedState,
    pub(crate) producers: ProducerTable,
    /// The observer's own bytes ([`BatchObserver::snapshot`](super::BatchObserver::snapshot)).
    pub(crate) observer: Option<Vec<u8>>,
}

/// The JSON head of a snapshot's bytes; the observer's bytes (if any) follow it verbatim, so
/// they are not inflated into a JSON array of numbers.
#[derive(Serialize, Deserialize)]
struct SnapshotHead {
    // Nested, not flattened: serde's flatten cannot read the integer map keys of memberships.
    applied: AppliedState,
    #[serde(default)]
    producers: ProducerTable,
    /// Length of the observer's bytes after the head; absent in snapshots without (and in
    /// those made before observers had snapshots).
    #[serde(default)]
    observer_bytes: Option<u64>,
}

impl SnapshotState {
    /// The snapshot's bytes: the JSON head, then the observer's bytes.
    pub(crate) fn encode(&self) -> io::Result<Vec<u8>> {
        let head = SnapshotHead {
            applied: self.applied.clone(),
            producers: self.producers.clone(),
            observer_bytes: self.observer.as_ref().map(|o| o.len() as u64),
        };
        let mut bytes = serde_json::to_vec(&head).map_err(io::Error::other)?;
        if let Some(observer) = &self.observer {
            bytes.extend_from_slice(observer);
        }
        Ok(bytes)
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub(crate) fn decode(bytes: &[u8]) -> io::Result<SnapshotState> {
        let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
        let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<SnapshotHead>();
        let head = match values.next() {
            Some(Ok(head)) => head,
            Some(Err(e)) => return Err(invalid(format!("snapshot does not parse: {e}"))),
            None => return Err(invalid("empty snapshot".into())),
        };
        let rest = &bytes[values.byte_offset()..];
        let observer = match head.observer_bytes {
            Some(length) if length == rest.len() as u64 => Some(rest.to_vec()),
            None if rest.is_empty() => None,
            _ => {
                return Err(invalid(format!(
                    "snapshot has {} bytes after its head, expected {:?}",
                    rest.len(),
                    head.observer_bytes
                )))
            }
        };
        Ok(SnapshotState {
            applied: head.applied,
            producers: head.producers,
            observer,
        })
    }
}

/// The newest snapshot of a replica, as openraft's `get_current_snapshot` returns it.
#[derive(Debug, Clone)]
pub(crate) struct KeptSnapshot {
    pub(crate) meta: Meta,
    pub(crate) bytes: Vec<u8>,
    /// The offset after the snapshot's last entry: where the log continues when a purge takes
    /// it beyond its end (a follower installing the snapshot).
    pub(crate) next_offset: Offset,
}

/// Where a replica keeps its newest snapshot: in memory, and — for every group a broker runs
/// (replicas start with [`SnapshotSlot::persisted_in`]) — in the partition directory, written
/// before the snapshot is reported built or installed. Shared by
/// the state machine, its snapshot builders (which run on their own task) and the log store
/// (which needs the snapshot's next offset when a purge empties the log).
///
/// Never goes backwards: a snapshot older than the kept one (a builder that finished after a
/// newer snapshot was installed) is dropped, so the persisted snapshot always covers the
/// purged prefix.
#[derive(Clone, Default)]
pub(crate) struct SnapshotSlot {
    kept: Arc<Mutex<Option<KeptSnapshot>>>,
    /// Held while a snapshot is written, so writers take turns and readers of `kept` (the log
    /// store's purge, `get_current_snapshot`) never wait for an fsync.
    writing: Arc<Mutex<()>>,
    /// The partition directory, when snapshots are persisted.
    dir: Option<PathBuf>,
}

impl SnapshotSlot {
    /// A slot persisting snapshots in `dir`, holding the one persisted there, if any.
    pub(crate) fn persisted_in(dir: &Path) -> StorageResult<SnapshotSlot> {
        let kept = match snapshot_file::load(dir)? {
            Some(bytes) => {
                let state = SnapshotState::decode(&bytes).map_err(|e| StorageError::Corrupt {
                    path: dir.to_path_buf(),
                    position: 0,
                    reason: format!("persisted snapshot: {e}"),
                })?;
                Some(KeptSnapshot {
                    meta: meta_of(&state.applied),
                    next_offset: state.applied.next_offset(),
                    bytes,
                })
            }
            None => None,
        };
        Ok(SnapshotSlot {
            kept: Arc::new(Mutex::new(kept)),
            writing: Arc::default(),
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Whether keeping a snapshot writes it to disk (and so should be done off the runtime).
    pub(crate) fn is_persistent(&self) -> bool {
        self.dir.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<KeptSnapshot>> {
        // Replaced whole, only after the file is written: a poisoned lock still holds a
        // consistent snapshot.
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept snapshot.
    pub(crate) fn current(&self) -> Option<KeptSnapshot> {
        self.lock().clone()
    }

    /// The offset after the kept snapshot's last entry, if that entry is at `index`.
    pub(crate) fn next_offset_after(&self, index: u64) -> Option<Offset> {
        self.lock()
            .as_ref()
            .filter(|kept| kept.meta.last_log_id.is_some_and(|id| id.index == index))
            .map(|kept| kept.next_offset)
    }

    /// Keeps `snapshot` (persisting it first, when persistent) unless the kept one is as new
    /// or newer. Blocks on two fsyncs when persistent.
    pub(crate) fn keep(&self, snapshot: KeptSnapshot) -> io::Result<()> {
        // Only a writer changes `kept`, so what is seen here holds until this write is done.
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if self
            .lock()
            .as_ref()
            .is_some_and(|k| k.meta.last_log_id >= snapshot.meta.last_log_id)
        {
            return Ok(());
        }
        if let Some(dir) = &self.dir {
            snapshot_file::store(dir, &snapshot.bytes)?;
        }
        *self.lock() = Some(snapshot);
        Ok(())
    }

    /// [`keep`](Self::keep), off the async runtime when it writes.
    pub(crate) async fn keep_async(&self, snapshot: KeptSnapshot) -> io::Result<()> {
        if !self.is_persistent() {
            return self.keep(snapshot);
        }
        let slot = self.clone();
        tokio::task::spawn_blocking(move || slot.keep(snapshot))
            .await
            .map_err(io::Error::other)?
    }
}

/// The snapshot metadata of a state machine at `state`.
pub(crate) fn meta_of(state: &AppliedState) -> Meta {
    Meta {
        last_log_id: state.last_applied(),
        last_membership: state.membership().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_once_the_log_outgrows_it_and_never_below_the_floor() {
        let compaction = Compaction {
            log_per_snapshot: 2,
            min_log_bytes: 4096,
            keep_behind_snapshot: 0,
        };
        // A tiny state: the floor decides.
        assert!(!compaction.snapshot_due(4095, 100));
        assert!(compaction.snapshot_due(4096, 100));
        // A large state: twice its size.
        assert!(!compaction.snapshot_due(19_999, 10_000));
        assert!(compaction.snapshot_due(20_000, 10_000));
        // No overflow with an absurd snapshot size.
        assert!(!compaction.snapshot_due(u64::MAX - 1, u64::MAX));
    }

    #[test]
    fn observer_bytes_follow_the_head_verbatim_and_old_snapshots_still_read() {
        let state = SnapshotState {
            observer: Some(b"{\"any\": \"bytes\"}\n\x00\xff".to_vec()),
            ..SnapshotState::default()
        };
        let bytes = state.encode().unwrap();
        assert_eq!(SnapshotState::decode(&bytes).unwrap(), state);

        let without = SnapshotState::default();
        assert_eq!(SnapshotState::decode(&without.encode().unwrap()).unwrap(), without);

        // A snapshot made before observers had state: the JSON head alone.
        let old = br#"{"applied":{"last_applied":null,"membership":{"log_id":null,"membership":{"configs":[],"nodes":{}}},"next_offset":7}}"#;
        let decoded = SnapshotState::decode(old).unwrap();
        assert_eq!(decoded.applied.next_offset(), Offset(7));
        assert_eq!(decoded.observer, None);

        let mut truncated = bytes.clone();
        truncated.pop();
        assert!(SnapshotState::decode(&truncated).is_err());
    }

    #[test]
    fn a_persisted_slot_reloads_its_snapshot_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let slot = SnapshotSlot::persisted_in(dir.path()).unwrap();
        assert!(slot.current().is_none());
        let snapshot_at = |index: u64, next_offset: u64| {
            let applied = AppliedState::at(
                Some(crate::replication::types::log_id_of(&crate::storage::EntryId {
                    term: 1,
                    leader_node: 1,
                    index: crate::storage::RaftIndex(index),
                })),
                Offset(next_offset),
            );
            let state = SnapshotState {
                applied: applied.clone(),
                observer: Some(format!("state at {index}").into_bytes()),
                ..SnapshotState::default()
            };
            KeptSnapshot {
                meta: meta_of(&applied),
                bytes: state.encode().unwrap(),
                next_offset: Offset(next_offset),
            }
        };
        slot.keep(snapshot_at(10, 100)).unwrap();
        slot.keep(snapshot_at(5, 50)).unwrap();
        assert_eq!(slot.next_offset_after(10), Some(Offset(100)));
        assert_eq!(slot.next_offset_after(5), None);

        let reloaded = SnapshotSlot::persisted_in(dir.path()).unwrap();
        let kept = reloaded.current().unwrap();
        assert_eq!(kept.meta.last_log_id.unwrap().index, 10);
        assert_eq!(kept.bytes, snapshot_at(10, 100).bytes);
        assert_eq!(reloaded.next_offset_after(10), Some(Offset(100)));
    }
}
