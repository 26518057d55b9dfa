//! Automatic healing: the controller leader decommissions a broker that has been silent for
//! longer than the operator allows (`heal_dead_brokers_after_ms`), so every partition it held
//! gets its replica back on a live broker — Redpanda's "node availability" balancing, Kafka's
//! answer being an operator with `kafka-reassign-partitions`.
//!
//! "Silent" is the failure detector's view from the controller leader: no answer to its pings
//! (`PeerLiveness::since_answered`) for the whole time, counted at most from when this broker
//! started watching (a newly elected controller leader waits the full time). A broker that is
//! only cut off from the controller leader looks as dead as a dead one, so the time should be
//! far above any partition the network is expected to heal from by itself; the moves need only
//! a majority of each partition's replicas, so they complete without the silent broker.
//!
//! A healed broker that comes back stays decommissioned — its replicas have moved or are moving
//! — until an operator runs `broker cluster recommission` (which cancels moves not finished).

use super::metadata::{ClusterMetadata, MetadataCommand};
use super::Controller;
use crate::replication::quiesce::PeerLiveness;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the controller leader looks for silent brokers.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long after a refused or failed decommission of a broker it is tried again (a cluster
/// without room for its replicas refuses every time; once a broker joins it succeeds).
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The brokers to decommission now: registered, not this one, not being decommissioned
/// already, holding at least one replica, and silent for at least `after` (`silent_for` says
/// how long each has been).
pub fn brokers_to_heal(
    metadata: &ClusterMetadata,
    me: u64,
    after: Duration,
    silent_for: impl Fn(u64) -> Duration,
) -> Vec<u64> {
    metadata
        .brokers
        .keys()
        .copied()
        .filter(|id| *id != me && !metadata.decommissioning.contains(id))
        // Silence first: the replica check walks every partition, and runs each second.
        .filter(|id| silent_for(*id) >= after)
        .filter(|id| !metadata.assignments_of(*id).is_empty())
        .collect()
}

/// Runs for ever: while this broker leads the controller, decommissions every broker silent
/// for `after`.
pub async fn heal_forever(controller: Arc<Controller>, liveness: PeerLiveness, after: Duration) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    // When this broker started watching, as leader (a new leader's silence clock starts then).
    let mut leading_since: Option<Instant> = None;
    let mut tried: BTreeMap<u64, Instant> = BTreeMap::new();
    loop {
        tick.tick().await;
        if !controller.is_leader() {
            leading_since = None;
            continue;
        }
        let watching = *leading_since.get_or_insert_with(Instant::now);
        let metadata = controller.metadata();
        let silent_for = |id: u64| {
            let watched = watching.elapsed();
            liveness.since_answered(id).map_or(watched, |since| since.min(watched))
        };
        for broker in brokers_to_heal(&metadata, controller.node_id(), after, silent_for) {
            if tried.get(&broker).is_some_and(|at| at.elapsed() < RETRY_AFTER) {
                continue;
            }
            tried.insert(broker, Instant::now());
            let silent = silent_for(broker);
            match controller.submit(MetadataCommand::DecommissionBroker { broker }).await {
                Ok(()) => tracing::warn!(
                    broker,
                    silent_s = silent.as_secs(),
                    "automatic healing: broker silent too long, moving its replicas to live brokers \
                     (`broker cluster recommission` undoes what has not moved yet)"
                ),
                Err(error) => tracing::warn!(
                    broker,
                    %error,
                    "automatic healing: could not decommission a silent broker; will retry"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::metadata::tests::{create, with_brokers};

    #[test]
    fn only_silent_brokers_that_hold_replicas_and_are_not_leaving_already_are_healed() {
        let mut metadata = with_brokers(4);
        metadata.apply(create("t", 1, 3)).unwrap();
        let hosting: Vec<u64> = metadata.topics["t"].partitions[0].replicas.clone();
        let spare = (1..=4).find(|id| !hosting.contains(id)).unwrap();
        let after = Duration::from_secs(10);
        // Everyone silent but the spare.
        let all_silent = |id| {
            if id == spare {
                Duration::ZERO
            } else {
                Duration::from_secs(60)
            }
        };
        let me = hosting[0];
        // The others holding replicas; not this broker, and not the spare, which holds none.
        assert!(brokers_to_heal(&metadata, me, after, |_| Duration::from_secs(60))
            .iter()
            .all(|id| hosting.contains(id)));
        assert_eq!(brokers_to_heal(&metadata, me, after, all_silent), hosting[1..].to_vec());
        // Silent for less than the time: nobody.
        assert!(brokers_to_heal(&metadata, me, after, |_| Duration::from_secs(9)).is_empty());
        // One being decommissioned already is left alone.
        metadata
            .apply(MetadataCommand::DecommissionBroker { broker: hosting[1] })
            .unwrap();
        assert_eq!(brokers_to_heal(&metadata, me, after, all_silent), hosting[2..].to_vec());
    }
}
