//! Automatic leader balance (Kafka's `auto.leader.rebalance.enable`): every interval, a broker
//! hands leaderships it holds back to the partitions' preferred replicas (the first of each
//! partition's replicas, which topic creation spreads over the brokers).
//!
//! **Why.** Failovers, restarts and controlled shutdowns move leadership off a broker, and
//! nothing moves it back: after a rolling restart the last broker restarted leads nothing while
//! the others carry every write. `broker cluster balance-leaders` does it on demand; this does
//! it on its own, as Kafka and Redpanda do by default.
//!
//! **When.** Judged per preferred broker over the partitions hosted here, as Kafka judges it:
//! when more than `imbalance_percent` of the partitions that prefer broker B are led by someone
//! else, this broker hands back those of them it leads — each only when B is caught up in it
//! (a lagging leader would stall writes) and not stopping. Each broker does this for the
//! leaderships it holds, so no coordination is needed; a transfer is one short pause of the
//! partition's writes, which is why small imbalances are left alone.

use super::{PartitionManager, TopicPartition};
use crate::controller::metadata::ClusterMetadata;
use crate::controller::Controller;
use crate::replication::isr::IsrBounds;
use crate::replication::quiesce::Quiescence;
use crate::replication::PartitionReplica;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Transfers in flight at once.
const CONCURRENCY: usize = 64;

/// Longest one transfer may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3);

/// The balancer's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderBalance {
    /// How often leadership is checked (Kafka's `leader.imbalance.check.interval.seconds`).
    pub interval: Duration,
    /// Imbalance tolerated per preferred broker, in percent of the partitions that prefer it
    /// (Kafka's `leader.imbalance.per.broker.percentage`).
    pub imbalance_percent: u32,
}

/// A partition hosted here: who leads it, as this replica knows, and its preferred replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosted {
    /// The partition.
    pub partition: TopicPartition,
    /// Its leader as the local replica knows it.
    pub leader: Option<u64>,
    /// Its preferred replica.
    pub preferred: u64,
}

/// The leaderships `own` should hand back to their preferred replica, as indexes into
/// `hosted`: those of every preferred broker whose partitions hosted here are led elsewhere
/// more than `imbalance_percent` of the time.
pub fn moves(own: u64, hosted: &[Hosted], imbalance_percent: u32) -> Vec<usize> {
    // Preferred broker → (partitions preferring it, of those led by someone else).
    let mut tally: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for partition in hosted {
        let entry = tally.entry(partition.preferred).or_default();
        entry.0 += 1;
        if partition.leader != Some(partition.preferred) {
            entry.1 += 1;
        }
    }
    let imbalanced = |preferred: u64| {
        tally
            .get(&preferred)
            .is_some_and(|(total, misplaced)| misplaced * 100 > total * imbalance_percent as usize)
    };
    (0..hosted.len())
        .filter(|i| {
            let p = &hosted[*i];
            p.preferred != own && p.leader == Some(own) && imbalanced(p.preferred)
        })
        .collect()
}

/// The partitions hosted here with their preferred replica, each beside its replica (those
/// `metadata` no longer assigns are left out).
fn hosted<'r>(
    partitions: &'r [(TopicPartition, Arc<PartitionReplica>)],
    metadata: &ClusterMetadata,
) -> (Vec<Hosted>, Vec<&'r PartitionReplica>) {
    partitions
        .iter()
        .filter_map(|(partition, replica)| {
            let assignment = metadata
                .topics
                .get(&partition.topic)?
                .partitions
                .iter()
                .find(|p| p.partition == partition.partition)?;
            let hosted = Hosted {
                partition: partition.clone(),
                leader: replica.leader(),
                preferred: *assignment.replicas.first()?,
            };
            Some((hosted, replica.as_ref()))
        })
        .unzip()
}

/// Runs the balancer every `settings.interval`, until the task is aborted (when the broker
/// begins to stop).
pub async fn balance_forever(
    own: u64,
    partitions: Arc<PartitionManager>,
    controller: Arc<Controller>,
    quiescence: Quiescence,
    settings: LeaderBalance,
) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let (moved, attempted) = balance_once(own, &partitions, &controller, &quiescence, settings).await;
        if attempted > 0 {
            tracing::info!(
                node = own,
                moved,
                attempted,
                "leader balance: handed {moved} of {attempted} leaderships back to preferred replicas"
            );
        }
    }
}

/// One pass: hands back what [`moves`] says; returns (moved, attempted).
async fn balance_once(
    own: u64,
    partitions: &PartitionManager,
    controller: &Controller,
    quiescence: &Quiescence,
    settings: LeaderBalance,
) -> (usize, usize) {
    use futures_util::StreamExt;
    let replicas = partitions.replicas();
    let (hosted, hosted_replicas) = hosted(&replicas, &controller.metadata());
    let liveness = quiescence.liveness();
    let transfers: Vec<_> = moves(own, &hosted, settings.imbalance_percent)
        .into_iter()
        .map(|i| (hosted_replicas[i], hosted[i].preferred))
        .filter(|(replica, to)| {
            !liveness.is_stopping(*to)
                && replica
                    .caught_up_if_leader(IsrBounds::default())
                    .is_some_and(|caught_up| caught_up.contains(to))
        })
        .map(|(replica, to)| async move { replica.transfer_leadership(to, TRANSFER_TIMEOUT).await.is_ok() })
        .collect();
    let attempted = transfers.len();
    let outcomes: Vec<bool> = futures_util::stream::iter(transfers)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    (outcomes.into_iter().filter(|moved| *moved).count(), attempted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosted(partition: u32, leader: Option<u64>, preferred: u64) -> Hosted {
        Hosted {
            partition: TopicPartition {
                topic: "t".into(),
                partition,
            },
            leader,
            preferred,
        }
    }

    /// (partition, preferred replica) of the moves of `own`.
    fn partitions(own: u64, state: &[Hosted], imbalance_percent: u32) -> Vec<(u32, u64)> {
        moves(own, state, imbalance_percent)
            .into_iter()
            .map(|i| (state[i].partition.partition, state[i].preferred))
            .collect()
    }

    #[test]
    fn leaderships_of_a_broker_led_elsewhere_past_the_threshold_go_back_to_it() {
        // Broker 3 prefers 0..4 and leads none (it restarted); 1 leads 0 and 1, 2 leads 2 and 3.
        let state = [
            hosted(0, Some(1), 3),
            hosted(1, Some(1), 3),
            hosted(2, Some(2), 3),
            hosted(3, Some(2), 3),
            hosted(4, Some(1), 1),
            hosted(5, Some(2), 2),
        ];
        assert_eq!(partitions(1, &state, 10), [(0, 3), (1, 3)]);
        assert_eq!(partitions(2, &state, 10), [(2, 3), (3, 3)]);
        assert!(moves(3, &state, 10).is_empty(), "broker 3 leads nothing to give back");
    }

    #[test]
    fn an_imbalance_within_the_threshold_is_left_alone() {
        // One of ten partitions preferring 2 is led by 1: 10 %, not more than 10 %.
        let mut state: Vec<Hosted> = (0..9).map(|p| hosted(p, Some(2), 2)).collect();
        state.push(hosted(9, Some(1), 2));
        assert!(moves(1, &state, 10).is_empty());
        assert_eq!(partitions(1, &state, 9), [(9, 2)]);
    }

    #[test]
    fn a_partition_without_a_known_leader_counts_as_misplaced_but_is_moved_only_by_its_leader() {
        let state = [hosted(0, None, 2), hosted(1, Some(1), 2)];
        assert_eq!(partitions(1, &state, 10), [(1, 2)]);
    }
}
