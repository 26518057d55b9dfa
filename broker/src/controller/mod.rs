//! # Controller: cluster metadata
//!
//! **One job:** hold the cluster's metadata — brokers, topics with their configs, partition →
//! replica assignments — replicated by the controller Raft group (group 0).
//!
//! **Owns:** the pure metadata state machine ([`metadata`]), replica placement
//! ([`placement`]), and the controller replica whose log stores metadata commands as record
//! batches (one JSON command per record, like KRaft's metadata log).
//!
//! **Invariants:** metadata changes only by applying committed commands in log order, so every
//! controller replica holds the same metadata; a command is checked before it is proposed (for
//! a clear error) and again when applied (for determinism).
//!
//! **Must not depend on:** the API layer or partition data.

pub mod metadata;
pub mod placement;

use crate::replication::{BatchObserver, PartitionReplica, ReplicaHost, ReplicationError};
use crate::storage::{FsyncPolicy, LogConfig, Offset};
use bytes::Bytes;
use metadata::{ClusterMetadata, MetadataCommand, MetadataError};
use proto::record_batch::{decode_records, encode_batch, ProducerStamp, Record};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Raft group id of the controller.
pub const CONTROLLER_GROUP: u64 = 0;
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

/// Applies committed metadata commands and publishes the result.
struct MetadataApplier {
    metadata: Mutex<ClusterMetadata>,
    outcomes: Mutex<VecDeque<(Offset, Result<(), MetadataError>)>>,
    publisher: watch::Sender<Arc<ClusterMetadata>>,
}

impl BatchObserver for MetadataApplier {
    fn on_applied(&self, base_offset: Offset, batch: &Bytes) {
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
        let applier = Arc::new(MetadataApplier {
            metadata: Mutex::new(ClusterMetadata::default()),
            outcomes: Mutex::new(VecDeque::new()),
            publisher,
        });
        let observer: Arc<dyn BatchObserver> = applier.clone();
        let replica =
            PartitionReplica::start(host, CONTROLLER_GROUP, dir, controller_log_config(), Some(observer)).await?;
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
        let offset = self.replica.append_committed(batch).await?;
        let outcomes = self.applier.outcomes.lock().expect("outcomes lock");
        match outcomes.iter().rev().find(|(at, _)| *at == offset) {
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

    /// Stops the controller replica.
    pub async fn shutdown(&self) -> Result<(), ControllerError> {
        Ok(self.replica.shutdown().await?)
    }
}
