//! The admin client: topics, cluster description and offsets, with typed per-topic errors;
//! consumer groups in [`groups`].

mod groups;

pub use groups::{GroupDescription, GroupList, GroupSummary, MemberDescription, OffsetResetTo, PartitionLag};

use crate::cluster::Cluster;
use crate::error::ClientError;
use proto::v1::{
    BrokerDescription, ErrorCode, OffsetSpec, PartitionReplicas, ReassignmentDescription, TopicDescription,
    TopicResult, TopicSpec,
};
use std::collections::HashMap;
use std::sync::Arc;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Config overrides by name (see `docs/error-codes.md` and `broker topic create --help`).
    pub configs: HashMap<String, String>,
}

impl NewTopic {
    /// A topic with default configs.
    pub fn new(name: impl Into<String>, partitions: u32, replication_factor: u32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: HashMap::new(),
        }
    }

    /// With a config override (e.g. `retention_ms`, `fsync`, `max_message_bytes`).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// Why an admin call failed for one topic, or as a whole.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The controller refused the change for this topic.
    #[error("topic {topic:?}: {code:?}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why (TOPIC_ALREADY_EXISTS, INVALID_REPLICATION_FACTOR, ...).
        code: ErrorCode,
        /// The controller's explanation.
        message: String,
    },
    /// A group's coordinator refused the call (NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND,
    /// INVALID_GROUP_ID, ...).
    #[error("group {group:?}: {code:?}: {message}")]
    Group {
        /// The group.
        group: String,
        /// Why.
        code: ErrorCode,
        /// The coordinator's explanation.
        message: String,
    },
    /// The request failed as a whole.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl AdminError {
    /// The broker error code behind this error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            AdminError::Topic { code, .. } | AdminError::Group { code, .. } => Some(*code),
            AdminError::Client(error) => error.code(),
        }
    }
}

/// The cluster as one broker and the partition leaders see it.
#[derive(Debug, Clone)]
pub struct ClusterDescription {
    /// Registered brokers.
    pub brokers: Vec<BrokerDescription>,
    /// The controller leader, if one is elected.
    pub controller: Option<u64>,
    /// The controller's voters (its quorum), as the broker asked knows them.
    pub controller_voters: Vec<u64>,
    /// Every topic with its partitions (leader, replicas, ISR, offsets as the leader sees them).
    pub topics: Vec<TopicDescription>,
}

/// Administrative operations on a cluster.
#[derive(Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

fn per_topic(results: Vec<TopicResult>) -> Vec<Result<String, AdminError>> {
    results
        .into_iter()
        .map(
            |result| match ErrorCode::try_from(result.error).unwrap_or(ErrorCode::InvalidRequest) {
                ErrorCode::None => Ok(result.name),
                code => Err(AdminError::Topic {
                    topic: result.name,
                    code,
                    message: result.message,
                }),
            },
        )
        .collect()
}

impl Admin {
    /// An admin client over `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Admin {
        Admin { cluster }
    }

    /// Creates topics; one outcome per topic, in order (the topic's name on success).
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Result<Vec<Result<String, AdminError>>, ClientError> {
        let specs = topics
            .into_iter()
            .map(|t| TopicSpec {
                name: t.name,
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t.configs,
            })
            .collect();
        Ok(per_topic(self.cluster.create_topics(specs).await?))
    }

    /// Creates one topic.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<(), AdminError> {
        let mut outcomes = self.create_topics(vec![topic]).await?;
        outcomes.pop().map_or(Ok(()), |outcome| outcome.map(|_| ()))
    }

    /// Grows `topic` to `total` partitions (Kafka's `createPartitions`). Existing partitions
    /// keep their records; producers see the new count once they refresh the topic's layout
    /// (`metadata_max_age`), and keyed records then hash over the new count, as in Kafka.
    pub async fn create_partitions(&self, topic: &str, total: u32) -> Result<(), AdminError> {
        let mut outcomes = per_topic(self.cluster.create_partitions(topic, total).await?);
        outcomes.pop().map_or(Ok(()), |outcome| outcome.map(|_| ()))
    }

    /// Changes `topic`'s configs (Kafka's `incrementalAlterConfigs`): each key of `set` takes
    /// its value, each key of `reset` goes back to its default; the rest stay. Running
    /// replicas apply the change within moments.
    pub async fn alter_topic_config(
        &self,
        topic: &str,
        set: HashMap<String, String>,
        reset: Vec<String>,
    ) -> Result<(), AdminError> {
        let mut outcomes = per_topic(self.cluster.alter_topic_config(topic, set, reset).await?);
        outcomes.pop().map_or(Ok(()), |outcome| outcome.map(|_| ()))
    }

    /// Deletes topics; one outcome per topic, in order.
    pub async fn delete_topics(&self, names: Vec<String>) -> Result<Vec<Result<String, AdminError>>, ClientError> {
        Ok(per_topic(self.cluster.delete_topics(names).await?))
    }

    /// Deletes one topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), AdminError> {
        let mut outcomes = self.delete_topics(vec![name.to_string()]).await?;
        outcomes.pop().map_or(Ok(()), |outcome| outcome.map(|_| ()))
    }

    /// Topic names with partition counts and replication factors (cheap: one broker asked).
    pub async fn list_topics(&self) -> Result<Vec<TopicDescription>, ClientError> {
        Ok(self.cluster.metadata(Vec::new()).await?.topics)
    }

    /// The named topics (all if empty) with configs, and each partition's leader, ISR and
    /// offsets as its leader sees them. An unknown topic comes back with its error code set.
    pub async fn describe_topics(&self, names: Vec<String>) -> Result<Vec<TopicDescription>, ClientError> {
        Ok(self.cluster.describe_topics(names).await?.topics)
    }

    /// Brokers, the controller and every partition.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, ClientError> {
        let metadata = self.cluster.describe_topics(Vec::new()).await?;
        Ok(ClusterDescription {
            brokers: metadata.brokers,
            controller: metadata.controller,
            controller_voters: metadata.controller_voters,
            topics: metadata.topics,
        })
    }

    /// Moves the leadership of a partition to broker `to`, one of its replicas (to rebalance
    /// leaders, or before taking the current leader down); returns once `to` leads.
    pub async fn transfer_leadership(&self, topic: &str, partition: u32, to: u64) -> Result<(), ClientError> {
        self.cluster.transfer_leadership(topic, partition, to).await
    }

    /// Moves partitions to new replica sets (Kafka's `alterPartitionReassignments`): each
    /// partition's new replicas join as learners, the voters switch once they have caught up,
    /// and the replicas dropped delete their data. The plan is checked whole (unknown topic,
    /// partition or broker, an empty set, a broker twice, a partition moving already) and
    /// recorded whole, or not at all; the moves then run in the background
    /// ([`list_reassignments`](Self::list_reassignments) follows them).
    pub async fn reassign_partitions(&self, moves: Vec<PartitionReplicas>) -> Result<(), ClientError> {
        self.cluster.reassign_partitions(moves).await
    }

    /// Cancels moves in progress: each partition returns to the replicas it had.
    pub async fn cancel_reassignments(&self, partitions: Vec<(String, u32)>) -> Result<(), ClientError> {
        let partitions = partitions
            .into_iter()
            .map(|(topic, partition)| proto::v1::TopicPartition { topic, partition })
            .collect();
        self.cluster.cancel_reassignments(partitions).await
    }

    /// Moves every replica off `broker` (a move per partition it holds; replacements placed
    /// rack-aware, least loaded first) and places nothing new on it. It is safe to stop once no
    /// partition's replicas name it ([`describe_cluster`](Self::describe_cluster)).
    pub async fn decommission_broker(&self, broker: u64) -> Result<(), ClientError> {
        self.cluster.decommission_broker(broker, true).await
    }

    /// Ends a decommission: the broker takes replicas again, and moves off it still in
    /// progress are cancelled.
    pub async fn recommission_broker(&self, broker: u64) -> Result<(), ClientError> {
        self.cluster.decommission_broker(broker, false).await
    }

    /// Makes `voters` the controller's voting members (KRaft's `controller.quorum.voters`,
    /// changed online): each catches up as a learner, then the voters switch by joint consensus;
    /// brokers that stop voting keep following the metadata. Returns once the switch has
    /// committed (`Metadata::controller_voters` shows it); asked again, a change interrupted
    /// half-way resumes.
    pub async fn set_controller_voters(&self, voters: Vec<u64>) -> Result<(), ClientError> {
        self.cluster.set_controller_voters(voters).await
    }

    /// Limits the bytes per second each broker takes into replicas still copying a moving
    /// partition's log (`None` lifts it), so moving data does not starve producers (Kafka's
    /// `--throttle`). Appends to voters never wait on it.
    pub async fn set_reassignment_throttle(&self, bytes_per_sec: Option<u64>) -> Result<(), ClientError> {
        self.cluster.set_reassignment_throttle(bytes_per_sec).await
    }

    /// The moves in progress.
    pub async fn list_reassignments(&self) -> Result<Vec<ReassignmentDescription>, ClientError> {
        self.cluster.list_reassignments().await
    }

    /// The earliest or latest offset of a partition, or the first offset at or after
    /// `timestamp` (`None`: every record is older).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
        timestamp: i64,
    ) -> Result<Option<u64>, ClientError> {
        self.cluster.list_offsets(topic, partition, spec, timestamp).await
    }
}
