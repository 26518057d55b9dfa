//! Client library for the broker cluster.
//!
//! - [`Producer`]: batching (`linger`, `batch_size`), compressing, idempotent by default —
//!   a retried batch is never written twice, and order per partition holds across retries.
//! - [`Consumer`]: assigned partitions, `seek`, `poll` or a `Stream`, with the next fetch in
//!   flight while the application works.
//! - [`GroupConsumer`] ([`group`]): a member of a consumer group — subscribes to topics,
//!   consumes the partitions its coordinator assigns, commits, and hands partitions over on a
//!   rebalance; [`group::DeadLetters`] moves records that keep failing to `<topic>.dlq`.
//! - [`Admin`]: topics, cluster description, offsets, consumer groups.
//! - [`Cluster`]: what they share — connects to any broker, learns the cluster from it and
//!   routes each call (topic changes to the controller, partition calls to the leader, group
//!   calls to the group's coordinator), following `NOT_LEADER` / `NOT_CONTROLLER` /
//!   `NOT_COORDINATOR` hints and retrying retriable errors.
//!
//! Every retry in the crate follows one rule, `retry::Backoff` (doubling, capped, within a
//! deadline); which wire codes are retriable is `ErrorCode::is_retriable`, shared with the broker.
#![deny(missing_docs)]

mod admin;
mod cluster;
mod consumer;
mod error;
pub mod group;
pub mod partitioner;
mod producer;
mod retry;
pub mod security;

pub use admin::{
    Admin, AdminError, ClusterDescription, GroupDescription, GroupList, GroupSummary, MemberDescription, NewTopic,
    OffsetResetTo, PartitionLag,
};
pub use cluster::{Cluster, Coordinator, FetchedBatch, ProduceAck};
pub use consumer::{ConsumeError, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo};
pub use error::ClientError;
pub use group::{GroupConfig, GroupConsumer, GroupError, RebalanceListener};
pub use producer::{DeliveryFuture, ProduceError, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use proto::record_batch::{Compression, RecordHeader};
pub use proto::v1::{
    Acks, BrokerDescription, ErrorCode, MetadataResponse, OffsetSpec, PartitionDescription, PartitionReplicas,
    ReassignmentDescription, TopicDescription, TopicSpec,
};
pub use retry::RetryPolicy;
pub use security::Security;
