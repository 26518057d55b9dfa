//! Controlled shutdown: a stopping broker hands the leadership of every group it leads to a
//! caught-up replica on another broker before it stops (Kafka's `controlled.shutdown.enable`).
//!
//! **Why.** Without it, a clean stop looks to the rest of the cluster like a crash: clients of
//! the stopped broker's partitions wait for the failure detector (the dead-after time) and an
//! election, and a broker hosting thousands of leaderships starts thousands of elections on
//! its peers at once — the storm that kept a 10,000-partition cluster from settling after a
//! restart (docs/benchmarks.md). A transfer instead moves each leadership in one round trip,
//! while this broker still answers, to a replica that already holds every entry.
//!
//! **Bounded.** The whole handover gets a budget (`controlled_shutdown_ms`); what is not handed
//! over in it fails over as after a crash. Transfers run a bounded number at a time, each to
//! the caught-up peer given the fewest leaderships so far (so a stopped broker's leaderships
//! spread over the survivors). A failed transfer is tried once more with the next choice; a peer
//! that failed [`MAX_CONSECUTIVE_FAILURES`] transfers in a row (dead, or far behind) gets no more.
//!
//! **Not to a broker that is stopping too.** A stopping broker says so in its failure-detector
//! pings (`replication::quiesce`), and its peers hand it nothing: when a whole cluster is
//! stopped at once, no broker passes leaderships around among the others — each finds no
//! target and stops at once.

use crate::replication::isr::IsrBounds;
use crate::replication::{PartitionReplica, ReplicationError};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Transfers in flight at once.
const CONCURRENCY: usize = 256;

/// Longest one transfer may take (a transfer to a live, caught-up replica takes a few round
/// trips; hundreds at once on a busy broker take longer).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3);

/// Attempts per group (each to the best target at the time).
const ATTEMPTS: usize = 2;

/// Transfers to one peer that may fail in a row before it is given no more.
const MAX_CONSECUTIVE_FAILURES: usize = 3;

/// What a handover did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handover {
    /// Groups this broker led when the handover began.
    pub led: usize,
    /// Of those, the groups whose leadership another broker took.
    pub handed_over: usize,
    /// Groups another replica took the leadership of meanwhile (nothing left to hand over).
    pub moved_meanwhile: usize,
    /// Groups with no caught-up replica elsewhere (left to fail over).
    pub no_target: usize,
    /// Transfers that failed or ran out of time (left to fail over).
    pub failed: usize,
    /// Leaderships given to each broker.
    pub given: BTreeMap<u64, usize>,
}

/// Which targets the transfers have been given, and which are given no more.
#[derive(Default)]
struct Targets {
    given: BTreeMap<u64, usize>,
    /// Transfers to each peer that failed since its last success.
    failures_in_a_row: BTreeMap<u64, usize>,
}

impl Targets {
    /// Whether `target` failed too many transfers in a row to be given more.
    fn gives_up_on(&self, target: u64) -> bool {
        self.failures_in_a_row
            .get(&target)
            .is_some_and(|failures| *failures >= MAX_CONSECUTIVE_FAILURES)
    }

    fn succeeded(&mut self, target: u64) {
        self.failures_in_a_row.remove(&target);
    }

    fn failed(&mut self, target: u64) {
        self.not_given(target);
        *self.failures_in_a_row.entry(target).or_default() += 1;
    }

    /// `target` did not take over in time: not counted a failure (hundreds of transfers at
    /// once, each building sleeping Raft nodes again, took longer than one's timeout at 10,000
    /// partitions, and three such in a row gave up on every peer), but still counted given, so
    /// that a target slow to take over — or dead and not yet known so — is chosen less.
    fn timed_out(&mut self, _target: u64) {}

    fn not_given(&mut self, target: u64) {
        if let Some(count) = self.given.get_mut(&target) {
            *count = count.saturating_sub(1);
        }
    }
}

/// Whether a peer broker is stopping too (so it must not be handed a leadership).
pub type PeerStopping<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// The peer to hand a group over to: among its caught-up replicas other than `own`, none that
/// `targets` gave up on or that is stopping, the one given the fewest leaderships so far (ties:
/// the lowest id).
fn choose_target(own: u64, caught_up: &[u64], targets: &Targets, stopping: PeerStopping<'_>) -> Option<u64> {
    caught_up
        .iter()
        .copied()
        .filter(|node| *node != own && !targets.gives_up_on(*node) && !stopping(*node))
        .min_by_key(|node| (targets.given.get(node).copied().unwrap_or(0), *node))
}

/// Hands over the leadership of every group in `replicas` that this broker (`own`) leads,
/// within `budget`, to peers that are not `stopping`. `replicas` name each group for the log.
pub async fn hand_over_leaderships(
    own: u64,
    replicas: &[(String, &PartitionReplica)],
    budget: Duration,
    stopping: PeerStopping<'_>,
) -> Handover {
    use futures_util::StreamExt;
    let deadline = Instant::now() + budget;
    let led: Vec<&(String, &PartitionReplica)> = replicas
        .iter()
        .filter(|(_, replica)| replica.leader() == Some(own))
        .collect();
    let targets = Mutex::new(Targets::default());
    // (The futures are made before they are streamed: a closure over borrowed items inside the
    // stream makes the broker's future fail `Send`'s higher-ranked lifetime check.)
    let transfers: Vec<_> = led
        .iter()
        .map(|(name, replica)| hand_over_one(own, name, replica, &targets, deadline, stopping))
        .collect();
    let outcomes: Vec<Outcome> = futures_util::stream::iter(transfers)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let given = targets.into_inner().unwrap_or_else(|p| p.into_inner()).given;
    Handover {
        led: led.len(),
        handed_over: outcomes.iter().filter(|o| **o == Outcome::HandedOver).count(),
        moved_meanwhile: outcomes.iter().filter(|o| **o == Outcome::MovedMeanwhile).count(),
        no_target: outcomes.iter().filter(|o| **o == Outcome::NoTarget).count(),
        failed: outcomes.iter().filter(|o| **o == Outcome::Failed).count(),
        given,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    HandedOver,
    MovedMeanwhile,
    NoTarget,
    Failed,
}

async fn hand_over_one(
    own: u64,
    name: &str,
    replica: &PartitionReplica,
    targets: &Mutex<Targets>,
    deadline: Instant,
    stopping: PeerStopping<'_>,
) -> Outcome {
    for _ in 0..ATTEMPTS {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let Some(caught_up) = replica.caught_up_if_leader(IsrBounds::default()) else {
            // Lost it meanwhile (or its lease lapsed): nothing of ours to hand over.
            return Outcome::MovedMeanwhile;
        };
        let target = {
            let mut targets = targets.lock().unwrap_or_else(|p| p.into_inner());
            let target = choose_target(own, &caught_up, &targets, stopping);
            if let Some(target) = target {
                *targets.given.entry(target).or_default() += 1;
            }
            target
        };
        let Some(target) = target else {
            tracing::debug!(group = name, "no caught-up replica to hand the leadership to");
            return Outcome::NoTarget;
        };
        match replica
            .transfer_leadership(target, remaining.min(TRANSFER_TIMEOUT))
            .await
        {
            Ok(()) => {
                targets.lock().unwrap_or_else(|p| p.into_inner()).succeeded(target);
                return Outcome::HandedOver;
            }
            Err(error) => {
                tracing::debug!(group = name, target, %error, "leadership handover failed");
                let mut targets = targets.lock().unwrap_or_else(|p| p.into_inner());
                match error {
                    ReplicationError::Timeout { .. } => targets.timed_out(target),
                    // This replica was not fit to hand over (its lease not renewed in time —
                    // a sleeping leader is built again first): no fault of the target's.
                    ReplicationError::NotLeader { .. } => targets.not_given(target),
                    _ => targets.failed(target),
                }
            }
        }
    }
    Outcome::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY_STOPPING: PeerStopping<'static> = &|_| false;

    fn given(counts: &[(u64, usize)]) -> Targets {
        Targets {
            given: counts.iter().copied().collect(),
            ..Targets::default()
        }
    }

    /// Targets that gave up on `node` (it failed too many transfers in a row).
    fn gave_up_on(node: u64) -> Targets {
        Targets {
            failures_in_a_row: BTreeMap::from([(node, MAX_CONSECUTIVE_FAILURES)]),
            ..Targets::default()
        }
    }

    #[test]
    fn the_target_is_the_caught_up_peer_given_the_fewest_leaderships() {
        let some_given = given(&[(2, 3), (3, 1)]);
        assert_eq!(choose_target(1, &[1, 2, 3], &some_given, NOBODY_STOPPING), Some(3));
        assert_eq!(
            choose_target(1, &[1, 2, 3], &given(&[]), NOBODY_STOPPING),
            Some(2),
            "ties: lowest id"
        );
        assert_eq!(
            choose_target(1, &[1, 2], &some_given, NOBODY_STOPPING),
            Some(2),
            "only caught-up peers"
        );
    }

    #[test]
    fn a_peer_is_given_no_more_after_failing_several_transfers_in_a_row() {
        let mut targets = given(&[(2, 5)]);
        targets.failed(2);
        targets.failed(2);
        targets.succeeded(2);
        targets.failed(2);
        targets.failed(2);
        assert!(!targets.gives_up_on(2), "a success in between resets the count");
        targets.failed(2);
        assert!(targets.gives_up_on(2));
        assert_eq!(targets.given[&2], 0, "failed transfers are not counted as given");
    }

    #[test]
    fn no_target_is_self_a_peer_that_failed_a_transfer_or_one_stopping_too() {
        assert_eq!(choose_target(1, &[1, 2, 3], &gave_up_on(2), NOBODY_STOPPING), Some(3));
        assert_eq!(choose_target(1, &[1, 2], &gave_up_on(2), NOBODY_STOPPING), None);
        assert_eq!(choose_target(1, &[1], &given(&[]), NOBODY_STOPPING), None);
        let three_stopping: PeerStopping<'_> = &|node| node == 3;
        assert_eq!(choose_target(1, &[1, 2, 3], &given(&[]), three_stopping), Some(2));
        assert_eq!(choose_target(1, &[1, 3], &given(&[]), three_stopping), None);
    }
}
