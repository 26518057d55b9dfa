//! `snapshot.bin`: the newest snapshot of a partition replica's applied state, for groups whose
//! log is purged behind snapshots (the replication layer decides which, and what the bytes are;
//! storage only keeps them). Without it, a restart after a purge could not rebuild the state the
//! purged entries made.
//!
//! Written as `raft-state.json` used to be: a temporary file is written and fsynced, renamed over the old
//! one, and the directory is fsynced, so a crash leaves the old or the new snapshot, never a mix.
//! The file is the bytes behind a CRC-32C of them (4 bytes, little-endian), so a damaged file
//! is reported, not installed.

use super::error::{StorageError, StorageResult};
use super::state_file::sync_dir;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

const FILE_NAME: &str = "snapshot.bin";
const TEMP_NAME: &str = "snapshot.bin.tmp";

/// The snapshot kept in `dir`, if any. A temporary file left by a crash mid-write is removed.
pub fn load(dir: &Path) -> StorageResult<Option<Vec<u8>>> {
    let temp = dir.join(TEMP_NAME);
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(temp, e)),
    }
    let path = dir.join(FILE_NAME);
    let file = match std::fs::read(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(path, e)),
    };
    let corrupt = |reason: &str| StorageError::Corrupt {
        path: path.clone(),
        position: 0,
        reason: reason.to_string(),
    };
    let (crc, bytes) = file
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("shorter than its checksum"))?;
    if u32::from_le_bytes(*crc) != crc32c::crc32c(bytes) {
        return Err(corrupt("snapshot checksum mismatch"));
    }
    Ok(Some(bytes.to_vec()))
}

/// Replaces the snapshot kept in `dir` with `bytes`, durably. Blocking (two fsyncs).
pub fn store(dir: &Path, bytes: &[u8]) -> StorageResult<()> {
    let temp = dir.join(TEMP_NAME);
    let path = dir.join(FILE_NAME);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| StorageError::io(&temp, e))?;
    file.write_all(&crc32c::crc32c(bytes).to_le_bytes())
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_data())
        .map_err(|e| StorageError::io(&temp, e))?;
    std::fs::rename(&temp, &path).map_err(|e| StorageError::io(&path, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_snapshot_is_loaded_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        store(dir.path(), b"first").unwrap();
        store(dir.path(), b"second").unwrap();
        std::fs::write(dir.path().join(TEMP_NAME), b"half-written").unwrap();
        assert_eq!(load(dir.path()).unwrap().as_deref(), Some(&b"second"[..]));
        assert!(!dir.path().join(TEMP_NAME).exists(), "the crash leftover is removed");

        let mut damaged = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        *damaged.last_mut().unwrap() ^= 1;
        std::fs::write(dir.path().join(FILE_NAME), damaged).unwrap();
        assert!(matches!(load(dir.path()), Err(StorageError::Corrupt { .. })));
    }
}
