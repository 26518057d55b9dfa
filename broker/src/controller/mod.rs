//! # Controller: cluster metadata
//!
//! **One job:** hold the cluster's metadata — brokers, topics with their configs, partition →
//! replica assignments — replicated by the controller Raft group (group 0).
//!
//! **Owns:** the pure metadata state machine ([`metadata`]), replica placement
//! ([`placement`]), the controller replica whose log stores metadata commands as record
//! batches (one JSON command per record, like KRaft's metadata log), and the state machine's
//! copy on disk in sled ([`store`]), from which a restarted controller resumes; the way any
//! broker proposes a command to the controller leader wherever it is ([`forward`]); and, when
//! the operator turns it on, decommissioning brokers silent for too long ([`heal`]).
//!
//! **Invariants:** metadata changes only by applying committed commands in log order, so every
//! controller replica holds the same metadata; a command is checked before it is proposed (for
//! a clear error) and again when applied (for determinism).
//!
//! **Must not depend on:** the API layer or partition data.

pub mod forward;
pub mod heal;
pub mod metadata;
pub mod placement;
pub mod store;

use crate::replication::{
    Acks, AppliedState, BatchObserver, MembershipStep, OtherMembers, PartitionReplica, ReplicaHost, ReplicationError,
};
use crate::storage::{FsyncPolicy, LogConfig, Offset};
use bytes::Bytes;
use metadata::{ClusterMetadata, MetadataCommand, MetadataError};
use proto::record_batch::{decode_records, encode_batch, ProducerStamp, Record};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::MetadataStore;
use tokio::sync::watch;

/// How long a metadata command may wait to commit. Commands waited without a bound of their own
/// before appends took a deadline; a day keeps that: the caller (a gRPC call with its own
/// deadline, the registration loop) gives up long before.
const COMMIT_WAIT: Duration = Duration::from_secs(24 * 60 * 60);
/// Raft group id of the controller.
pub const CONTROLLER_GROUP: u64 = 0;
/// A learner of the controller group is caught up enough to vote once it lacks at most this
/// many entries (the log is written in bursts — registrations, producer id blocks — and small).
const CONTROLLER_LEARNER_LAG: u64 = 16;
/// Longest one step of a controller voter change may take.
const VOTER_STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many command outcomes are remembered for proposers to collect.
const OUTCOMES_KEPT: usize = 4096;
/// Producer ids reserved per controller log write.
const PRODUCER_ID_BLOCK: u32 = 1000;

/// Errors of controller operations.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// This broker's controller replica is not the leader; retry on `leader`.
    #[error("not the controller; the controller is {leader:?}")]
    NotController {
        /// Node id of the controller leader, if known.
        leader: Option<u64>,
    },
    /// The command is invalid against the current metadata.
    #[error(transparent)]
    Invalid(#[from] MetadataError),
    /// Replication failed.
    #[error(transparent)]
    Replication(ReplicationError),
}

impl From<ReplicationError> for ControllerError {
    fn from(error: ReplicationError) -> Self {
        match error {
            ReplicationError::NotLeader { leader, .. } => ControllerError::NotController { leader },
            other => ControllerError::Replication(other),
        }
    }
}

/// Applies committed metadata commands, publishes the result and keeps it in the sled store.
struct MetadataApplier {
    metadata: Mutex<ClusterMetadata>,
    outcomes: Mutex<VecDeque<(Offset, Result<(), MetadataError>)>>,
    publisher: watch::Sender<Arc<ClusterMetadata>>,
    /// `None` if the store could not be opened: the controller then rebuilds from its log at
    /// every start, which is slower but as correct.
    store: Option<MetadataStore>,
    /// Commands applied since this process started (re-applied ones included).
    applied_since_start: AtomicU64,
}

impl BatchObserver for MetadataApplier {
    fn restore_point(&self) -> Option<AppliedState> {
        // Published only once the log is known to hold the restore point (`Controller::start`).
        let (applied, metadata) = self.store.as_ref()?.load()?;
        *self.metadata.lock().expect("metadata lock") = metadata;
        Some(applied)
    }

    fn restore_rejected(&self) {
        *self.metadata.lock().expect("metadata lock") = ClusterMetadata::default();
        if let Some(store) = &self.store {
            store.clear();
        }
    }

    fn on_applied(&self, base_offset: Offset, batch: &Bytes, applied: &AppliedState) {
        let records = match decode_records(batch) {
            Ok(records) => records,
            Err(error) => {
                tracing::error!(%error, "undecodable batch in the controller log; skipped");
                return;
            }
        };
        let mut metadata = self.metadata.lock().expect("metadata lock");
        let mut outcomes = self.outcomes.lock().expect("outcomes lock");
        for record in records {
            let offset = Offset(base_offset.0 + record.offset_delta as u64);
            let command = record
                .value
                .as_deref()
                .and_then(|value| serde_json::from_slice::<MetadataCommand>(value).ok());
            let outcome = match command {
                Some(command) => metadata.apply(command),
                None => Err(MetadataError::InvalidConfig("undecodable metadata command".into())),
            };
            outcomes.push_back((offset, outcome));
            if outcomes.len() > OUTCOMES_KEPT {
                outcomes.pop_front();
            }
            self.applied_since_start.fetch_add(1, Ordering::Relaxed);
        }
        drop(outcomes);
        if let Some(store) = &self.store {
            if let Err(error) = store.save(applied, &metadata) {
                // The log still has the command: a restart re-applies it from there.
                tracing::warn!(%error, "could not store the controller state; the log stays authoritative");
            }
        }
        self.publisher.send_replace(Arc::new(metadata.clone()));
    }
}

/// This broker's controller replica and its view of the metadata.
pub struct Controller {
    node_id: u64,
    replica: PartitionReplica,
    applier: Arc<MetadataApplier>,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    /// The unused rest (`next..end`) of this broker's reserved producer-id block.
    producer_ids: tokio::sync::Mutex<Option<(i64, i64)>>,
}

fn controller_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024 * 1024,
        fsync: FsyncPolicy::Always,
        retention_ms: None,
        ..LogConfig::default()
    }
}

impl Controller {
    /// Starts the controller replica in `dir`. The lowest-id voter forms the group on first
    /// start (a no-op afterwards); `voters` maps node id → address.
    pub async fn start(
        host: &ReplicaHost,
        dir: &Path,
        voters: &BTreeMap<u64, String>,
    ) -> Result<Controller, ControllerError> {
        let (publisher, metadata) = watch::channel(Arc::new(ClusterMetadata::default()));
        let store_dir = dir.join("state.sled");
        let store = match MetadataStore::open(&store_dir) {
            Ok(store) => Some(store),
            Err(error) => {
                tracing::error!(
                    %error,
                    dir = %store_dir.display(),
                    "cannot open the controller state store: the metadata is rebuilt from the controller log at every start"
                );
                None
            }
        };
        let applier = Arc::new(MetadataApplier {
            metadata: Mutex::new(ClusterMetadata::default()),
            outcomes: Mutex::new(VecDeque::new()),
            publisher,
            store,
            applied_since_start: AtomicU64::new(0),
        });
        let observer: Arc<dyn BatchObserver> = applier.clone();
        let replica =
            PartitionReplica::start(host, CONTROLLER_GROUP, dir, controller_log_config(), Some(observer)).await?;
        // The restore point (if the log held it) plus whatever was re-applied since.
        let current = applier.metadata.lock().expect("metadata lock").clone();
        applier.publisher.send_replace(Arc::new(current));
        if voters.keys().next() == Some(&host.node_id) {
            replica.bootstrap(voters.clone()).await?;
        }
        Ok(Controller {
            node_id: host.node_id,
            replica,
            applier,
            metadata,
            producer_ids: tokio::sync::Mutex::new(None),
        })
    }

    /// This broker's node id.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The metadata as of the last applied command.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// A receiver that sees every new version of the metadata.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.metadata.clone()
    }

    /// The controller leader's node id, if known.
    pub fn leader(&self) -> Option<u64> {
        self.replica.leader()
    }

    /// Whether this broker is the controller leader, ready for commands.
    pub fn is_leader(&self) -> bool {
        self.replica.is_leader()
    }

    /// The controller replica (for membership management by the node).
    pub fn replica(&self) -> &PartitionReplica {
        &self.replica
    }

    /// The controller group's voters, as this replica's log has them.
    pub fn voters(&self) -> Vec<u64> {
        self.replica.voters()
    }

    /// Makes `voters` (node id → address) the controller group's voters: each joins as a
    /// learner if it is not one, catches up, then the voters switch by joint consensus; brokers
    /// that stop voting stay learners. Steps until done or `timeout`. A leader that leaves the
    /// voters hands over first and answers `NotController` naming its successor, which takes
    /// the remaining steps when asked again: every step starts from the membership in the log.
    pub async fn change_voters(&self, voters: BTreeMap<u64, String>, timeout: Duration) -> Result<(), ControllerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !self.replica.is_leader() {
                return Err(ControllerError::NotController {
                    leader: self.replica.leader(),
                });
            }
            let step = self
                .replica
                .step_toward_voters(&voters, CONTROLLER_LEARNER_LAG, VOTER_STEP_TIMEOUT, OtherMembers::Keep)
                .await;
            match step {
                Ok(MembershipStep::Done) => return Ok(()),
                Ok(MembershipStep::HandedLeadership(next)) => {
                    return Err(ControllerError::NotController { leader: Some(next) })
                }
                Ok(MembershipStep::CatchingUp { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(step) => tracing::info!(?step, ?voters, "changing the controller voters"),
                Err(ReplicationError::NotLeader { leader, .. }) => {
                    return Err(ControllerError::NotController { leader })
                }
                // Any other failure (another membership change in flight, a step that timed
                // out): try again until the deadline (a last step may run past it by up to
                // one step's timeout).
                Err(error) => {
                    tracing::debug!(%error, "a controller voter step failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ControllerError::Replication(ReplicationError::Timeout {
                    group: CONTROLLER_GROUP,
                    what: format!(
                        "the controller voters to become {:?}",
                        voters.keys().collect::<Vec<_>>()
                    ),
                }));
            }
        }
    }

    /// Checks, proposes and commits `command`; returns once it is applied here.
    pub async fn submit(&self, command: MetadataCommand) -> Result<(), ControllerError> {
        if !self.replica.is_leader() {
            return Err(ControllerError::NotController {
                leader: self.replica.leader(),
            });
        }
        self.metadata().check(&command)?;
        let value = serde_json::to_vec(&command).expect("commands serialize");
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch = encode_batch(
            &[Record {
                timestamp,
                value: Some(Bytes::from(value)),
                ..Record::default()
            }],
            ProducerStamp::NONE,
        );
        let deadline = tokio::time::Instant::now() + COMMIT_WAIT;
        let offset = self
            .replica
            .append(batch.into(), Acks::All, deadline)
            .await?
            .base_offset;
        let outcomes = self.applier.outcomes.lock().expect("outcomes lock");
        match outcomes.iter().rev().find(|(at, _)| Some(*at) == offset) {
            Some((_, outcome)) => Ok(outcome.clone()?),
            None => Ok(()),
        }
    }

    /// A fresh producer id (epoch 0) for an idempotent producer. Only the controller leader
    /// hands them out, from a block it reserved in the controller log; a block is never handed
    /// out twice, so ids are unique across controller changes (an unused rest is skipped).
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ControllerError> {
        if !self.replica.is_leader() {
            return Err(ControllerError::NotController {
                leader: self.replica.leader(),
            });
        }
        let mut block = self.producer_ids.lock().await;
        if !matches!(*block, Some((next, end)) if next < end) {
            self.submit(MetadataCommand::AllocateProducerIds {
                broker: self.node_id,
                count: PRODUCER_ID_BLOCK,
            })
            .await?;
            let reserved = self.metadata().producer_id_blocks.get(&self.node_id).copied();
            let reserved = reserved.ok_or_else(|| {
                ControllerError::Replication(ReplicationError::Raft {
                    group: CONTROLLER_GROUP,
                    message: "a committed producer-id block is missing from the metadata".into(),
                })
            })?;
            *block = Some((reserved.start, reserved.end));
        }
        let (next, end) = block.expect("filled above");
        *block = Some((next + 1, end));
        Ok((next, 0))
    }

    /// Waits until the metadata satisfies `condition`, up to `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&ClusterMetadata) -> bool,
    ) -> Option<Arc<ClusterMetadata>> {
        let mut receiver = self.metadata.clone();
        let found = tokio::time::timeout(timeout, async {
            receiver.wait_for(|m| condition(m)).await.map(|m| m.clone()).ok()
        })
        .await;
        found.ok().flatten()
    }

    /// How many metadata commands this process has applied (re-applied after a restart
    /// included): a controller that resumed from its store re-applies only what the store
    /// lacked.
    pub fn commands_applied_since_start(&self) -> u64 {
        self.applier.applied_since_start.load(Ordering::Relaxed)
    }

    /// Stops the controller replica, with the state store flushed.
    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        let stopped = self.replica.shutdown().await;
        if let Some(store) = &self.applier.store {
            store.flush();
        }
        Ok(stopped?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{PeerChannels, RaftGroups, RaftTimers};
    use crate::storage::FlushWorker;
    use metadata::BrokerInfo;

    fn host(flush: &FlushWorker) -> ReplicaHost {
        ReplicaHost {
            node_id: 1,
            logs: flush.handle().into(),
            peers: PeerChannels::default(),
            groups: RaftGroups::default(),
            raft_config: RaftTimers::default().raft_config("controller-test").unwrap(),
        }
    }

    /// The one controller voter of these tests.
    fn voters() -> BTreeMap<u64, String> {
        [(1, "127.0.0.1:1".to_string())].into()
    }

    /// A single-voter controller in `dir`, leading.
    async fn start_leading(flush: &FlushWorker, dir: &Path) -> Controller {
        let controller = Controller::start(&host(flush), dir, &voters()).await.unwrap();
        controller
            .replica()
            .wait_for_leader(Duration::from_secs(10))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !controller.is_leader() {
            assert!(std::time::Instant::now() < deadline, "the controller never led");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        controller
    }

    async fn stop(controller: Controller) {
        controller.shutdown().await.unwrap();
    }

    fn register_broker() -> MetadataCommand {
        MetadataCommand::RegisterBroker(BrokerInfo {
            id: 1,
            address: "127.0.0.1:1".into(),
            rack: None,
            client_address: None,
        })
    }

    fn create_topic(name: &str) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            partitions: 2,
            replication_factor: 1,
            config: LogConfig::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_controller_resumes_from_its_sled_store_and_rebuilds_from_the_log_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let flush = FlushWorker::start("controller-test").unwrap();

        let controller = start_leading(&flush, dir.path()).await;
        controller.submit(register_broker()).await.unwrap();
        controller.submit(create_topic("orders")).await.unwrap();
        controller.init_producer_id().await.unwrap();
        assert_eq!(controller.commands_applied_since_start(), 3);
        let before = controller.metadata();
        stop(controller).await;

        // Restarted: the metadata is there before any election, and no command is re-applied.
        let controller = Controller::start(&host(&flush), dir.path(), &voters()).await.unwrap();
        assert_eq!(*controller.metadata(), *before, "restored from sled at start");
        stop(controller).await;
        let controller = start_leading(&flush, dir.path()).await;
        assert_eq!(*controller.metadata(), *before);
        assert_eq!(controller.commands_applied_since_start(), 0, "nothing replayed");
        controller
            .submit(MetadataCommand::DeleteTopic { name: "orders".into() })
            .await
            .unwrap();
        assert_eq!(controller.commands_applied_since_start(), 1);
        let after_delete = controller.metadata();
        assert!(after_delete.topics.is_empty());
        stop(controller).await;

        // Without its store, the controller rebuilds the same metadata from its log.
        std::fs::remove_dir_all(dir.path().join("state.sled")).unwrap();
        let controller = start_leading(&flush, dir.path()).await;
        let rebuilt = controller
            .wait_for(Duration::from_secs(10), |m| *m == *after_delete)
            .await;
        assert!(rebuilt.is_some(), "rebuilt from the log: {:?}", controller.metadata());
        assert_eq!(controller.commands_applied_since_start(), 4, "every command replayed");
        stop(controller).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_ahead_of_its_log_is_dropped_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let flush = FlushWorker::start("controller-test").unwrap();
        let controller = start_leading(&flush, dir.path()).await;
        controller.submit(register_broker()).await.unwrap();
        stop(controller).await;

        // The log is lost (a replaced disk), the store survives: its last applied entry is not
        // in the log, so it must not be used — openraft would purge the log up to it.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name() != Some(std::ffi::OsStr::new("state.sled")) {
                std::fs::remove_file(&path).unwrap();
            }
        }
        let controller = start_leading(&flush, dir.path()).await;
        assert_eq!(*controller.metadata(), ClusterMetadata::default());
        stop(controller).await;
        // And it was cleared, not left to come back.
        let controller = start_leading(&flush, dir.path()).await;
        assert_eq!(*controller.metadata(), ClusterMetadata::default());
        stop(controller).await;
    }
}
