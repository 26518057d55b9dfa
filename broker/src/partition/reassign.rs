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
use crate::replication::{MembershipStep, OtherMembers};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How often the driver looks at the moves in progress (and at once when the metadata changes).
const PASS_INTERVAL: Duration = Duration::from_millis(250);
/// A learner counts as caught up once it holds every entry of the leader — or, on a partition
/// being written to all along, once it has stayed within this many entries for
/// [`NEAR_ENOUGH_FOR`] while the leader kept appending (a busy log is never still for it to
/// match exactly; a joint configuration commits without waiting on a voter that close behind).
/// Counting entries, not bytes, is why a partition at rest must be matched exactly: a few
/// large entries could be many megabytes, which the new voter would then copy unthrottled.
const MAX_LEARNER_LAG: u64 = 64;
/// See [`MAX_LEARNER_LAG`].
const NEAR_ENOUGH_FOR: Duration = Duration::from_secs(2);
/// Longest one membership step (a transfer or a change to commit) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Partitions stepped at once.
const CONCURRENT_STEPS: usize = 32;

/// Drives the moves whose partitions this broker leads, for ever.
pub async fn drive_forever(node_id: u64, partitions: Arc<PartitionManager>, link: ControllerLink) {
    let mut changes = link.controller().subscribe();
    let near = NearSince::default();
    loop {
        let metadata = link.controller().metadata();
        pass(node_id, &partitions, &link, &metadata, &near).await;
        let _ = tokio::time::timeout(PASS_INTERVAL, changes.changed()).await;
    }
}

/// Per moving group: since when its learners have all been within [`MAX_LEARNER_LAG`], and the
/// leader's last index then. (Lost with the driver: a new leader just waits the time again.)
type NearSince = Mutex<HashMap<u64, (Instant, u64)>>;

/// Since when a group's learners have all been within [`MAX_LEARNER_LAG`] while its leader
/// kept appending (`previous`: as the last pass left it), now that they lag as `lagging`
/// behind `leader_last`. `None` once one is farther behind. The clock runs on while the leader
/// appends; a log at rest (the same last index twice), which the learners must match exactly,
/// starts it again.
fn near_since(
    previous: Option<(Instant, u64)>,
    lagging: &[(u64, Option<u64>)],
    leader_last: u64,
    now: Instant,
) -> Option<(Instant, u64)> {
    let close = lagging
        .iter()
        .all(|(_, lag)| lag.is_some_and(|lag| lag <= MAX_LEARNER_LAG));
    if !close {
        return None;
    }
    match previous {
        Some((since, then)) if then != leader_last => Some((since, leader_last)),
        _ => Some((now, leader_last)),
    }
}

/// One pass over the moves in progress.
async fn pass(
    node_id: u64,
    partitions: &PartitionManager,
    link: &ControllerLink,
    metadata: &ClusterMetadata,
    near: &NearSince,
) {
    let led: Vec<(String, PartitionAssignment)> = metadata
        .reassignments()
        .filter(|(topic, assignment)| {
            partitions
                .get(topic, assignment.partition)
                .is_some_and(|replica| replica.group() == assignment.group && replica.leader() == Some(node_id))
        })
        .map(|(topic, assignment)| (topic.to_string(), assignment.clone()))
        .collect();
    // A learner that finished copying (or whose move ended elsewhere) is throttled no more.
    let moving: std::collections::BTreeSet<u64> = metadata.reassignments().map(|(_, a)| a.group).collect();
    partitions.catch_up_throttle().retain_groups(&moving);
    futures_util::stream::iter(led)
        .for_each_concurrent(CONCURRENT_STEPS, |(topic, assignment)| async move {
            step(partitions, link, metadata, &topic, &assignment, near).await;
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
    near: &NearSince,
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
    let group = assignment.group;
    let near_enough = near
        .lock()
        .expect("near map")
        .get(&group)
        .is_some_and(|(since, _)| since.elapsed() >= NEAR_ENOUGH_FOR);
    let max_lag = if near_enough { MAX_LEARNER_LAG } else { 0 };
    // The new replicas' copy goes through the throttle from their first append (set before
    // they are added) until they vote.
    let throttle = partitions.catch_up_throttle();
    let copying = assignment.wanted_voters().unwrap_or_default().iter().copied();
    throttle.set_learners(group, copying.filter(|id| !replica.voters().contains(id)).collect());
    let stepped = replica
        .step_toward_voters(&wanted, max_lag, STEP_TIMEOUT, OtherMembers::Remove)
        .await;
    if !matches!(
        stepped,
        Ok(MembershipStep::AddedLearners(_) | MembershipStep::CatchingUp { .. })
    ) {
        throttle.set_learners(group, Default::default());
    }
    {
        let mut near = near.lock().expect("near map");
        let previous = near.remove(&group);
        if let Ok(MembershipStep::CatchingUp { lagging, leader_last }) = &stepped {
            if let Some(next) = near_since(previous, lagging, *leader_last, Instant::now()) {
                near.insert(group, next);
            }
        }
    }
    match stepped {
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
        Ok(MembershipStep::CatchingUp { lagging, .. }) => {
            tracing::debug!(topic, partition, ?lagging, "reassignment: learners catching up")
        }
        Ok(step) => tracing::info!(topic, partition, ?step, "reassignment step"),
        Err(error) => tracing::debug!(topic, partition, %error, "reassignment step failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learners_are_near_enough_only_while_close_behind_a_leader_that_keeps_appending() {
        let start = Instant::now();
        let later = start + NEAR_ENOUGH_FOR;
        let close = [(4, Some(10))];
        // First time close: the clock starts.
        assert_eq!(near_since(None, &close, 100, start), Some((start, 100)));
        // The leader appended since: the clock runs on.
        assert_eq!(near_since(Some((start, 100)), &close, 130, later), Some((start, 130)));
        // At rest (same last index): it starts again — a log at rest is matched exactly.
        assert_eq!(near_since(Some((start, 130)), &close, 130, later), Some((later, 130)));
        // Farther behind, or not heard from: not near.
        assert_eq!(
            near_since(Some((start, 130)), &[(4, Some(MAX_LEARNER_LAG + 1))], 200, later),
            None
        );
        assert_eq!(near_since(Some((start, 130)), &[(4, None)], 200, later), None);
    }
}
