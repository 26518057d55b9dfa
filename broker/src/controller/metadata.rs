//! Cluster metadata and the commands that change it: a pure, deterministic state machine.
//! Every controller replica applies the same commands in the same order and so holds the same
//! metadata. No IO, no clock.

use super::placement::{place_replicas, replacement, Candidate};
use crate::storage::settings::log_config_with_changes;
use crate::storage::LogConfig;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Longest topic name (Kafka's limit).
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Largest block of producer ids one command may reserve.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1_000_000;

/// A range of producer ids reserved for one broker to hand out: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    /// First id of the block.
    pub start: i64,
    /// One past the last id.
    pub end: i64,
}

/// A broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// Node id.
    pub id: u64,
    /// Address its peers connect to (`host:port`): Raft, the controller. Its internal
    /// listener, or its only one.
    pub address: String,
    /// Optional rack, for rack-aware placement.
    pub rack: Option<String>,
    /// Address clients connect to: the broker registers it itself (its client listener may
    /// not be where its peers reach it). Unknown while only the configured peer list has named
    /// the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
}

/// Where one partition lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Partition index within the topic.
    pub partition: u32,
    /// Raft group id of the partition (unique in the cluster, never reused).
    pub group: u64,
    /// Replica broker ids; the first is the preferred leader. During a reassignment, the
    /// replicas as they were before it (the voters until the move switches them).
    pub replicas: Vec<u64>,
    /// Replica-set changes completed on this partition (0 as created). Only a partition still
    /// at epoch 0 is formed (Raft-bootstrapped) by its first replica: once its replicas have
    /// changed the group exists, and a replica starting empty joins it as a learner instead of
    /// forming a second group of its own.
    #[serde(default)]
    pub epoch: u64,
    /// The move in progress, if any (see [`Reassignment`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reassignment: Option<Reassignment>,
}

/// A replica move in progress (Kafka's partition reassignment). The partition's leader carries
/// it out with Raft membership changes: the replicas the target adds join as learners, the voter
/// set switches to the target once they have caught up (joint consensus), and the controller
/// then records the target as the replicas — whereupon the replicas it dropped stop and delete
/// their data. Cancelled, the same steps lead back to `replicas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// The replicas wanted; the first becomes the preferred leader.
    pub target: Vec<u64>,
    /// The operator cancelled the move: the leader returns the voters to `replicas`.
    #[serde(default)]
    pub cancelled: bool,
}

impl PartitionAssignment {
    /// Every broker that holds (or is to hold) a replica: the replicas, then those a move in
    /// progress adds. A broker hosts a replica of the partition exactly when it is here.
    pub fn hosts(&self) -> Vec<u64> {
        let mut hosts = self.replicas.clone();
        if let Some(move_) = &self.reassignment {
            hosts.extend(move_.target.iter().filter(|id| !self.replicas.contains(id)));
        }
        hosts
    }

    /// The voter set the partition's leader is moving to: the target of a move in progress,
    /// the replicas again once it is cancelled; `None` with no move.
    pub fn wanted_voters(&self) -> Option<&[u64]> {
        let move_ = self.reassignment.as_ref()?;
        Some(if move_.cancelled { &self.replicas } else { &move_.target })
    }

    /// The replicas a move in progress adds (in the target, not in the replicas).
    pub fn adding(&self) -> Vec<u64> {
        let Some(move_) = &self.reassignment else {
            return Vec::new();
        };
        move_
            .target
            .iter()
            .copied()
            .filter(|id| !self.replicas.contains(id))
            .collect()
    }

    /// The replicas a move in progress drops (in the replicas, not in the target).
    pub fn removing(&self) -> Vec<u64> {
        let Some(move_) = &self.reassignment else {
            return Vec::new();
        };
        self.replicas
            .iter()
            .copied()
            .filter(|id| !move_.target.contains(id))
            .collect()
    }
}

/// One partition's new replica set, as an operator asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMove {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The replicas wanted, preferred leader first.
    pub replicas: Vec<u64>,
}

/// One partition, by topic and index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionRef {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Log settings of every partition.
    pub config: LogConfig,
    /// Partitions, by index.
    pub partitions: Vec<PartitionAssignment>,
    /// Where the topic's round-robin placement started, so partitions added later continue it
    /// (and leadership stays spread). Topics stored before it was kept read 0.
    #[serde(default)]
    pub placement_start: usize,
}

/// Everything the controller knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// Brokers by id.
    pub brokers: BTreeMap<u64, BrokerInfo>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMetadata>,
    /// The next Raft group id to hand out (group 0 is the controller).
    pub next_group: u64,
    /// The first producer id no block has reserved yet.
    #[serde(default)]
    pub next_producer_id: i64,
    /// The latest block of producer ids reserved by each broker.
    #[serde(default)]
    pub producer_id_blocks: BTreeMap<u64, ProducerIdBlock>,
    /// Brokers being decommissioned: their replicas are moving elsewhere, and no new replica is
    /// placed on them.
    #[serde(default)]
    pub decommissioning: BTreeSet<u64>,
    /// Bytes per second each broker's partition leaders send to replicas that are still
    /// copying a partition's log (learners of a move); `None`: unthrottled.
    #[serde(default)]
    pub reassignment_throttle: Option<u64>,
    /// SCRAM-SHA-256 users by name: salted, iterated keys only, never passwords.
    #[serde(default)]
    pub users: BTreeMap<String, UserCredentials>,
    /// The key that signs session tokens (every broker checks them with it); set once by the
    /// first controller leader that finds none.
    #[serde(default)]
    pub token_key: Option<Vec<u8>>,
    /// Access-control rules (allow rules; see `security::acl`).
    #[serde(default)]
    pub acls: BTreeSet<crate::security::acl::AclBinding>,
}

/// What the cluster stores for a SCRAM-SHA-256 user (see `proto::scram::Credentials`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCredentials {
    /// Random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `ServerKey`.
    pub server_key: Vec<u8>,
}

/// The longest user name.
pub const MAX_USER_NAME_LEN: usize = 255;
/// The length of the token-signing key and of SCRAM-SHA-256 keys.
pub const KEY_LEN: usize = 32;

/// A change to the metadata, as stored in the controller log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Adds or updates a broker.
    RegisterBroker(BrokerInfo),
    /// Creates a topic, placing its replicas.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Partition count.
        partitions: u32,
        /// Replicas per partition.
        replication_factor: u32,
        /// Log settings.
        config: LogConfig,
    },
    /// Grows a topic to `total` partitions (Kafka's CreatePartitions): the existing partitions
    /// keep their replicas and data; the new ones are placed as a new topic's would be,
    /// continuing the round-robin from the topic's partition count.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The partition count wanted (more than the topic has).
        total: u32,
    },
    /// Changes a topic's log settings: `set` keys take their values, `reset` keys go back to
    /// their defaults, merged into the settings as of this command (so concurrent changes to
    /// different keys both hold); running replicas take them on their next reconcile.
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// Settings to change, by name.
        set: BTreeMap<String, String>,
        /// Settings back to their defaults, by name.
        reset: Vec<String>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Reserves the next `count` producer ids for `broker` to hand out (Kafka's
    /// AllocateProducerIds): ids are unique cluster-wide without a log write per producer.
    AllocateProducerIds {
        /// The broker the block is for.
        broker: u64,
        /// How many ids.
        count: u32,
    },
    /// Starts moving partitions to new replica sets (a plan: every move is checked before any
    /// starts, so a plan is taken whole or not at all). A move to the replicas a partition has
    /// already is no move.
    ReassignPartitions {
        /// The moves.
        moves: Vec<PartitionMove>,
    },
    /// Cancels moves in progress: each partition's leader leads its voters back to the
    /// replicas they were.
    CancelReassignments {
        /// The partitions.
        partitions: Vec<PartitionRef>,
    },
    /// Moves every replica off `broker` (a move per partition it holds, each replaced by a
    /// broker placed rack-aware and least loaded first) and places nothing new on it, until
    /// it is recommissioned. Refused if some partition would find no broker to move to.
    DecommissionBroker {
        /// The broker.
        broker: u64,
    },
    /// Ends a decommission: the broker takes new replicas again, and the moves taking
    /// replicas off it that are still in progress are cancelled.
    RecommissionBroker {
        /// The broker.
        broker: u64,
    },
    /// Sets (or, with `None`, lifts) the throttle on replica moves' copy traffic, per broker.
    SetReassignmentThrottle {
        /// Bytes per second; at least 1.
        bytes_per_sec: Option<u64>,
    },
    /// Creates a SCRAM user or replaces its credentials.
    UpsertUser {
        /// User name.
        name: String,
        /// Its keys.
        credentials: UserCredentials,
    },
    /// Deletes a user (its tokens stay valid until they expire).
    DeleteUser {
        /// User name.
        name: String,
    },
    /// Adds access-control rules (those present already stay once).
    AddAcls {
        /// The rules.
        bindings: Vec<crate::security::acl::AclBinding>,
    },
    /// Removes access-control rules (those absent are ignored).
    RemoveAcls {
        /// The rules.
        bindings: Vec<crate::security::acl::AclBinding>,
    },
    /// Sets the token-signing key if none is set (a second proposal is a no-op).
    SetTokenKey {
        /// 32 random bytes.
        key: Vec<u8>,
    },
    /// A partition's leader reports its voters are the ones its move wanted: the controller
    /// makes them the replicas and ends the move. Refused (and so harmless) when the move has
    /// changed since the leader looked — cancelled, or another partition of a re-created topic.
    CompleteReassignment {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The partition's Raft group, as the leader knows it.
        group: u64,
        /// The voters now in force.
        voters: Vec<u64>,
    },
}

/// Why a command cannot be applied. Deterministic: every replica reaches the same verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetadataError {
    /// Bad topic name.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The topic exists already.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// No such topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// Partition count out of range.
    #[error("partition count {0} must be within 1..={MAX_PARTITIONS}")]
    InvalidPartitions(u32),
    /// Replication factor out of range for the brokers available.
    #[error("replication factor {requested} must be within 1..={brokers} (the number of brokers taking replicas)")]
    InvalidReplicationFactor {
        /// Replication factor asked for.
        requested: u32,
        /// Brokers registered.
        brokers: usize,
    },
    /// Log settings out of range.
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
    /// No such partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition index asked for.
        partition: u32,
    },
    /// A replica set that cannot be: empty, a broker twice, a broker not registered.
    #[error("invalid replicas for {topic}/{partition}: {reason}")]
    InvalidReplicaAssignment {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// What is wrong.
        reason: String,
    },
    /// The partition is being moved already: cancel that first.
    #[error("{topic}/{partition} is being reassigned already (to {target:?}); cancel it first")]
    ReassignmentInProgress {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// Where it is moving.
        target: Vec<u64>,
    },
    /// Cancel or complete of a partition that is not being moved (or whose move changed).
    #[error("no reassignment of {topic}/{partition} in progress{detail}")]
    NoReassignmentInProgress {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// What differed, if the move changed.
        detail: String,
    },
    /// No such broker is registered.
    #[error("broker {0} is not registered")]
    UnknownBroker(u64),
    /// The broker cannot be decommissioned.
    #[error("broker {broker} cannot be decommissioned: {reason}")]
    CannotDecommission {
        /// The broker.
        broker: u64,
        /// Why not.
        reason: String,
    },
    /// No such user.
    #[error("user {0:?} does not exist")]
    UnknownUser(String),
    /// A user name or credentials out of bounds.
    #[error("invalid user: {0}")]
    InvalidUser(String),
    /// Partitions can be added, never removed (records are routed by partition count).
    #[error("topic {topic:?} has {current} partitions; it can only grow (asked for {requested})")]
    PartitionCountNotIncreased {
        /// Topic name.
        topic: String,
        /// Its partition count.
        current: u32,
        /// The count asked for.
        requested: u32,
    },
}

/// Checks a topic name: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), MetadataError> {
    let invalid = |reason: &str| MetadataError::InvalidTopicName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(invalid("longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are reserved"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid("only ASCII letters, digits, '.', '_' and '-' are allowed"));
    }
    Ok(())
}

impl ClusterMetadata {
    /// Checks `command` against the current state without changing it.
    pub fn check(&self, command: &MetadataCommand) -> Result<(), MetadataError> {
        match command {
            MetadataCommand::RegisterBroker(_) => Ok(()),
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
            } => {
                validate_topic_name(name)?;
                if self.topics.contains_key(name) {
                    return Err(MetadataError::TopicExists(name.clone()));
                }
                if !(1..=MAX_PARTITIONS).contains(partitions) {
                    return Err(MetadataError::InvalidPartitions(*partitions));
                }
                if *replication_factor == 0 || *replication_factor as usize > self.active_brokers().count() {
                    return Err(MetadataError::InvalidReplicationFactor {
                        requested: *replication_factor,
                        brokers: self.active_brokers().count(),
                    });
                }
                config
                    .validate()
                    .map_err(|e| MetadataError::InvalidConfig(e.to_string()))
            }
            MetadataCommand::AddPartitions { name, total } => {
                let topic = self
                    .topics
                    .get(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                let current = topic.partitions.len() as u32;
                if *total <= current {
                    return Err(MetadataError::PartitionCountNotIncreased {
                        topic: name.clone(),
                        current,
                        requested: *total,
                    });
                }
                if *total > MAX_PARTITIONS {
                    return Err(MetadataError::InvalidPartitions(*total));
                }
                if topic.replication_factor as usize > self.active_brokers().count() {
                    return Err(MetadataError::InvalidReplicationFactor {
                        requested: topic.replication_factor,
                        brokers: self.active_brokers().count(),
                    });
                }
                Ok(())
            }
            MetadataCommand::AlterTopicConfig { name, set, reset } => {
                let topic = self
                    .topics
                    .get(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                log_config_with_changes(&topic.config, set, reset)
                    .map(|_| ())
                    .map_err(MetadataError::InvalidConfig)
            }
            MetadataCommand::DeleteTopic { name } => {
                if self.topics.contains_key(name) {
                    Ok(())
                } else {
                    Err(MetadataError::UnknownTopic(name.clone()))
                }
            }
            MetadataCommand::AllocateProducerIds { count, .. } => {
                if (1..=MAX_PRODUCER_ID_BLOCK).contains(count) {
                    Ok(())
                } else {
                    Err(MetadataError::InvalidConfig(format!(
                        "producer id block of {count} must be within 1..={MAX_PRODUCER_ID_BLOCK}"
                    )))
                }
            }
            MetadataCommand::ReassignPartitions { moves } => self.check_moves(moves),
            MetadataCommand::DecommissionBroker { broker } => self.decommission_moves(*broker).map(|_| ()),
            MetadataCommand::SetReassignmentThrottle { bytes_per_sec } => match bytes_per_sec {
                Some(0) => Err(MetadataError::InvalidConfig(
                    "a throttle of 0 bytes/s would stop every move; lift it instead".into(),
                )),
                _ => Ok(()),
            },
            MetadataCommand::UpsertUser { name, credentials } => {
                let invalid = |reason: String| Err(MetadataError::InvalidUser(reason));
                if name.is_empty() || name.len() > MAX_USER_NAME_LEN || name.chars().any(char::is_control) {
                    return invalid(format!(
                        "a name is 1 to {MAX_USER_NAME_LEN} bytes without control characters"
                    ));
                }
                let iterations = proto::scram::MIN_ITERATIONS..=proto::scram::MAX_ITERATIONS;
                if !iterations.contains(&credentials.iterations) {
                    return invalid(format!("iterations must be within {iterations:?}"));
                }
                if credentials.stored_key.len() != KEY_LEN
                    || credentials.server_key.len() != KEY_LEN
                    || credentials.salt.len() < 8
                {
                    return invalid("SCRAM-SHA-256 keys are 32 bytes and the salt at least 8".into());
                }
                Ok(())
            }
            MetadataCommand::DeleteUser { name } => match self.users.contains_key(name) {
                true => Ok(()),
                false => Err(MetadataError::UnknownUser(name.clone())),
            },
            MetadataCommand::AddAcls { bindings } | MetadataCommand::RemoveAcls { bindings } => bindings
                .iter()
                .try_for_each(|binding| binding.validate().map_err(MetadataError::InvalidConfig)),
            MetadataCommand::SetTokenKey { key } => match key.len() {
                KEY_LEN => Ok(()),
                _ => Err(MetadataError::InvalidConfig("a token key is 32 bytes".into())),
            },
            MetadataCommand::RecommissionBroker { broker } => {
                if !self.brokers.contains_key(broker) {
                    Err(MetadataError::UnknownBroker(*broker))
                } else if self.decommissioning.contains(broker) {
                    Ok(())
                } else {
                    Err(MetadataError::CannotDecommission {
                        broker: *broker,
                        reason: "it is not being decommissioned (nothing to recommission)".into(),
                    })
                }
            }
            MetadataCommand::CancelReassignments { partitions } => {
                for partition in partitions {
                    let assignment = self.partition(&partition.topic, partition.partition)?;
                    if assignment.reassignment.is_none() {
                        return Err(MetadataError::NoReassignmentInProgress {
                            topic: partition.topic.clone(),
                            partition: partition.partition,
                            detail: String::new(),
                        });
                    }
                }
                Ok(())
            }
            MetadataCommand::CompleteReassignment {
                topic,
                partition,
                group,
                voters,
            } => {
                let assignment = self.partition(topic, *partition)?;
                let no_move = |detail: String| MetadataError::NoReassignmentInProgress {
                    topic: topic.clone(),
                    partition: *partition,
                    detail,
                };
                if assignment.group != *group {
                    return Err(no_move(format!(" in group {group}")));
                }
                let wanted = assignment.wanted_voters().ok_or_else(|| no_move(String::new()))?;
                if !same_members(wanted, voters) {
                    return Err(no_move(format!(" to {voters:?} (it moves to {wanted:?})")));
                }
                Ok(())
            }
        }
    }

    /// The assignment of `topic`/`partition`, or why there is none.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<&PartitionAssignment, MetadataError> {
        self.topics
            .get(topic)
            .ok_or_else(|| MetadataError::UnknownTopic(topic.to_string()))?
            .partitions
            .get(partition as usize)
            .ok_or_else(|| MetadataError::UnknownPartition {
                topic: topic.to_string(),
                partition,
            })
    }

    /// Checks a reassignment plan: known partitions, each named once, not moving already; each
    /// replica set non-empty, without duplicates, of registered brokers.
    fn check_moves(&self, moves: &[PartitionMove]) -> Result<(), MetadataError> {
        let mut seen = std::collections::BTreeSet::new();
        for move_ in moves {
            let invalid = |reason: String| MetadataError::InvalidReplicaAssignment {
                topic: move_.topic.clone(),
                partition: move_.partition,
                reason,
            };
            let assignment = self.partition(&move_.topic, move_.partition)?;
            if !seen.insert((move_.topic.as_str(), move_.partition)) {
                return Err(invalid("the plan names the partition twice".into()));
            }
            if move_.replicas.is_empty() {
                return Err(invalid("a partition needs at least one replica".into()));
            }
            let mut ids = move_.replicas.clone();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return Err(invalid(format!("{:?} names a broker twice", move_.replicas)));
            }
            if let Some(unknown) = ids.iter().find(|id| !self.brokers.contains_key(id)) {
                return Err(invalid(format!("broker {unknown} is not registered")));
            }
            if let Some(current) = &assignment.reassignment {
                return Err(MetadataError::ReassignmentInProgress {
                    topic: move_.topic.clone(),
                    partition: move_.partition,
                    target: current.target.clone(),
                });
            }
        }
        Ok(())
    }

    /// Applies `command`, or leaves the state unchanged and says why not.
    pub fn apply(&mut self, command: MetadataCommand) -> Result<(), MetadataError> {
        self.check(&command)?;
        if self.next_group == 0 {
            self.next_group = 1;
        }
        match command {
            MetadataCommand::RegisterBroker(broker) => {
                self.brokers.insert(broker.id, broker);
            }
            MetadataCommand::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
            } => {
                // Start the round-robin at a point derived from the topic count, so leaders of
                // successive topics spread over brokers too.
                let placement_start = self.topics.len();
                let assignments = self.place(0, partitions, replication_factor, placement_start);
                self.topics.insert(
                    name.clone(),
                    TopicMetadata {
                        name,
                        replication_factor,
                        config,
                        partitions: assignments,
                        placement_start,
                    },
                );
            }
            MetadataCommand::AddPartitions { name, total } => {
                let topic = self.topics.get(&name).expect("checked above");
                let (current, replication_factor) = (topic.partitions.len() as u32, topic.replication_factor);
                // Continue the topic's round-robin where its last partition left it.
                let start = topic.placement_start + current as usize;
                let added = self.place(current, total - current, replication_factor, start);
                self.topics
                    .get_mut(&name)
                    .expect("checked above")
                    .partitions
                    .extend(added);
            }
            MetadataCommand::AlterTopicConfig { name, set, reset } => {
                let topic = self.topics.get_mut(&name).expect("checked above");
                topic.config = log_config_with_changes(&topic.config, &set, &reset).expect("checked above");
            }
            MetadataCommand::DeleteTopic { name } => {
                self.topics.remove(&name);
            }
            MetadataCommand::AllocateProducerIds { broker, count } => {
                let start = self.next_producer_id;
                let end = start + i64::from(count);
                self.next_producer_id = end;
                self.producer_id_blocks.insert(broker, ProducerIdBlock { start, end });
            }
            MetadataCommand::ReassignPartitions { moves } => {
                for move_ in moves {
                    let assignment = self.partition_mut(&move_.topic, move_.partition);
                    if assignment.replicas != move_.replicas {
                        assignment.reassignment = Some(Reassignment {
                            target: move_.replicas,
                            cancelled: false,
                        });
                    }
                }
            }
            MetadataCommand::CancelReassignments { partitions } => {
                for partition in partitions {
                    let assignment = self.partition_mut(&partition.topic, partition.partition);
                    if let Some(move_) = &mut assignment.reassignment {
                        move_.cancelled = true;
                    }
                }
            }
            MetadataCommand::DecommissionBroker { broker } => {
                let moves = self.decommission_moves(broker).expect("checked above");
                self.decommissioning.insert(broker);
                for (topic, partition, target) in moves {
                    self.partition_mut(&topic, partition).reassignment = Some(Reassignment {
                        target,
                        cancelled: false,
                    });
                }
            }
            MetadataCommand::SetReassignmentThrottle { bytes_per_sec } => {
                self.reassignment_throttle = bytes_per_sec;
            }
            MetadataCommand::UpsertUser { name, credentials } => {
                self.users.insert(name, credentials);
            }
            MetadataCommand::DeleteUser { name } => {
                self.users.remove(&name);
            }
            MetadataCommand::SetTokenKey { key } => {
                self.token_key.get_or_insert(key);
            }
            MetadataCommand::AddAcls { bindings } => self.acls.extend(bindings),
            MetadataCommand::RemoveAcls { bindings } => {
                for binding in &bindings {
                    self.acls.remove(binding);
                }
            }
            MetadataCommand::RecommissionBroker { broker } => {
                self.decommissioning.remove(&broker);
                for topic in self.topics.values_mut() {
                    for assignment in &mut topic.partitions {
                        if assignment.removing().contains(&broker) {
                            if let Some(move_) = &mut assignment.reassignment {
                                move_.cancelled = true;
                            }
                        }
                    }
                }
            }
            MetadataCommand::CompleteReassignment { topic, partition, .. } => {
                let assignment = self.partition_mut(&topic, partition);
                let move_ = assignment.reassignment.take().expect("checked above");
                if !move_.cancelled {
                    assignment.replicas = move_.target;
                }
                assignment.epoch += 1;
            }
        }
        Ok(())
    }

    /// The moves that take every replica off `broker`: for each partition whose wanted replicas
    /// include it (its replicas, or the target of a move in progress), those replicas with it
    /// replaced. Replacements are chosen in partition order, each counting the ones before.
    fn decommission_moves(&self, broker: u64) -> Result<Vec<(String, u32, Vec<u64>)>, MetadataError> {
        if !self.brokers.contains_key(&broker) {
            return Err(MetadataError::UnknownBroker(broker));
        }
        if self.decommissioning.contains(&broker) {
            return Err(MetadataError::CannotDecommission {
                broker,
                reason: "it is being decommissioned already".into(),
            });
        }
        let candidates: Vec<Candidate<'_>> = self
            .active_brokers()
            .filter(|b| b.id != broker)
            .map(|b| Candidate {
                id: b.id,
                rack: b.rack.as_deref(),
            })
            .collect();
        let mut load: BTreeMap<u64, usize> = BTreeMap::new();
        for topic in self.topics.values() {
            for assignment in &topic.partitions {
                for host in assignment.hosts() {
                    *load.entry(host).or_default() += 1;
                }
            }
        }
        let mut moves = Vec::new();
        for topic in self.topics.values() {
            for assignment in &topic.partitions {
                let wanted = assignment.wanted_voters().unwrap_or(&assignment.replicas);
                if !wanted.contains(&broker) {
                    continue;
                }
                let into = replacement(&candidates, wanted, broker, &load).ok_or_else(|| {
                    MetadataError::CannotDecommission {
                        broker,
                        reason: format!(
                            "{}/{} has {} replicas and no other broker is free to hold one",
                            topic.name,
                            assignment.partition,
                            wanted.len()
                        ),
                    }
                })?;
                *load.entry(into).or_default() += 1;
                let target = wanted.iter().map(|id| if *id == broker { into } else { *id }).collect();
                moves.push((topic.name.clone(), assignment.partition, target));
            }
        }
        Ok(moves)
    }

    /// Brokers that take new replicas (registered, not being decommissioned).
    pub fn active_brokers(&self) -> impl Iterator<Item = &BrokerInfo> {
        self.brokers.values().filter(|b| !self.decommissioning.contains(&b.id))
    }

    /// The assignment of a partition `check` found.
    fn partition_mut(&mut self, topic: &str, partition: u32) -> &mut PartitionAssignment {
        self.topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(partition as usize))
            .expect("checked above")
    }

    /// Places partitions `first..first + count` on the registered brokers (round-robin from
    /// `start`, rack-aware) and gives each a fresh Raft group id.
    fn place(&mut self, first: u32, count: u32, replication_factor: u32, start: usize) -> Vec<PartitionAssignment> {
        let brokers: Vec<Candidate<'_>> = self
            .active_brokers()
            .map(|b| Candidate {
                id: b.id,
                rack: b.rack.as_deref(),
            })
            .collect();
        let placement = place_replicas(&brokers, count, replication_factor, start);
        placement
            .into_iter()
            .zip(first..first + count)
            .map(|(replicas, partition)| {
                let group = self.next_group;
                self.next_group += 1;
                PartitionAssignment {
                    partition,
                    group,
                    replicas,
                    epoch: 0,
                    reassignment: None,
                }
            })
            .collect()
    }

    /// Every partition broker `node` hosts a replica of (see [`PartitionAssignment::hosts`]),
    /// with its topic.
    pub fn assignments_of(&self, node: u64) -> Vec<(&TopicMetadata, &PartitionAssignment)> {
        self.topics
            .values()
            .flat_map(|topic| topic.partitions.iter().map(move |p| (topic, p)))
            .filter(|(_, p)| p.replicas.contains(&node) || p.adding().contains(&node))
            .collect()
    }

    /// Every partition being moved, with its topic name.
    pub fn reassignments(&self) -> impl Iterator<Item = (&str, &PartitionAssignment)> {
        self.topics.values().flat_map(|topic| {
            topic
                .partitions
                .iter()
                .filter(|p| p.reassignment.is_some())
                .map(move |p| (topic.name.as_str(), p))
        })
    }
}

/// Whether two replica lists hold the same brokers (order aside).
pub fn same_members(a: &[u64], b: &[u64]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn with_brokers(n: u64) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for id in 1..=n {
            metadata
                .apply(MetadataCommand::RegisterBroker(BrokerInfo {
                    id,
                    address: format!("127.0.0.1:{}", 9000 + id),
                    rack: None,
                    client_address: None,
                }))
                .unwrap();
        }
        metadata
    }

    pub(crate) fn create(name: &str, partitions: u32, rf: u32) -> MetadataCommand {
        MetadataCommand::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            config: LogConfig::default(),
        }
    }

    #[test]
    fn partitions_are_added_never_removed_and_old_ones_keep_their_replicas() {
        let mut metadata = with_brokers(3);
        metadata.apply(create("orders", 2, 3)).unwrap();
        let before = metadata.topics["orders"].partitions.clone();
        let next_group = metadata.next_group;
        metadata
            .apply(MetadataCommand::AddPartitions {
                name: "orders".into(),
                total: 5,
            })
            .unwrap();
        let after = &metadata.topics["orders"].partitions;
        assert_eq!(after.len(), 5);
        assert_eq!(&after[..2], &before[..], "existing partitions unchanged");
        for (i, added) in after[2..].iter().enumerate() {
            assert_eq!(added.partition, 2 + i as u32);
            assert_eq!(added.group, next_group + i as u64, "fresh group ids, never reused");
            let mut replicas = added.replicas.clone();
            replicas.sort_unstable();
            assert_eq!(replicas, vec![1, 2, 3]);
        }
        // Leaders (first replicas) of the new partitions spread over the brokers.
        let leaders: std::collections::BTreeSet<u64> = after[2..].iter().map(|p| p.replicas[0]).collect();
        assert_eq!(leaders.len(), 3);

        // A topic whose round-robin started elsewhere continues it: grown from 2 to 3
        // partitions, each broker leads exactly one.
        metadata.apply(create("events", 2, 3)).unwrap();
        assert_ne!(metadata.topics["events"].placement_start % 3, 0, "started off broker 1");
        metadata
            .apply(MetadataCommand::AddPartitions {
                name: "events".into(),
                total: 3,
            })
            .unwrap();
        let leaders: std::collections::BTreeSet<u64> = metadata.topics["events"]
            .partitions
            .iter()
            .map(|p| p.replicas[0])
            .collect();
        assert_eq!(leaders.len(), 3, "one partition led by each broker");

        let refused = |metadata: &ClusterMetadata, name: &str, total| {
            metadata
                .check(&MetadataCommand::AddPartitions {
                    name: name.into(),
                    total,
                })
                .unwrap_err()
        };
        assert_eq!(
            refused(&metadata, "orders", 5),
            MetadataError::PartitionCountNotIncreased {
                topic: "orders".into(),
                current: 5,
                requested: 5
            }
        );
        assert!(matches!(
            refused(&metadata, "orders", 3),
            MetadataError::PartitionCountNotIncreased { .. }
        ));
        assert_eq!(
            refused(&metadata, "orders", MAX_PARTITIONS + 1),
            MetadataError::InvalidPartitions(MAX_PARTITIONS + 1)
        );
        assert_eq!(
            refused(&metadata, "nope", 9),
            MetadataError::UnknownTopic("nope".into())
        );
    }

    #[test]
    fn config_changes_merge_into_the_settings_as_of_the_command() {
        let mut metadata = with_brokers(3);
        metadata.apply(create("orders", 2, 3)).unwrap();
        let alter = |set: &[(&str, &str)], reset: &[&str]| MetadataCommand::AlterTopicConfig {
            name: "orders".into(),
            set: set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            reset: reset.iter().map(|k| k.to_string()).collect(),
        };
        // Two changes to different keys, each computed without seeing the other: both hold.
        metadata.apply(alter(&[("max_message_bytes", "8192")], &[])).unwrap();
        metadata.apply(alter(&[("segment_bytes", "4096")], &[])).unwrap();
        let config = &metadata.topics["orders"].config;
        assert_eq!((config.max_message_bytes, config.segment_bytes), (8192, 4096));
        metadata.apply(alter(&[], &["max_message_bytes"])).unwrap();
        assert_eq!(
            metadata.topics["orders"].config.max_message_bytes,
            LogConfig::default().max_message_bytes
        );
        let before = metadata.clone();
        assert!(matches!(
            metadata.apply(alter(&[("segment_bytes", "1")], &[])),
            Err(MetadataError::InvalidConfig(_))
        ));
        assert!(matches!(
            metadata.apply(alter(&[], &["colour"])),
            Err(MetadataError::InvalidConfig(_))
        ));
        assert_eq!(metadata, before, "a refused command changes nothing");
        let unknown = MetadataCommand::AlterTopicConfig {
            name: "nope".into(),
            set: BTreeMap::new(),
            reset: vec![],
        };
        assert_eq!(
            metadata.check(&unknown),
            Err(MetadataError::UnknownTopic("nope".into()))
        );
    }

    #[test]
    fn create_assigns_unique_groups_and_distinct_replicas() {
        let mut metadata = with_brokers(3);
        metadata.apply(create("orders", 6, 3)).unwrap();
        metadata.apply(create("events", 2, 2)).unwrap();
        let groups: Vec<u64> = metadata
            .topics
            .values()
            .flat_map(|t| t.partitions.iter().map(|p| p.group))
            .collect();
        let mut unique = groups.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 8);
        assert!(!groups.contains(&0), "group 0 is the controller's");
        for partition in &metadata.topics["orders"].partitions {
            let mut replicas = partition.replicas.clone();
            replicas.sort();
            assert_eq!(replicas, vec![1, 2, 3]);
        }
        // Preferred leaders are spread evenly: each broker leads 2 of the 6 partitions.
        for broker in 1..=3 {
            let led = metadata.topics["orders"]
                .partitions
                .iter()
                .filter(|p| p.replicas[0] == broker)
                .count();
            assert_eq!(led, 2, "broker {broker}");
        }
    }

    #[test]
    fn producer_id_blocks_never_overlap() {
        let mut metadata = with_brokers(3);
        let mut blocks = Vec::new();
        for broker in [1, 2, 1, 3] {
            metadata
                .apply(MetadataCommand::AllocateProducerIds { broker, count: 1000 })
                .unwrap();
            blocks.push(metadata.producer_id_blocks[&broker]);
        }
        for pair in blocks.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            assert_eq!(pair[0].end - pair[0].start, 1000);
        }
        let before = metadata.clone();
        assert!(metadata
            .apply(MetadataCommand::AllocateProducerIds { broker: 1, count: 0 })
            .is_err());
        assert_eq!(metadata, before);
    }

    #[test]
    fn invalid_creations_are_refused_and_change_nothing() {
        let mut metadata = with_brokers(3);
        metadata.apply(create("orders", 1, 1)).unwrap();
        let before = metadata.clone();
        assert!(matches!(
            metadata.apply(create("orders", 1, 1)),
            Err(MetadataError::TopicExists(_))
        ));
        assert!(matches!(
            metadata.apply(create("bad name", 1, 1)),
            Err(MetadataError::InvalidTopicName { .. })
        ));
        assert!(matches!(
            metadata.apply(create("", 1, 1)),
            Err(MetadataError::InvalidTopicName { .. })
        ));
        assert!(matches!(
            metadata.apply(create(&"x".repeat(250), 1, 1)),
            Err(MetadataError::InvalidTopicName { .. })
        ));
        assert!(matches!(
            metadata.apply(create("t", 0, 1)),
            Err(MetadataError::InvalidPartitions(0))
        ));
        assert!(matches!(
            metadata.apply(create("t", 1, 4)),
            Err(MetadataError::InvalidReplicationFactor {
                requested: 4,
                brokers: 3
            })
        ));
        assert!(matches!(
            metadata.apply(MetadataCommand::DeleteTopic { name: "nope".into() }),
            Err(MetadataError::UnknownTopic(_))
        ));
        assert_eq!(metadata, before);
        metadata
            .apply(MetadataCommand::DeleteTopic { name: "orders".into() })
            .unwrap();
        assert!(metadata.topics.is_empty());
    }

    fn move_to(topic: &str, partition: u32, replicas: &[u64]) -> PartitionMove {
        PartitionMove {
            topic: topic.into(),
            partition,
            replicas: replicas.to_vec(),
        }
    }

    #[test]
    fn a_move_hosts_old_and_new_replicas_until_the_leader_reports_the_new_voters() {
        let mut metadata = with_brokers(4);
        metadata.apply(create("orders", 2, 3)).unwrap();
        let before = metadata.topics["orders"].partitions[0].clone();
        let target: Vec<u64> = vec![4, before.replicas[1], before.replicas[2]];
        metadata
            .apply(MetadataCommand::ReassignPartitions {
                moves: vec![move_to("orders", 0, &target)],
            })
            .unwrap();
        let moving = metadata.topics["orders"].partitions[0].clone();
        assert_eq!(moving.replicas, before.replicas, "the replicas stay until it completes");
        assert_eq!(moving.adding(), vec![4]);
        assert_eq!(moving.removing(), vec![before.replicas[0]]);
        assert_eq!(moving.hosts().len(), 4, "old and new replicas both host it meanwhile");
        assert!(metadata.assignments_of(4).iter().any(|(_, p)| p.group == before.group));
        assert_eq!(metadata.reassignments().count(), 1);

        // A report of other voters (the leader looked before a change) is refused.
        let complete = |voters: &[u64], group: u64| MetadataCommand::CompleteReassignment {
            topic: "orders".into(),
            partition: 0,
            group,
            voters: voters.to_vec(),
        };
        assert!(matches!(
            metadata.check(&complete(&before.replicas, before.group)),
            Err(MetadataError::NoReassignmentInProgress { .. })
        ));
        assert!(matches!(
            metadata.check(&complete(&target, before.group + 100)),
            Err(MetadataError::NoReassignmentInProgress { .. })
        ));
        // Voters in another order are the same set.
        let mut reordered = target.clone();
        reordered.reverse();
        metadata.apply(complete(&reordered, before.group)).unwrap();
        let done = &metadata.topics["orders"].partitions[0];
        assert_eq!(done.replicas, target, "the target, in the operator's order");
        assert_eq!(done.reassignment, None);
        assert_eq!(done.epoch, 1, "no longer formed by its first replica");
        assert!(metadata
            .assignments_of(before.replicas[0])
            .iter()
            .all(|(_, p)| p.group != before.group));

        // A move to the replicas it has is no move.
        metadata
            .apply(MetadataCommand::ReassignPartitions {
                moves: vec![move_to(
                    "orders",
                    1,
                    &metadata.topics["orders"].partitions[1].replicas.clone(),
                )],
            })
            .unwrap();
        assert_eq!(metadata.reassignments().count(), 0);
    }

    #[test]
    fn a_cancelled_move_leads_back_to_the_replicas_it_had() {
        let mut metadata = with_brokers(4);
        metadata.apply(create("orders", 1, 3)).unwrap();
        let before = metadata.topics["orders"].partitions[0].clone();
        metadata
            .apply(MetadataCommand::ReassignPartitions {
                moves: vec![move_to("orders", 0, &[4, 1, 2])],
            })
            .unwrap();
        let cancel = MetadataCommand::CancelReassignments {
            partitions: vec![PartitionRef {
                topic: "orders".into(),
                partition: 0,
            }],
        };
        metadata.apply(cancel.clone()).unwrap();
        let cancelled = &metadata.topics["orders"].partitions[0];
        assert_eq!(cancelled.wanted_voters(), Some(&before.replicas[..]));
        assert!(
            cancelled.hosts().contains(&4),
            "4 keeps its replica until the voters are back"
        );
        metadata
            .apply(MetadataCommand::CompleteReassignment {
                topic: "orders".into(),
                partition: 0,
                group: before.group,
                voters: before.replicas.clone(),
            })
            .unwrap();
        let after = &metadata.topics["orders"].partitions[0];
        assert_eq!((&after.replicas, &after.reassignment), (&before.replicas, &None));
        assert!(metadata.assignments_of(4).is_empty());
        assert!(matches!(
            metadata.check(&cancel),
            Err(MetadataError::NoReassignmentInProgress { .. })
        ));
    }

    #[test]
    fn bad_plans_are_refused_whole_and_change_nothing() {
        let mut metadata = with_brokers(4);
        metadata.apply(create("orders", 2, 3)).unwrap();
        metadata
            .apply(MetadataCommand::ReassignPartitions {
                moves: vec![move_to("orders", 1, &[4, 2, 3])],
            })
            .unwrap();
        let before = metadata.clone();
        let refused = |metadata: &mut ClusterMetadata, moves: Vec<PartitionMove>| {
            metadata
                .apply(MetadataCommand::ReassignPartitions { moves })
                .unwrap_err()
        };
        let good = move_to("orders", 0, &[1, 2, 4]);
        for (moves, expected) in [
            (vec![good.clone(), move_to("nope", 0, &[1])], "unknown topic"),
            (vec![good.clone(), move_to("orders", 7, &[1])], "has no partition 7"),
            (vec![move_to("orders", 0, &[])], "at least one replica"),
            (vec![move_to("orders", 0, &[1, 2, 1])], "names a broker twice"),
            (vec![move_to("orders", 0, &[1, 2, 9])], "broker 9 is not registered"),
            (vec![good.clone(), good.clone()], "names the partition twice"),
            (
                vec![good.clone(), move_to("orders", 1, &[1, 2, 3])],
                "being reassigned already",
            ),
        ] {
            let error = refused(&mut metadata, moves).to_string();
            assert!(error.contains(expected), "{error:?} should say {expected:?}");
            assert_eq!(metadata, before, "nothing changed after {expected:?}");
        }
    }

    #[test]
    fn a_decommission_moves_every_replica_off_and_a_recommission_cancels_what_is_left() {
        let mut metadata = with_brokers(4);
        metadata.apply(create("orders", 8, 3)).unwrap();
        let held: Vec<u32> = metadata.topics["orders"]
            .partitions
            .iter()
            .filter(|p| p.replicas.contains(&4))
            .map(|p| p.partition)
            .collect();
        assert!(!held.is_empty());
        metadata
            .apply(MetadataCommand::DecommissionBroker { broker: 4 })
            .unwrap();
        assert!(metadata.decommissioning.contains(&4));
        for partition in &metadata.topics["orders"].partitions {
            match held.contains(&partition.partition) {
                true => {
                    let target = partition.wanted_voters().unwrap();
                    assert!(!target.contains(&4) && target.len() == 3, "{partition:?}");
                    assert_eq!(partition.removing(), vec![4]);
                }
                false => assert_eq!(partition.reassignment, None),
            }
        }
        // Nothing new lands on it, and RF counts only brokers taking replicas.
        metadata.apply(create("events", 6, 3)).unwrap();
        assert!(metadata.topics["events"]
            .partitions
            .iter()
            .all(|p| !p.replicas.contains(&4)));
        assert!(matches!(
            metadata.check(&create("wide", 1, 4)),
            Err(MetadataError::InvalidReplicationFactor {
                requested: 4,
                brokers: 3
            })
        ));
        assert!(matches!(
            metadata.check(&MetadataCommand::DecommissionBroker { broker: 4 }),
            Err(MetadataError::CannotDecommission { .. })
        ));
        // With 4 leaving, 3 cannot leave too: RF 3 needs three brokers.
        assert!(matches!(
            metadata.check(&MetadataCommand::DecommissionBroker { broker: 3 }),
            Err(MetadataError::CannotDecommission { .. })
        ));
        assert_eq!(
            metadata.check(&MetadataCommand::DecommissionBroker { broker: 9 }),
            Err(MetadataError::UnknownBroker(9))
        );
        assert_eq!(
            metadata.check(&MetadataCommand::RecommissionBroker { broker: 9 }),
            Err(MetadataError::UnknownBroker(9))
        );

        metadata
            .apply(MetadataCommand::RecommissionBroker { broker: 4 })
            .unwrap();
        assert!(metadata.decommissioning.is_empty());
        for (_, partition) in metadata.reassignments() {
            assert!(partition.reassignment.as_ref().unwrap().cancelled);
            assert!(
                partition.wanted_voters().unwrap().contains(&4),
                "back to the replicas it had"
            );
        }
        assert!(metadata
            .check(&MetadataCommand::RecommissionBroker { broker: 4 })
            .is_err());
    }

    #[test]
    fn a_zero_throttle_is_refused_and_none_lifts_it() {
        let mut metadata = with_brokers(3);
        let set = |bytes_per_sec| MetadataCommand::SetReassignmentThrottle { bytes_per_sec };
        assert!(matches!(
            metadata.apply(set(Some(0))),
            Err(MetadataError::InvalidConfig(_))
        ));
        assert_eq!(metadata.reassignment_throttle, None);
        metadata.apply(set(Some(1 << 20))).unwrap();
        assert_eq!(metadata.reassignment_throttle, Some(1 << 20));
        metadata.apply(set(None)).unwrap();
        assert_eq!(metadata.reassignment_throttle, None);
    }
}
