//! Runs openraft's storage conformance suite against the segment-log adapter.
//!
//! The suite expects a snapshot to hold the state as of the last applied entry. That is what a
//! compacting group's state machine builds, so the suite runs with one; an ordinary
//! partition's snapshot stands at retention's log start instead (its data after that point is
//! in the log, not the snapshot), which `cluster-tests/tests/retention.rs` shows on real
//! brokers.

use super::snapshot::Compaction;
use super::{AppliedState, BatchObserver, PartitionLogStore, PartitionRaft, PartitionStateMachine};
use crate::storage::{FlushWorker, LogConfig, Offset, SegmentLog};
use openraft::testing::log::{StoreBuilder, Suite};
use std::sync::Arc;
use tempfile::TempDir;

/// An observer with no state of its own that opts in to compaction.
struct Compacting;

impl BatchObserver for Compacting {
    fn on_applied(&self, _: Offset, _: &bytes::Bytes, _: &AppliedState) {}

    fn compaction(&self) -> Option<Compaction> {
        Some(Compaction {
            log_per_snapshot: 2,
            min_log_bytes: 64 * 1024,
            keep_behind_snapshot: 0,
        })
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(Vec::new())
    }

    fn install_snapshot(&self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
}

struct SegmentStoreBuilder {
    flush: FlushWorker,
    config: LogConfig,
    /// Snapshots persisted in the partition directory, as compacting groups keep them.
    persist_snapshots: bool,
}

impl StoreBuilder<PartitionRaft, PartitionLogStore, PartitionStateMachine, TempDir> for SegmentStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, PartitionLogStore, PartitionStateMachine), openraft::StorageError<PartitionRaft>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, _) =
            SegmentLog::open(dir.path(), self.config.clone(), self.flush.handle(), 0).expect("a fresh log opens");
        let mut state_machine = PartitionStateMachine::with_observer(Arc::new(Compacting), None);
        if self.persist_snapshots {
            state_machine = state_machine
                .persisting_snapshots(dir.path())
                .expect("an empty directory has no snapshot");
        }
        let store = PartitionLogStore::new(log).sharing_snapshots_of(&state_machine);
        Ok((dir, store, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_log_passes_the_openraft_storage_suite() {
    let builder = SegmentStoreBuilder {
        flush: FlushWorker::start("suite").unwrap(),
        config: LogConfig::default(),
        persist_snapshots: false,
    };
    Suite::test_all(builder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_log_passes_the_suite_with_tiny_segments() {
    // Segments of 1 KiB roll every few entries, so truncation and purge cross segment files.
    let builder = SegmentStoreBuilder {
        flush: FlushWorker::start("suite-small").unwrap(),
        config: LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 64,
            ..LogConfig::default()
        },
        persist_snapshots: false,
    };
    Suite::test_all(builder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_log_passes_the_suite_with_persisted_snapshots() {
    // As a compacting group runs: every snapshot built or installed is written to the
    // partition directory, and purges beyond the log continue from the snapshot's offsets.
    let builder = SegmentStoreBuilder {
        flush: FlushWorker::start("suite-persisted").unwrap(),
        config: LogConfig {
            segment_bytes: 1024,
            index_interval_bytes: 64,
            ..LogConfig::default()
        },
        persist_snapshots: true,
    };
    Suite::test_all(builder).await.unwrap();
}
