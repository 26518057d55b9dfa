//! The controller's state machine on disk, in sled: after every applied command, the metadata
//! and the state machine's position, as one value so the two never disagree. A restarted
//! controller resumes from it instead of re-applying its whole log.
//!
//! The controller log stays the authority: this store may lag it (sled flushes in the
//! background; the lag is re-applied at start) and is checked against it at start (a store
//! ahead of a damaged log is dropped and rebuilt from the log). An unreadable store is reported
//! and rebuilt the same way, never trusted.

use super::metadata::ClusterMetadata;
use crate::replication::AppliedState;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The key of the one value.
const STATE_KEY: &[u8] = b"applied";

/// What is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Persisted {
    applied: AppliedState,
    metadata: ClusterMetadata,
}

/// The sled database of one controller replica.
pub struct MetadataStore {
    db: sled::Db,
}

impl MetadataStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<MetadataStore, sled::Error> {
        Ok(MetadataStore { db: sled::open(dir)? })
    }

    /// The stored position and metadata; `None` if nothing is stored or it does not parse (then
    /// the controller rebuilds from its log).
    pub fn load(&self) -> Option<(AppliedState, ClusterMetadata)> {
        let bytes = match self.db.get(STATE_KEY) {
            Ok(bytes) => bytes?,
            Err(error) => {
                tracing::warn!(%error, "controller state store unreadable: rebuilding from the log");
                return None;
            }
        };
        match serde_json::from_slice::<Persisted>(&bytes) {
            Ok(persisted) => Some((persisted.applied, persisted.metadata)),
            Err(error) => {
                tracing::warn!(%error, "controller state store holds an unparsable value: rebuilding from the log");
                None
            }
        }
    }

    /// Stores `metadata` as of `applied`, replacing what was there.
    pub fn save(&self, applied: &AppliedState, metadata: &ClusterMetadata) -> Result<(), String> {
        let persisted = Persisted {
            applied: applied.clone(),
            metadata: metadata.clone(),
        };
        let bytes = serde_json::to_vec(&persisted).map_err(|e| e.to_string())?;
        self.db.insert(STATE_KEY, bytes).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Removes the stored value (it is behind a log that lost entries, or was rejected).
    pub fn clear(&self) {
        if let Err(error) = self.db.remove(STATE_KEY) {
            tracing::warn!(%error, "could not clear the controller state store");
        }
    }

    /// Writes everything stored so far to disk (at shutdown: a clean restart re-applies nothing).
    pub fn flush(&self) {
        if let Err(error) = self.db.flush() {
            tracing::warn!(%error, "could not flush the controller state store");
        }
    }

    /// Stores raw bytes as the value (tests: a corrupted store).
    #[cfg(test)]
    pub fn put_raw(&self, bytes: &[u8]) {
        self.db.insert(STATE_KEY, bytes).expect("sled insert");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unparsable_value_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::open(dir.path()).unwrap();
        assert!(store.load().is_none(), "empty");
        store
            .save(&AppliedState::default(), &ClusterMetadata::default())
            .unwrap();
        assert_eq!(
            store.load(),
            Some((AppliedState::default(), ClusterMetadata::default()))
        );
        store.put_raw(b"{not json");
        assert!(store.load().is_none());
        store.clear();
        assert!(store.load().is_none());
    }
}
