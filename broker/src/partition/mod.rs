//! # Partition: the replicas this broker hosts
//!
//! **One job:** keep the set of running partition replicas equal to what the cluster metadata
//! assigns to this broker — start replicas of new assignments, stop and delete those of deleted
//! topics and of replicas moved away — and hand the API layer the replica of a partition.
//!
//! **Owns:** the map topic-partition → running replica, and the partition directories
//! (`<data-dir>/partitions/<topic>-<partition>-g<group>`: the group id in the name means a
//! re-created topic never picks up an old topic's data).
//!
//! Also here: the driver of replica moves ([`reassign`]), the replicas' gauges sampled at scrape time ([`metrics`]) and the once-a-second
//! sampler counting their leadership and ISR changes ([`leadership`]).
//!
//! **Must not depend on:** the API layer.

pub mod handover;
pub mod leader_balance;
pub mod leadership;
pub mod metrics;
pub mod reassign;

use crate::controller::metadata::ClusterMetadata;
use crate::replication::{BatchObserver, PartitionReplica, ReplicaHost, ReplicationError};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Replicas stopped at once at shutdown (their log closes run on the blocking pool).
const SHUTDOWN_CONCURRENCY: usize = 64;

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

/// Gives some partitions' replicas an observer of their committed batches (the group
/// coordinator materialises `__consumer_offsets` this way). Asked each time a replica starts.
pub trait ObserverSource: Send + Sync {
    /// The observer for a replica of `partition` about to start, if it needs one.
    fn observer_for(&self, partition: &TopicPartition) -> Option<Arc<dyn BatchObserver>>;
}

struct Running {
    group: u64,
    dir: PathBuf,
    replica: Arc<PartitionReplica>,
}

/// The partition replicas of this broker.
pub struct PartitionManager {
    host: ReplicaHost,
    dir: PathBuf,
    running: RwLock<HashMap<TopicPartition, Running>>,
    observers: Option<Arc<dyn ObserverSource>>,
}

impl PartitionManager {
    /// A manager keeping partition data under `data_dir/partitions`.
    pub fn new(host: ReplicaHost, data_dir: PathBuf) -> Self {
        PartitionManager {
            host,
            dir: data_dir.join("partitions"),
            running: RwLock::new(HashMap::new()),
            observers: None,
        }
    }

    /// The same, asking `observers` for an observer whenever a replica starts.
    pub fn with_observers(mut self, observers: Arc<dyn ObserverSource>) -> Self {
        self.observers = Some(observers);
        self
    }

    /// The local replica of `topic`/`partition`, if this broker hosts one.
    pub fn get(&self, topic: &str, partition: u32) -> Option<Arc<PartitionReplica>> {
        let key = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        self.running
            .read()
            .expect("partition map")
            .get(&key)
            .map(|r| Arc::clone(&r.replica))
    }

    /// The limit on this broker's leaders' copy traffic to learners.
    pub fn catch_up_throttle(&self) -> &crate::replication::CatchUpThrottle {
        self.host.groups.catch_up_throttle()
    }

    /// Every replica this broker runs (a snapshot: replicas started or stopped afterwards are
    /// not reflected).
    pub fn replicas(&self) -> Vec<(TopicPartition, Arc<PartitionReplica>)> {
        self.running
            .read()
            .expect("partition map")
            .iter()
            .map(|(key, r)| (key.clone(), Arc::clone(&r.replica)))
            .collect()
    }

    /// Starts and stops replicas so that exactly this broker's assignments run.
    pub async fn reconcile(&self, metadata: &ClusterMetadata) -> Result<(), ReplicationError> {
        let me = self.host.node_id;
        let wanted: BTreeMap<TopicPartition, (u64, Option<Vec<u64>>, crate::storage::LogConfig)> = metadata
            .assignments_of(me)
            .into_iter()
            .map(|(topic, assignment)| {
                // Only a partition as created is formed by its first replica; one whose
                // replicas changed exists already, and a new replica joins it as a learner.
                let founders = (assignment.epoch == 0).then(|| assignment.replicas.clone());
                (
                    TopicPartition {
                        topic: topic.name.clone(),
                        partition: assignment.partition,
                    },
                    (assignment.group, founders, topic.config.clone()),
                )
            })
            .collect();

        let stale: Vec<(TopicPartition, Running)> = {
            let mut running = self.running.write().expect("partition map");
            let keys: Vec<TopicPartition> = running
                .iter()
                .filter(|(key, r)| wanted.get(*key).is_none_or(|(group, _, _)| *group != r.group))
                .map(|(key, _)| key.clone())
                .collect();
            keys.into_iter()
                .filter_map(|key| running.remove(&key).map(|r| (key, r)))
                .collect()
        };
        for (key, stopped) in stale {
            tracing::info!(topic = %key.topic, partition = key.partition, "stopping a replica no longer assigned here; deleting its data");
            stopped.replica.shutdown().await?;
            if let Err(error) = std::fs::remove_dir_all(&stopped.dir) {
                tracing::warn!(%error, dir = %stopped.dir.display(), "could not remove partition data");
            }
        }

        for (key, (group, founders, config)) in wanted {
            // A running replica takes changed settings (AlterTopicConfig). The map lock is not
            // held meanwhile: the log's own lock can be held through a segment roll's fsync.
            let running = self
                .running
                .read()
                .expect("partition map")
                .get(&key)
                .map(|r| Arc::clone(&r.replica));
            if let Some(replica) = running {
                match replica.set_log_config(&config) {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(topic = %key.topic, partition = key.partition, "log settings changed"),
                    Err(error) => {
                        tracing::error!(%error, topic = %key.topic, partition = key.partition, "could not apply new log settings")
                    }
                }
                continue;
            }
            let dir = self.dir.join(format!("{}-{}-g{}", key.topic, key.partition, group));
            let observer = self.observers.as_ref().and_then(|source| source.observer_for(&key));
            let replica = PartitionReplica::start(&self.host, group, &dir, config, observer).await?;
            if let Some(replicas) = founders.filter(|replicas| replicas.first() == Some(&me)) {
                let members: BTreeMap<u64, String> = replicas
                    .iter()
                    .filter_map(|id| metadata.brokers.get(id).map(|b| (*id, b.address.clone())))
                    .collect();
                replica.bootstrap(members).await?;
            }
            tracing::info!(topic = %key.topic, partition = key.partition, group, "started partition replica");
            self.running.write().expect("partition map").insert(
                key,
                Running {
                    group,
                    dir,
                    replica: Arc::new(replica),
                },
            );
        }
        Ok(())
    }

    /// Reconciles on every metadata change until the metadata channel closes. After the first
    /// pass — the replicas of the metadata this broker held at its start, its controller
    /// replica having applied what it had committed — the broker has opened its replicas (see
    /// [`Quiescence::replicas_opened`](crate::replication::quiesce::Quiescence::replicas_opened)).
    pub async fn follow(self: Arc<Self>, mut metadata: watch::Receiver<Arc<ClusterMetadata>>) {
        // Should this task end before its first pass does (a panic, an abort), the broker still
        // says it has opened what it could: peers would otherwise wait for it up to the bound.
        struct OpenedOnDrop(crate::replication::quiesce::Quiescence);
        impl Drop for OpenedOnDrop {
            fn drop(&mut self) {
                self.0.replicas_opened();
            }
        }
        let _opened_on_drop = OpenedOnDrop(self.host.groups.quiescence().clone());
        loop {
            let current = metadata.borrow_and_update().clone();
            let started = std::time::Instant::now();
            if let Err(error) = self.reconcile(&current).await {
                tracing::error!(%error, "reconciling partitions with metadata failed");
            }
            if self.host.groups.quiescence().is_opening() {
                tracing::info!(
                    replicas = self.running.read().expect("partition map").len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "opened the replicas assigned here"
                );
                self.host.groups.quiescence().replicas_opened();
            }
            if metadata.changed().await.is_err() {
                return;
            }
        }
    }

    /// Applies every hosted replica's retention once per `interval`, for ever: one replica at a
    /// time, so a broker with thousands of partitions spreads the work instead of bursting it.
    /// A pass that fails is logged and tried again at the next interval.
    pub async fn apply_retention_every(self: Arc<Self>, interval: std::time::Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            for (key, replica) in self.replicas() {
                let now_ms = proto::record_batch::now_ms();
                match replica.apply_retention(now_ms).await {
                    Ok(pass) if pass.proposed.is_some() || pass.purged_to.is_some() => tracing::debug!(
                        topic = %key.topic,
                        partition = key.partition,
                        ?pass,
                        "retention pass"
                    ),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(
                        %error,
                        topic = %key.topic,
                        partition = key.partition,
                        "retention pass failed; trying again at the next check"
                    ),
                }
            }
        }
    }

    /// Stops every replica (logs are closed durably), many at once: one at a time, a broker
    /// hosting 3,000 replicas took longer than the whole stop may (an fdatasync each).
    pub async fn shutdown(&self) {
        use futures_util::StreamExt;
        let all: Vec<Running> = self
            .running
            .write()
            .expect("partition map")
            .drain()
            .map(|(_, r)| r)
            .collect();
        futures_util::stream::iter(all)
            .for_each_concurrent(SHUTDOWN_CONCURRENCY, |running| async move {
                if let Err(error) = running.replica.shutdown().await {
                    tracing::warn!(%error, "partition did not shut down cleanly");
                }
            })
            .await;
    }
}
