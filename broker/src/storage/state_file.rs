//! The small per-partition file holding Raft's vote, the last known committed entry and the
//! purged prefix (`raft-state`).
//!
//! **Two slots, written in place.** The file is two 512-byte slots; each store writes the next
//! slot (a sequence number, its length, a CRC32C, the state as JSON) with one `pwrite` and one
//! `fdatasync`, and a load takes the valid slot with the higher sequence. A crash mid-write tears
//! at most the slot being written, whose CRC then fails, and the other slot holds the state
//! before. Only the first store creates the file (and fsyncs the directory).
//!
//! **Votes are synced by the flush worker.** [`StateFile::store_then`] writes the slot and hands
//! the fdatasync to the data directory's group-commit worker, calling back once it is durable:
//! the caller (openraft saving a vote) awaits that without holding a runtime thread or the
//! log's lock through the fsync. An election storm — thousands of groups voting at once after a
//! broker died — blocked both of a 2-core machine's runtime threads in these fsyncs, one vote
//! at a time, while pings and heartbeats queued behind them. Before a slot is written, the
//! store before it must be durable (the new slot overwrites the one before that, so a torn
//! write would otherwise leave no valid slot holding an acknowledged state): a store still
//! unsynced at that point is synced first, in place.
//!
//! Why not write a temporary file and rename it over the old one, as this file used to be
//! (`raft-state.json`): every vote then created an inode and took two fsyncs. Elections write
//! votes on every replica, so a restart or a controlled shutdown moving thousands of
//! leaderships spent a quarter of the machine's CPU in ext4's inode allocation alone
//! (docs/benchmarks.md, "Controlled shutdown").
//!
//! A partition directory from before this format has only `raft-state.json`: it is read when
//! `raft-state` is absent (or was never completely written), and the next store writes the new
//! file. A file whose slots both carry the slot marker but neither checks out is corruption,
//! reported as [`StorageError::BadStateFile`] — never guessed around (a lost vote could let a
//! replica vote twice in one term).

use super::error::{StorageError, StorageResult};
use super::flush::{DurableCallback, FlushHandle, SyncTarget};
use super::types::{EntryId, Offset};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const FILE_NAME: &str = "raft-state";
/// The format before the two slots: one JSON document, replaced by a rename.
const LEGACY_FILE_NAME: &str = "raft-state.json";

/// Bytes per slot (a sector: a torn write is rare within one, and detected anyway).
const SLOT_BYTES: usize = 512;
/// Marks a slot that a store began to write.
const SLOT_MAGIC: [u8; 4] = *b"RST1";
/// Magic, sequence (u64), payload length (u32), CRC32C (u32) of sequence, length and payload.
const SLOT_HEADER_BYTES: usize = 4 + 8 + 4 + 4;

/// A Raft vote as the log stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVote {
    /// Term voted in.
    pub term: u64,
    /// Candidate (or leader) voted for.
    pub node: u64,
    /// Whether the vote is committed (the node it names is the established leader).
    pub committed: bool,
}

/// Entries up to and including `last` were purged; the first surviving record is at
/// `next_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedPrefix {
    /// Last purged entry.
    pub last: EntryId,
    /// Offset after the last purged record: the log start offset.
    pub next_offset: Offset,
}

/// Everything in the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// The current vote.
    pub vote: Option<StoredVote>,
    /// The last entry known committed (may lag the truth; only an optimisation for restart).
    pub committed: Option<EntryId>,
    /// The purged prefix of the log.
    pub purged: Option<PurgedPrefix>,
}

/// The state file of one partition directory.
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    state: PersistedState,
    /// The in-memory state differs from the file (a committed entry noted lazily).
    unwritten: bool,
    /// The sequence number of the last slot written (0: no slot yet, the file may not exist).
    sequence: u64,
    /// The sequence number of the last slot known durable (behind `sequence` while the flush
    /// worker has a store to sync).
    synced: Arc<AtomicU64>,
    /// Raised when an fsync of this file failed (shared with its log, whose other files raise
    /// it too): after a failed fsync the page cache's state is unknown — a retried fsync may
    /// report success without the data on disk — so every further store is refused.
    failed: Arc<AtomicBool>,
}

/// What one slot holds.
#[derive(Debug, PartialEq)]
enum Slot {
    /// Never written (zeros, or past the end of the file).
    Empty,
    /// A store began to write it but it does not check out (torn, or damaged).
    Invalid,
    /// A complete state.
    Valid { sequence: u64, state: PersistedState },
}

/// Encodes `state` as slot number `sequence`.
fn encode_slot(sequence: u64, state: &PersistedState) -> Vec<u8> {
    let payload = serde_json::to_vec(state).expect("plain data serializes");
    assert!(
        payload.len() <= SLOT_BYTES - SLOT_HEADER_BYTES,
        "a partition's Raft state ({} bytes) exceeds its slot",
        payload.len()
    );
    let mut slot = Vec::with_capacity(SLOT_BYTES);
    slot.extend_from_slice(&SLOT_MAGIC);
    slot.extend_from_slice(&sequence.to_le_bytes());
    slot.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = slot_crc(&slot[4..16], &payload);
    slot.extend_from_slice(&crc.to_le_bytes());
    slot.extend_from_slice(&payload);
    slot.resize(SLOT_BYTES, 0);
    slot
}

/// The CRC a slot carries: over its sequence and length fields, then its payload.
fn slot_crc(sequence_and_length: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(sequence_and_length), payload)
}

/// Decodes one slot's bytes (shorter than a slot when the file ends inside it).
fn decode_slot(bytes: &[u8]) -> Slot {
    if bytes.len() < SLOT_HEADER_BYTES || bytes[..4] != SLOT_MAGIC {
        return if bytes.iter().all(|b| *b == 0) {
            Slot::Empty
        } else {
            Slot::Invalid
        };
    }
    let sequence = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes"));
    let len = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let Some(payload) = bytes.get(SLOT_HEADER_BYTES..SLOT_HEADER_BYTES + len) else {
        return Slot::Invalid;
    };
    if slot_crc(&bytes[4..16], payload) != crc {
        return Slot::Invalid;
    }
    match serde_json::from_slice(payload) {
        Ok(state) => Slot::Valid { sequence, state },
        Err(_) => Slot::Invalid,
    }
}

/// The state in a two-slot file's bytes: `Ok(None)` when no store ever completed.
fn decode_file(bytes: &[u8], path: &Path) -> StorageResult<Option<(u64, PersistedState)>> {
    let slots = [
        decode_slot(&bytes[..bytes.len().min(SLOT_BYTES)]),
        decode_slot(
            bytes
                .get(SLOT_BYTES..bytes.len().min(2 * SLOT_BYTES))
                .unwrap_or_default(),
        ),
    ];
    let newest = slots
        .iter()
        .filter_map(|slot| match slot {
            Slot::Valid { sequence, state } => Some((*sequence, state.clone())),
            _ => None,
        })
        .max_by_key(|(sequence, _)| *sequence);
    match (newest, &slots) {
        (Some(newest), _) => Ok(Some(newest)),
        // The first store tore (it writes the first slot; the second was never written): as if
        // it never began. A first slot that is empty beside a begun second one is damage.
        (None, [_, Slot::Empty]) => Ok(None),
        (None, _) => Err(StorageError::BadStateFile {
            path: path.to_path_buf(),
            reason: "neither slot holds a complete state (both torn or damaged)".into(),
        }),
    }
}

impl StateFile {
    /// Loads the state of `dir` (an absent file is the empty state).
    pub fn load(dir: &Path) -> StorageResult<StateFile> {
        let path = dir.join(FILE_NAME);
        let slotted = match std::fs::read(&path) {
            Ok(bytes) => decode_file(&bytes, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageError::io(path, e)),
        };
        let (sequence, state) = match slotted {
            Some(found) => found,
            None => (0, load_legacy(dir)?),
        };
        Ok(StateFile {
            dir: dir.to_path_buf(),
            state,
            unwritten: false,
            sequence,
            synced: Arc::new(AtomicU64::new(sequence)),
            failed: Arc::default(),
        })
    }

    /// Shares `failed` with the log this file belongs to: either's failed fsync fails both.
    pub fn sharing_failure(mut self, failed: Arc<AtomicBool>) -> StateFile {
        self.failed = failed;
        self
    }

    /// The current state.
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// Replaces the state durably.
    pub fn store(&mut self, state: PersistedState) -> StorageResult<()> {
        self.sync_previous()?;
        let creating = self.sequence == 0;
        let (file, sequence) = self.write_slot(&state)?;
        self.synced_or_failed(file.sync_data())?;
        if creating {
            // The file may be new: its directory entry must be durable too. The previous
            // format's file, if any, is superseded now.
            self.synced_or_failed(sync_directory(&self.dir))?;
            let _ = std::fs::remove_file(self.dir.join(LEGACY_FILE_NAME));
        }
        self.stored(state, sequence);
        self.synced.fetch_max(sequence, Ordering::SeqCst);
        Ok(())
    }

    /// Replaces the state, durably once `flusher` has synced it: `on_durable` is called then
    /// (on the flush worker), or with the error that prevented it — a failed fsync also
    /// raises the failure flag, refusing every later store. The state reads as stored at once.
    /// A directory still holding the format before the slots is converted by
    /// [`store`](Self::store) instead, which removes the old file only once the new one is
    /// durable.
    pub fn store_then(
        &mut self,
        state: PersistedState,
        flusher: &FlushHandle,
        on_durable: DurableCallback,
    ) -> StorageResult<()> {
        let creating = self.sequence == 0;
        if creating && self.dir.join(LEGACY_FILE_NAME).exists() {
            self.store(state)?;
            on_durable(Ok(()));
            return Ok(());
        }
        self.sync_previous()?;
        let (file, sequence) = self.write_slot(&state)?;
        let path = Arc::new(self.dir.join(FILE_NAME));
        let mut targets = vec![SyncTarget {
            file: Arc::new(file),
            path,
            failed: Arc::clone(&self.failed),
        }];
        if creating {
            // A new file: its directory entry must be durable too.
            let dir = File::open(&self.dir).map_err(|e| StorageError::io(&self.dir, e))?;
            targets.push(SyncTarget {
                file: Arc::new(dir),
                path: Arc::new(self.dir.clone()),
                failed: Arc::clone(&self.failed),
            });
        }
        self.stored(state, sequence);
        let synced = Arc::clone(&self.synced);
        flusher.sync_then(
            targets,
            Box::new(move |result| {
                if result.is_ok() {
                    synced.fetch_max(sequence, Ordering::SeqCst);
                }
                on_durable(result);
            }),
        );
        Ok(())
    }

    /// Syncs the last slot written if the flush worker has not yet: the next slot overwrites
    /// the one before it, so the last must be durable first. (Refused once an fsync failed:
    /// the worker's, if it failed, must not be retried.)
    fn sync_previous(&mut self) -> StorageResult<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StorageError::Failed { path: self.dir.clone() });
        }
        if self.synced.load(Ordering::SeqCst) >= self.sequence {
            return Ok(());
        }
        let path = self.dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        self.synced_or_failed(file.sync_data())?;
        if self.sequence == 1 {
            // The first store, still unsynced, created the file.
            self.synced_or_failed(sync_directory(&self.dir))?;
        }
        self.synced.fetch_max(self.sequence, Ordering::SeqCst);
        Ok(())
    }

    /// An fsync's result: a failure raises the failure flag and is reported as the log's
    /// failure — never as a full disk or another error a caller would retry.
    fn synced_or_failed(&self, synced: std::io::Result<()>) -> StorageResult<()> {
        synced.map_err(|error| {
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(dir = %self.dir.display(), %error, "fsync of the Raft state failed; the log is now failed");
            StorageError::Failed { path: self.dir.clone() }
        })
    }

    /// Writes `state` into the next slot (not synced); returns the open file and the slot's
    /// sequence number. Refused once an fsync failed.
    fn write_slot(&self, state: &PersistedState) -> StorageResult<(File, u64)> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StorageError::Failed { path: self.dir.clone() });
        }
        let path = self.dir.join(FILE_NAME);
        let sequence = self.sequence + 1;
        let slot = encode_slot(sequence, state);
        let file = OpenOptions::new()
            .write(true)
            .create(self.sequence == 0)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let at = if sequence % 2 == 1 { 0 } else { SLOT_BYTES as u64 };
        file.write_all_at(&slot, at).map_err(|e| StorageError::io(&path, e))?;
        Ok((file, sequence))
    }

    fn stored(&mut self, state: PersistedState, sequence: u64) {
        self.sequence = sequence;
        self.state = state;
        self.unwritten = false;
    }

    /// Writes the in-memory state if it differs from the file (at close: a broker stopping
    /// thousands of idle replicas should not rewrite thousands of unchanged files).
    pub fn store_if_changed(&mut self) -> StorageResult<()> {
        if self.unwritten {
            self.store(self.state.clone())?;
        }
        Ok(())
    }

    /// Updates the in-memory committed entry without writing; it is written with the next
    /// durable store. Losing it in a crash only makes a restart re-apply a little more.
    pub fn set_committed_lazily(&mut self, committed: Option<EntryId>) {
        if self.state.committed != committed {
            self.state.committed = committed;
            self.unwritten = true;
        }
    }
}

/// The state in `raft-state.json` (the format before the slots), empty when absent.
fn load_legacy(dir: &Path) -> StorageResult<PersistedState> {
    let path = dir.join(LEGACY_FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StorageError::BadStateFile {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PersistedState::default()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Makes a directory's entries (creations, renames, deletions) durable.
pub fn sync_dir(dir: &Path) -> StorageResult<()> {
    sync_directory(dir).map_err(|e| StorageError::io(dir, e))
}

fn sync_directory(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::types::RaftIndex;

    fn state(term: u64) -> PersistedState {
        PersistedState {
            vote: Some(StoredVote {
                term,
                node: 2,
                committed: true,
            }),
            committed: Some(EntryId {
                term,
                leader_node: 2,
                index: RaftIndex(term.saturating_mul(10)),
            }),
            purged: Some(PurgedPrefix {
                last: EntryId {
                    term,
                    leader_node: u64::MAX,
                    index: RaftIndex(u64::MAX),
                },
                next_offset: Offset(u64::MAX),
            }),
        }
    }

    #[test]
    fn each_store_survives_a_reload_alternating_slots() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        assert_eq!(file.state(), &PersistedState::default());
        for term in 1..=5 {
            file.store(state(term)).unwrap();
            let reloaded = StateFile::load(dir.path()).unwrap();
            assert_eq!(reloaded.state(), &state(term));
            assert_eq!(reloaded.sequence, term);
        }
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            2 * SLOT_BYTES as u64
        );
    }

    /// Stores `state` through `flusher` and returns a receiver of its durability.
    fn store_then(
        file: &mut StateFile,
        state: PersistedState,
        flusher: &FlushHandle,
    ) -> std::sync::mpsc::Receiver<std::io::Result<()>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        file.store_then(
            state,
            flusher,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        )
        .unwrap();
        receiver
    }

    #[test]
    fn a_store_synced_by_the_flush_worker_reports_once_durable_and_the_next_syncs_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let worker = crate::storage::flush::FlushWorker::start("state-test").unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        // The first store creates the file: the worker syncs it and the directory.
        let first = store_then(&mut file, state(1), &worker.handle());
        assert_eq!(file.state(), &state(1), "reads as stored at once");
        first.recv().unwrap().unwrap();
        assert_eq!(file.synced.load(Ordering::SeqCst), 1);
        assert_eq!(StateFile::load(dir.path()).unwrap().state(), &state(1));
        // Two stores back to back: the second finds the first durable before writing, whether
        // the worker got to it or the store synced it itself.
        let second = store_then(&mut file, state(2), &worker.handle());
        let third = store_then(&mut file, state(3), &worker.handle());
        assert!(file.synced.load(Ordering::SeqCst) >= 2);
        second.recv().unwrap().unwrap();
        third.recv().unwrap().unwrap();
        assert_eq!(file.synced.load(Ordering::SeqCst), 3);
        let reloaded = StateFile::load(dir.path()).unwrap();
        assert_eq!((reloaded.state(), reloaded.sequence), (&state(3), 3));
    }

    #[test]
    fn a_store_the_flush_worker_could_not_sync_is_synced_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        file.store(state(1)).unwrap();
        let stopped = {
            let worker = crate::storage::flush::FlushWorker::start("state-test").unwrap();
            worker.handle()
        };
        let refused = store_then(&mut file, state(2), &stopped);
        assert!(
            refused.recv().unwrap().is_err(),
            "a stopped worker reports the store not durable"
        );
        assert_eq!(file.synced.load(Ordering::SeqCst), 1);
        // The next store syncs the one before it in place, then writes over the slot before.
        file.store(state(3)).unwrap();
        assert_eq!(file.synced.load(Ordering::SeqCst), 3);
        assert_eq!(StateFile::load(dir.path()).unwrap().state(), &state(3));
    }

    #[test]
    fn after_a_failed_fsync_of_its_log_no_store_is_attempted() {
        let dir = tempfile::tempdir().unwrap();
        let failed = Arc::new(AtomicBool::new(false));
        let mut file = StateFile::load(dir.path())
            .unwrap()
            .sharing_failure(Arc::clone(&failed));
        file.store(state(1)).unwrap();
        let worker = crate::storage::flush::FlushWorker::start("state-test").unwrap();
        let pending = store_then(&mut file, state(2), &worker.handle());
        // As the flush worker does when the fsync fails (the page cache's state is then
        // unknown, and syncing again might "succeed" without the slot on disk).
        failed.store(true, Ordering::SeqCst);
        let _ = pending.recv();
        assert!(matches!(file.store(state(3)), Err(StorageError::Failed { .. })));
        let (sender, _receiver) = std::sync::mpsc::channel();
        let refused = file.store_then(
            state(4),
            &worker.handle(),
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        );
        assert!(matches!(refused, Err(StorageError::Failed { .. })));
        assert_ne!(StateFile::load(dir.path()).unwrap().state(), &state(3));
    }

    #[test]
    fn a_torn_slot_leaves_the_state_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        file.store(state(1)).unwrap();
        file.store(state(2)).unwrap();
        file.store(state(3)).unwrap(); // slot 0 again
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        // Tear the newest slot (the first) halfway through its payload.
        for b in &mut bytes[SLOT_HEADER_BYTES + 10..SLOT_BYTES] {
            *b = 0;
        }
        std::fs::write(&path, &bytes).unwrap();
        let mut reloaded = StateFile::load(dir.path()).unwrap();
        assert_eq!(reloaded.state(), &state(2));
        // The next store goes to the slot after the surviving one (over the torn one).
        reloaded.store(state(4)).unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap().state(), &state(4));
    }

    #[test]
    fn a_first_store_torn_is_as_if_never_begun_but_two_bad_slots_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut torn = encode_slot(1, &state(1));
        torn.truncate(SLOT_HEADER_BYTES + 5);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap().state(), &PersistedState::default());

        let mut bad = encode_slot(1, &state(1));
        bad[30] ^= 0xff;
        let mut other = encode_slot(2, &state(2));
        other[40] ^= 0xff;
        bad.extend_from_slice(&other);
        std::fs::write(&path, &bad).unwrap();
        assert!(matches!(
            StateFile::load(dir.path()),
            Err(StorageError::BadStateFile { .. })
        ));

        // Only the first slot is written first: an empty one beside a bad second is damage.
        let mut first_lost = vec![0u8; SLOT_BYTES];
        first_lost.extend_from_slice(&other);
        std::fs::write(&path, &first_lost).unwrap();
        assert!(matches!(
            StateFile::load(dir.path()),
            Err(StorageError::BadStateFile { .. })
        ));
    }

    #[test]
    fn the_json_file_of_the_previous_format_is_read_and_replaced_by_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LEGACY_FILE_NAME),
            serde_json::to_vec(&state(7)).unwrap(),
        )
        .unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        assert_eq!(file.state(), &state(7));
        // Through the flush worker too: converted in place, the old file removed once the new
        // one is durable.
        let worker = crate::storage::flush::FlushWorker::start("state-test").unwrap();
        store_then(&mut file, state(8), &worker.handle())
            .recv()
            .unwrap()
            .unwrap();
        assert!(!dir.path().join(LEGACY_FILE_NAME).exists());
        assert_eq!(StateFile::load(dir.path()).unwrap().state(), &state(8));

        std::fs::write(dir.path().join(LEGACY_FILE_NAME), b"{not json").unwrap();
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        assert!(matches!(
            StateFile::load(dir.path()),
            Err(StorageError::BadStateFile { .. })
        ));
    }

    #[test]
    fn the_largest_state_fits_its_slot() {
        // `encode_slot` asserts it; the largest values make the longest JSON.
        let slot = encode_slot(u64::MAX, &state(u64::MAX));
        assert_eq!(slot.len(), SLOT_BYTES);
    }
}
