//! The reassignment driver: carries out the replica moves the controller records.
//!
//! The controller holds each move's intent in the replicated metadata (`reassignment` of a
//! partition); every broker runs this driver, and for each moving partition whose replica it
//! leads it takes the next Raft membership step (`PartitionReplica::step_toward_voters`:
//! learners, catch-up, joint consensus, clean-up). When the voters are the ones wanted it
//! reports so to the controller (`CompleteReassignment`), which makes them the replicas; the
//! brokers dropped then stop their replicas and delete the data (`PartitionManager::reconcile`).
//!
//! Nothing here is remembered between passes: a pass starts from the metadata and from the
//! membership in the partition's Raft log. So a move survives any crash — of the partition's
//! leader (its successor drives on), of the controller leader (the intent is replicated; the
//! report is retried) — and a cancel is just another wanted voter set.

use super::PartitionManager;
use crate::controller::forward::ControllerLink;
use crate::controller::metadata::{ClusterMetadata, MetadataCommand, PartitionAssignment};
use crate::replication::MembershipStep;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often the driver looks at the moves in progress (and at once when the metadata changes).
const PASS_INTERVAL: Duration = Duration::from_millis(250);
/// A learner lacking at most this many entries is caught up enough to become a voter: the
/// joint configuration then commits without waiting on it.
const MAX_LEARNER_LAG: u64 = 64;
/// Longest one membership step (a transfer or a change to commit) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Partitions stepped at once.
const CONCURRENT_STEPS: usize = 32;

/// Drives the moves whose partitions this broker leads, for ever.
pub async fn drive_forever(node_id: u64, partitions: Arc<PartitionManager>, link: ControllerLink) {
    let mut changes = link.controller().subscribe();
    loop {
        let metadata = link.controller().metadata();
        pass(node_id, &partitions, &link, &metadata).await;
        let _ = tokio::time::timeout(PASS_INTERVAL, changes.changed()).await;
    }
}

/// One pass over the moves in progress.
async fn pass(node_id: u64, partitions: &PartitionManager, link: &ControllerLink, metadata: &ClusterMetadata) {
    let led: Vec<(String, PartitionAssignment)> = metadata
        .reassignments()
        .filter(|(topic, assignment)| {
            partitions
                .get(topic, assignment.partition)
                .is_some_and(|replica| replica.group() == assignment.group && replica.leader() == Some(node_id))
        })
        .map(|(topic, assignment)| (topic.to_string(), assignment.clone()))
        .collect();
    futures_util::stream::iter(led)
        .for_each_concurrent(CONCURRENT_STEPS, |(topic, assignment)| async move {
            step(partitions, link, metadata, &topic, &assignment).await;
        })
        .await;
}

/// The next step of one partition's move, and its report once done.
async fn step(
    partitions: &PartitionManager,
    link: &ControllerLink,
    metadata: &ClusterMetadata,
    topic: &str,
    assignment: &PartitionAssignment,
) {
    let Some(replica) = partitions.get(topic, assignment.partition) else {
        return;
    };
    let Some(wanted_ids) = assignment.wanted_voters() else {
        return;
    };
    let wanted: BTreeMap<u64, String> = wanted_ids
        .iter()
        .filter_map(|id| metadata.brokers.get(id).map(|b| (*id, b.address.clone())))
        .collect();
    if wanted.len() != wanted_ids.len() {
        tracing::warn!(
            topic,
            partition = assignment.partition,
            ?wanted_ids,
            "a wanted replica's broker is not registered; the move waits"
        );
        return;
    }
    let partition = assignment.partition;
    match replica.step_toward_voters(&wanted, MAX_LEARNER_LAG, STEP_TIMEOUT).await {
        Ok(MembershipStep::Done) => {
            let complete = MetadataCommand::CompleteReassignment {
                topic: topic.to_string(),
                partition,
                group: assignment.group,
                voters: replica.voters(),
            };
            match link.propose(complete).await {
                Ok(()) => tracing::info!(topic, partition, replicas = ?wanted_ids, "reassignment complete"),
                Err(error) => tracing::info!(topic, partition, %error, "reporting a finished move failed; will retry"),
            }
        }
        Ok(MembershipStep::CatchingUp(lagging)) => {
            tracing::debug!(topic, partition, ?lagging, "reassignment: learners catching up")
        }
        Ok(step) => tracing::info!(topic, partition, ?step, "reassignment step"),
        Err(error) => tracing::debug!(topic, partition, %error, "reassignment step failed; will retry"),
    }
}
