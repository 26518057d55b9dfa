//! The acknowledged mark: the last entry this replica has reported durable — under Raft, the
//! entry its leader may count towards a commit.
//!
//! A torn tail cut on open is normally the unsynced end of a crash and costs nothing: nothing
//! in it was ever reported durable. But if storage loses data that *was* reported durable (a
//! lying disk, a bad sector, an operator's mistake), the replica holds less than its leader
//! counted on, and if it then voted, a majority without the lost entries could elect a leader
//! and a committed entry would be gone. Comparing the log's end after recovery with this mark
//! tells the two cases apart: the replication layer keeps a replica whose log ends before its
//! mark out of elections until it has caught up (see `replication::replica`).
//!
//! The mark is one 32-byte record (`ACK1`, CRC32C, term, leader node, index) rewritten in place
//! *after* the data it names is fsynced and *before* the durability is reported — so only under
//! `fsync = always`: under the other policies nothing is durable when it is reported, and a mark
//! written back by the kernel ahead of its data would hold healthy replicas out of elections
//! after a power loss. It is not fsynced itself: it only needs to outlive the process (the page
//! cache keeps it through a `kill -9`). If a power loss drops its last update, the mark is merely
//! older — it under-reports, never over-reports.
//!
//! When Raft replaces entries (`lower_to`), appends made before still have durability reports on
//! their way from the flush worker; each carries the mark's generation from when it was made, and
//! reports from an older generation are ignored, so a replaced entry never reappears as the mark.

use super::error::{StorageError, StorageResult};
use super::open_files::{BudgetedFile, OpenFiles};
use super::types::{EntryId, RaftIndex};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

const FILE_NAME: &str = "acknowledged.mark";
const MAGIC: &[u8; 4] = b"ACK1";
const RECORD_LEN: usize = 32;

/// What the mark file held when the log was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkOnOpen {
    /// No mark yet (a new replica, or one from before marks existed).
    Absent,
    /// The last entry reported durable before the restart.
    Entry(EntryId),
    /// The file exists but its record fails its checksum: storage damaged it.
    Unreadable,
}

/// The mark of one partition replica.
#[derive(Debug)]
pub struct AcknowledgedMark {
    /// Written after every durable append under `fsync = always`; open while the broker's
    /// open-file budget keeps it so.
    file: BudgetedFile,
    state: Mutex<MarkState>,
}

#[derive(Debug)]
struct MarkState {
    /// The entry the file names (`None` until the first durable append).
    current: Option<EntryId>,
    /// Bumped whenever Raft replaces entries.
    generation: u64,
}

/// Raft's log order: by leader (term, then node), then index.
fn log_order(id: &EntryId) -> (u64, u64, u64) {
    (id.term, id.leader_node, id.index.0)
}

impl AcknowledgedMark {
    /// Opens (or creates) the mark in `dir`, its file under the `files` budget, returning it
    /// and what it held.
    pub fn open(dir: &Path, files: &OpenFiles) -> StorageResult<(AcknowledgedMark, MarkOnOpen)> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        let mut record = [0u8; RECORD_LEN];
        let length = file.metadata().map_err(|e| StorageError::io(&path, e))?.len();
        let found = if length == 0 {
            MarkOnOpen::Absent
        } else if length != RECORD_LEN as u64 {
            MarkOnOpen::Unreadable
        } else {
            file.read_exact_at(&mut record, 0)
                .map_err(|e| StorageError::io(&path, e))?;
            decode(&record).map_or(MarkOnOpen::Unreadable, MarkOnOpen::Entry)
        };
        let current = match found {
            MarkOnOpen::Entry(id) => Some(id),
            MarkOnOpen::Absent | MarkOnOpen::Unreadable => None,
        };
        Ok((
            AcknowledgedMark {
                file: files.adopt(path, file),
                state: Mutex::new(MarkState { current, generation: 0 }),
            },
            found,
        ))
    }

    /// The generation to pass to [`advance`](Self::advance) for an append made now.
    pub fn generation(&self) -> u64 {
        self.state.lock().expect("acknowledged mark").generation
    }

    /// Records that everything up to `id` (appended in `generation`) is durable, unless the mark
    /// is already further or Raft has replaced entries since. Called on the flush worker between
    /// the fsync and the durability callback.
    pub fn advance(&self, id: EntryId, generation: u64) -> std::io::Result<()> {
        let mut state = self.state.lock().expect("acknowledged mark");
        if state.generation != generation || state.current.is_some_and(|c| log_order(&c) >= log_order(&id)) {
            return Ok(());
        }
        self.file.get()?.write_all_at(&encode(id), 0)?;
        state.current = Some(id);
        Ok(())
    }

    /// Raft replaced the entries after `last_kept` (they were never committed): the mark now
    /// names the new last entry, so a restart does not mistake the replaced entries for lost ones.
    pub fn lower_to(&self, last_kept: Option<EntryId>) -> StorageResult<()> {
        let mut state = self.state.lock().expect("acknowledged mark");
        state.generation += 1;
        let Some(now) = state.current else {
            return Ok(());
        };
        let keep_index = last_kept.map_or(RaftIndex(0), |k| k.index);
        if now.index <= keep_index {
            return Ok(());
        }
        let file = self.file.get().map_err(|e| StorageError::io(self.file.path(), e))?;
        match last_kept {
            Some(kept) => file.write_all_at(&encode(kept), 0),
            None => file.set_len(0),
        }
        .map_err(|e| StorageError::io(self.file.path(), e))?;
        state.current = last_kept;
        Ok(())
    }

    /// The entry the mark names now.
    #[cfg(test)]
    fn current(&self) -> Option<EntryId> {
        self.state.lock().expect("acknowledged mark").current
    }
}

fn encode(id: EntryId) -> [u8; RECORD_LEN] {
    let mut record = [0u8; RECORD_LEN];
    record[..4].copy_from_slice(MAGIC);
    record[8..16].copy_from_slice(&id.term.to_le_bytes());
    record[16..24].copy_from_slice(&id.leader_node.to_le_bytes());
    record[24..32].copy_from_slice(&id.index.0.to_le_bytes());
    let crc = crc32c::crc32c(&record[8..]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

fn decode(record: &[u8; RECORD_LEN]) -> Option<EntryId> {
    let field = |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
    (&record[..4] == MAGIC && crc == crc32c::crc32c(&record[8..])).then(|| EntryId {
        term: field(8),
        leader_node: field(16),
        index: RaftIndex(field(24)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(term: u64, index: u64) -> EntryId {
        EntryId {
            term,
            leader_node: 2,
            index: RaftIndex(index),
        }
    }

    #[test]
    fn the_mark_only_moves_forward_except_when_raft_replaces_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, found) = AcknowledgedMark::open(dir.path(), &OpenFiles::new(16)).unwrap();
        assert_eq!(found, MarkOnOpen::Absent);
        mark.advance(id(1, 10), mark.generation()).unwrap();
        mark.advance(id(1, 7), mark.generation()).unwrap();
        assert_eq!(mark.current(), Some(id(1, 10)));
        drop(mark);

        let (mark, found) = AcknowledgedMark::open(dir.path(), &OpenFiles::new(16)).unwrap();
        assert_eq!(found, MarkOnOpen::Entry(id(1, 10)));
        mark.lower_to(Some(id(1, 12))).unwrap();
        assert_eq!(mark.current(), Some(id(1, 10)), "lowering never raises");
        mark.lower_to(Some(id(1, 8))).unwrap();
        drop(mark);
        let (mark, found) = AcknowledgedMark::open(dir.path(), &OpenFiles::new(16)).unwrap();
        assert_eq!(found, MarkOnOpen::Entry(id(1, 8)));
        mark.lower_to(None).unwrap();
        drop(mark);
        assert_eq!(
            AcknowledgedMark::open(dir.path(), &OpenFiles::new(16)).unwrap().1,
            MarkOnOpen::Absent
        );
    }

    #[test]
    fn a_report_from_before_raft_replaced_entries_does_not_bring_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, _) = AcknowledgedMark::open(dir.path(), &OpenFiles::new(16)).unwrap();
        mark.advance(id(2, 9), mark.generation()).unwrap();
        // Entries 10..=50 of term 2 are appended; before their fsync reports arrive, a new
        // leader replaces everything after 9.
        let before = mark.generation();
        mark.lower_to(Some(id(2, 9))).unwrap();
        mark.advance(id(2, 50), before).unwrap();
        assert_eq!(mark.current(), Some(id(2, 9)), "the late report is ignored");
        // The new leader's entries move it on, in log order.
        mark.advance(id(3, 45), mark.generation()).unwrap();
        assert_eq!(mark.current(), Some(id(3, 45)));
        mark.advance(id(2, 60), mark.generation()).unwrap();
        assert_eq!(
            mark.current(),
            Some(id(3, 45)),
            "an older leader's entry is not further"
        );
    }

    #[test]
    fn a_damaged_mark_is_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, _) = AcknowledgedMark::open(dir.path(), &OpenFiles::new(16)).unwrap();
        mark.advance(id(3, 40), mark.generation()).unwrap();
        drop(mark);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            AcknowledgedMark::open(dir.path(), &OpenFiles::new(16)).unwrap().1,
            MarkOnOpen::Unreadable
        );
        std::fs::write(&path, b"short").unwrap();
        assert_eq!(
            AcknowledgedMark::open(dir.path(), &OpenFiles::new(16)).unwrap().1,
            MarkOnOpen::Unreadable
        );
    }
}
