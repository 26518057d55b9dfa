//! The small per-partition file holding Raft's vote, the last known committed entry and the
//! purged prefix. Written atomically: a temporary file is written and fsynced, renamed over
//! the old one, and the directory is fsynced, so a crash leaves either the old or the new state.

use super::error::{StorageError, StorageResult};
use super::types::{EntryId, Offset};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "raft-state.json";
const TEMP_NAME: &str = "raft-state.json.tmp";

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
}

impl StateFile {
    /// Loads the state of `dir` (an absent file is the empty state).
    pub fn load(dir: &Path) -> StorageResult<StateFile> {
        let path = dir.join(FILE_NAME);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StorageError::BadStateFile {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedState::default(),
            Err(e) => return Err(StorageError::io(path, e)),
        };
        Ok(StateFile {
            dir: dir.to_path_buf(),
            state,
            unwritten: false,
        })
    }

    /// The current state.
    pub fn state(&self) -> &PersistedState {
        &self.state
    }

    /// Replaces the state durably.
    pub fn store(&mut self, state: PersistedState) -> StorageResult<()> {
        let temp = self.dir.join(TEMP_NAME);
        let path = self.dir.join(FILE_NAME);
        let bytes = serde_json::to_vec(&state).expect("plain data serializes");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| StorageError::io(&temp, e))?;
        file.write_all(&bytes).map_err(|e| StorageError::io(&temp, e))?;
        file.sync_data().map_err(|e| StorageError::io(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| StorageError::io(&path, e))?;
        sync_dir(&self.dir)?;
        self.state = state;
        self.unwritten = false;
        Ok(())
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

/// Makes a directory's entries (creations, renames, deletions) durable.
pub fn sync_dir(dir: &Path) -> StorageResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::types::RaftIndex;

    #[test]
    fn state_survives_reload_and_garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::load(dir.path()).unwrap();
        assert_eq!(file.state(), &PersistedState::default());
        let state = PersistedState {
            vote: Some(StoredVote {
                term: 4,
                node: 2,
                committed: true,
            }),
            committed: Some(EntryId {
                term: 4,
                leader_node: 2,
                index: RaftIndex(10),
            }),
            purged: None,
        };
        file.store(state.clone()).unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap().state(), &state);

        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert!(matches!(
            StateFile::load(dir.path()),
            Err(StorageError::BadStateFile { .. })
        ));
    }
}
