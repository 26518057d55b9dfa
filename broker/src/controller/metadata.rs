//! Cluster metadata and the commands that change it: a pure, deterministic state machine.
//! Every controller replica applies the same commands in the same order and so holds the same
//! metadata. No IO, no clock.

use super::placement::{place_replicas, Candidate};
use crate::storage::settings::log_config_with_changes;
use crate::storage::LogConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// Address clients and peers connect to (`host:port`).
    pub address: String,
    /// Optional rack, for rack-aware placement.
    pub rack: Option<String>,
}

/// Where one partition lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Partition index within the topic.
    pub partition: u32,
    /// Raft group id of the partition (unique in the cluster, never reused).
    pub group: u64,
    /// Replica broker ids; the first is the preferred leader.
    pub replicas: Vec<u64>,
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
}

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
    #[error("replication factor {requested} must be within 1..={brokers} (the number of brokers)")]
    InvalidReplicationFactor {
        /// Replication factor asked for.
        requested: u32,
        /// Brokers registered.
        brokers: usize,
    },
    /// Log settings out of range.
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
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
                if *replication_factor == 0 || *replication_factor as usize > self.brokers.len() {
                    return Err(MetadataError::InvalidReplicationFactor {
                        requested: *replication_factor,
                        brokers: self.brokers.len(),
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
                if topic.replication_factor as usize > self.brokers.len() {
                    return Err(MetadataError::InvalidReplicationFactor {
                        requested: topic.replication_factor,
                        brokers: self.brokers.len(),
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
        }
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
        }
        Ok(())
    }

    /// Places partitions `first..first + count` on the registered brokers (round-robin from
    /// `start`, rack-aware) and gives each a fresh Raft group id.
    fn place(&mut self, first: u32, count: u32, replication_factor: u32, start: usize) -> Vec<PartitionAssignment> {
        let brokers: Vec<Candidate<'_>> = self
            .brokers
            .values()
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
                }
            })
            .collect()
    }

    /// Every partition assignment that includes broker `node`, with its topic.
    pub fn assignments_of(&self, node: u64) -> Vec<(&TopicMetadata, &PartitionAssignment)> {
        self.topics
            .values()
            .flat_map(|topic| topic.partitions.iter().map(move |p| (topic, p)))
            .filter(|(_, p)| p.replicas.contains(&node))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_brokers(n: u64) -> ClusterMetadata {
        let mut metadata = ClusterMetadata::default();
        for id in 1..=n {
            metadata
                .apply(MetadataCommand::RegisterBroker(BrokerInfo {
                    id,
                    address: format!("127.0.0.1:{}", 9000 + id),
                    rack: None,
                }))
                .unwrap();
        }
        metadata
    }

    fn create(name: &str, partitions: u32, rf: u32) -> MetadataCommand {
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
}
