//! Sparse index files of a segment: `.index` (Raft index and offset → byte position) and
//! `.timeindex` (timestamp → offset).
//!
//! Indexes are derived data: they are rebuilt from the log whenever they are missing, torn or
//! inconsistent, so they are written only when a segment is sealed (whole, then fsynced).
//! Entries are fixed-size little-endian records; the whole index of a segment is held in
//! memory for lookups, and the active segment's only there.

use super::error::{StorageError, StorageResult};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// One fixed-size index record.
pub trait IndexEntry: Copy + std::fmt::Debug {
    /// Encoded length in bytes.
    const LEN: usize;
    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Decodes from exactly `LEN` bytes.
    fn decode(bytes: &[u8]) -> Self;
    /// Whether `self` may follow `previous` (indexes are strictly increasing).
    fn follows(&self, previous: &Self) -> bool;
}

/// `.index` record: the frame at `position` holds Raft entry `raft_index`, whose records start
/// at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionEntry {
    /// Raft index of the frame.
    pub raft_index: u64,
    /// Base offset of the frame.
    pub offset: u64,
    /// Byte position of the frame in the segment file.
    pub position: u32,
}

impl IndexEntry for PositionEntry {
    const LEN: usize = 20;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.raft_index.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        PositionEntry {
            raft_index: u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
            offset: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            position: u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")),
        }
    }

    fn follows(&self, previous: &Self) -> bool {
        self.raft_index > previous.raft_index && self.offset >= previous.offset && self.position > previous.position
    }
}

/// `.timeindex` record: `timestamp` is the largest record timestamp in the segment up to and
/// including the batch starting at `offset`. So every batch before `offset` is older than any
/// `t > timestamp`, and a search for `t` may start at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest record timestamp so far in the segment (ms).
    pub timestamp: i64,
    /// Base offset of the batch that raised the maximum.
    pub offset: u64,
}

impl IndexEntry for TimeEntry {
    const LEN: usize = 16;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")),
            offset: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        }
    }

    fn follows(&self, previous: &Self) -> bool {
        self.timestamp > previous.timestamp && self.offset >= previous.offset
    }
}

/// A segment's index, held in memory and written to its file when the segment is sealed.
///
/// The file is not kept open: an active segment's index lives only in memory (recovery scans
/// the active segment anyway and rebuilds it), so a replica holds no descriptor for its
/// indexes. A sealed segment's file is written whole, once, and fsynced with the seal.
#[derive(Debug)]
pub struct SparseIndex<E: IndexEntry> {
    path: PathBuf,
    entries: Vec<E>,
}

/// How an index file looked when it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexLoad {
    /// Present and well-formed.
    Intact,
    /// Absent: must be rebuilt from the log.
    Missing,
    /// Torn (length not a multiple of the entry size) or out of order: must be rebuilt.
    Damaged,
}

impl<E: IndexEntry> SparseIndex<E> {
    /// An empty index to be written at `path` (a new segment's).
    pub fn empty(path: &Path) -> Self {
        SparseIndex {
            path: path.to_path_buf(),
            entries: Vec::new(),
        }
    }

    /// Loads the index file at `path`, if it exists and is well-formed.
    pub fn load(path: &Path) -> StorageResult<(Self, IndexLoad)> {
        let mut index = SparseIndex::empty(path);
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok((index, IndexLoad::Missing)),
            Err(e) => return Err(StorageError::io(path, e)),
        };
        if bytes.len() % E::LEN != 0 {
            return Ok((index, IndexLoad::Damaged));
        }
        index.entries.reserve_exact(bytes.len() / E::LEN);
        for chunk in bytes.chunks_exact(E::LEN) {
            let entry = E::decode(chunk);
            if let Some(previous) = index.entries.last() {
                if !entry.follows(previous) {
                    index.entries.clear();
                    return Ok((index, IndexLoad::Damaged));
                }
            }
            index.entries.push(entry);
        }
        Ok((index, IndexLoad::Intact))
    }

    /// Entries in order.
    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    /// The last entry, if any.
    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    /// Appends one entry (in memory; the file is written at [`persist`](Self::persist)).
    pub fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// Keeps the first `len` entries.
    pub fn truncate(&mut self, len: usize) {
        self.entries.truncate(len);
    }

    /// Replaces the whole index (after a rebuild from the log).
    pub fn replace(&mut self, entries: Vec<E>) {
        self.entries = entries;
    }

    /// Writes the whole index to its file and makes it durable (when a segment is sealed, and
    /// after a sealed segment's index was rebuilt). A crash part-way leaves a torn or missing
    /// file, which the next open detects and rebuilds from the log.
    pub fn persist(&self) -> StorageResult<()> {
        let mut bytes = Vec::with_capacity(self.entries.len() * E::LEN);
        for entry in &self.entries {
            entry.encode(&mut bytes);
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .map_err(|e| StorageError::io(&self.path, e))?;
        file.write_all(&bytes).map_err(|e| StorageError::io(&self.path, e))?;
        file.sync_data().map_err(|e| StorageError::io(&self.path, e))
    }

    /// Removes the file (segment deletion).
    pub fn remove_file(&self) -> StorageResult<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(StorageError::io(&self.path, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_file_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let (mut index, load) = SparseIndex::<PositionEntry>::load(&path).unwrap();
        assert_eq!(load, IndexLoad::Missing);
        let a = PositionEntry {
            raft_index: 5,
            offset: 10,
            position: 100,
        };
        let b = PositionEntry {
            raft_index: 9,
            offset: 10,
            position: 4200,
        };
        index.push(a);
        index.push(b);
        assert!(!path.exists(), "an index is written only when persisted");
        index.persist().unwrap();
        drop(index);
        let (index, load) = SparseIndex::<PositionEntry>::load(&path).unwrap();
        assert_eq!(load, IndexLoad::Intact);
        assert_eq!(index.entries(), &[a, b]);
        drop(index);

        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(30).unwrap();
        let (_, load) = SparseIndex::<PositionEntry>::load(&path).unwrap();
        assert_eq!(load, IndexLoad::Damaged);
    }
}
