//! Client library for the broker cluster.
//!
//! [`Cluster`] connects to any broker, learns the cluster from it and routes each call: topic
//! changes to the controller, produce/fetch/list-offsets to the partition leader — following
//! `NOT_LEADER` / `NOT_CONTROLLER` hints and retrying retriable errors with backoff until a
//! deadline. The batching idempotent producer and the group consumer build on it (issue 4).
#![deny(missing_docs)]

mod cluster;
mod error;
pub mod partitioner;

pub use cluster::{Cluster, FetchedBatch, RetryPolicy};
pub use error::ClientError;
pub use proto::v1::{Acks, ErrorCode, MetadataResponse, OffsetSpec, TopicDescription, TopicSpec};
