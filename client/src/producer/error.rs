//! Why a record was not (or may not have been) written: the producer's one error type. Each
//! variant says whether the record may be in the log; `code()` gives the wire code behind it.

use proto::v1::ErrorCode;
use std::time::Duration;

/// Why a record was not (or may not have been) written. Match on the variant; `code()` gives
/// the broker's error code where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    /// The topic does not exist (the cluster answered, but not with this topic, for `max_block`).
    #[error("unknown topic {topic:?}: not in the cluster's metadata after {waited:?}")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// How long `send` waited for it.
        waited: Duration,
    },
    /// The topic's metadata could not be fetched within `max_block` (no broker answered).
    #[error("no metadata for topic {topic:?} after {waited:?}: {last_error}")]
    MetadataUnavailable {
        /// The topic.
        topic: String,
        /// How long `send` waited.
        waited: Duration,
        /// The last error seen.
        last_error: String,
    },
    /// The partition does not exist.
    #[error("topic {topic:?} has {partitions} partitions; there is no partition {partition}")]
    InvalidPartition {
        /// The topic.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// Partitions the topic has.
        partitions: u32,
    },
    /// The record alone is larger than the topic accepts (`max.message.bytes`).
    #[error("record of about {size} bytes is larger than topic {topic:?} accepts ({max} bytes)")]
    RecordTooLarge {
        /// The topic.
        topic: String,
        /// Encoded size of the record, about.
        size: usize,
        /// The topic's max.message.bytes.
        max: usize,
    },
    /// No acknowledgement within `delivery_timeout`: the record may or may not be written.
    #[error("delivery timed out after {elapsed:?} (the record may or may not be written); last error: {last_error}")]
    DeliveryTimeout {
        /// Time since `send`.
        elapsed: Duration,
        /// The last error a produce attempt got, if any.
        last_error: String,
    },
    /// The broker refused the batch for good.
    #[error("broker refused the batch: {code:?}: {message}")]
    Broker {
        /// The wire error code.
        code: ErrorCode,
        /// The broker's explanation.
        message: String,
    },
    /// No room in `buffer_memory` within `max_block`: the cluster is not keeping up.
    #[error("no room in the producer's buffer after {waited:?}")]
    BufferFull {
        /// How long `send` waited.
        waited: Duration,
    },
    /// The producer was closed before the record was sent.
    #[error("the producer is closed")]
    Closed,
    /// The producer's configuration is invalid.
    #[error("invalid producer config: {0}")]
    InvalidConfig(String),
}

impl ProduceError {
    /// The broker error code behind this error, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ProduceError::Broker { code, .. } => Some(*code),
            ProduceError::RecordTooLarge { .. } => Some(ErrorCode::RecordTooLarge),
            ProduceError::UnknownTopic { .. } | ProduceError::InvalidPartition { .. } => {
                Some(ErrorCode::UnknownTopicOrPartition)
            }
            _ => None,
        }
    }
}
