//! Snapshots of a compacting group (`__consumer_offsets`), taken when its state machine says one
//! is due ([`Compaction::snapshot_due`](crate::replication::Compaction::snapshot_due)): the
//! active segment is sealed first, then openraft builds the snapshot and purges the log behind
//! it.
//!
//! Why seal: a purge deletes whole segments only. The log written between two snapshots of a
//! small state is a few KiB, far less than a segment, so without the seal the active segment
//! would hold a segment's worth of commits that every snapshot already covers. The snapshot is
//! asked for once every entry of the sealed segment is applied, so the purge behind it deletes
//! the whole segment: the log on disk is the active segment and at most one sealed one.

use crate::replication::raft_node::PartitionRaftNode;
use crate::storage::SegmentLog;
use openraft::async_runtime::watch::WatchReceiver;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How long a requested snapshot may take before a new request may seal again.
const BUILD_WAIT: Duration = Duration::from_secs(5);

/// Runs until the group's state machine is dropped (the Raft node shut down): on a signal of
/// `due`, seals the active segment, asks openraft for a snapshot and waits for it.
pub(super) async fn snapshot_when_due(
    group: u64,
    raft: PartitionRaftNode,
    log: Arc<RwLock<SegmentLog>>,
    mut due: watch::Receiver<u64>,
) {
    while due.changed().await.is_ok() {
        // (A compacting group's node never sleeps: it has an observer.)
        let Ok(raft) = raft.live().await else {
            return;
        };
        let log = Arc::clone(&log);
        // A seal fsyncs the sealed segment: off the runtime.
        let sealed = tokio::task::spawn_blocking(move || match log.write() {
            Ok(mut log) => {
                let through = log.last_entry_id().map(|id| id.index.0);
                log.seal_active(proto::record_batch::now_ms())
                    .map(|_| through)
                    .map_err(|e| e.to_string())
            }
            Err(_) => Err("partition log lock poisoned by an earlier panic".to_string()),
        })
        .await;
        match sealed {
            // The snapshot waits until everything in the sealed segment is applied, so that it
            // covers the whole segment and the purge behind it deletes it. (Entries in flight
            // when it was sealed are committed within a Raft round.)
            Ok(Ok(Some(through))) => {
                let _ = raft
                    .wait(Some(BUILD_WAIT))
                    .metrics(
                        |m| m.last_applied.is_some_and(|applied| applied.index >= through),
                        "the sealed segment applied",
                    )
                    .await;
            }
            Ok(Ok(None)) => {}
            // The snapshot is still worth taking: the purge then deletes the sealed segments
            // it covers, and the next seal may succeed.
            Ok(Err(reason)) => tracing::warn!(group, %reason, "sealing the active segment before a snapshot failed"),
            Err(_) => return,
        }
        let before = raft.metrics().borrow_watched().snapshot;
        if let Err(e) = raft.trigger().snapshot().await {
            // Only a stopped Raft core refuses: the replica is shutting down.
            tracing::debug!(group, error = %e, "snapshot not triggered");
            return;
        }
        // Until this snapshot is built, the signals of entries applied meanwhile would only seal
        // more segments. If openraft ignored the request (still building an earlier one), the
        // state machine signals again with the next entry.
        let _ = raft
            .wait(Some(BUILD_WAIT))
            .metrics(|m| m.snapshot > before, "the requested snapshot")
            .await;
        due.borrow_and_update();
    }
}
