//! The error type of replicated operations ([`ReplicationError`]): one enum for the replication
//! layer, mapped to wire codes only in `api::error_codes`.
//!
//! Every variant about a partition names its Raft group: the replica that failed knows it. A
//! layer above that gives up on its own (a deadline of its own) must not invent one — group 0 is
//! the controller's.

use crate::storage::StorageError;

/// Errors of replicated operations.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// This replica is not the leader; `leader` is the current one if known. Retriable there.
    #[error("not the leader of group {group}; leader is {leader:?}")]
    NotLeader {
        /// The Raft group.
        group: u64,
        /// The leader's node id, if known.
        leader: Option<u64>,
    },
    /// The local log failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The Raft node stopped or refused the request for another reason.
    #[error("raft group {group}: {message}")]
    Raft {
        /// The Raft group.
        group: u64,
        /// What openraft said.
        message: String,
    },
    /// The Raft timers do not make a valid openraft configuration (a start-up error: no group
    /// exists yet).
    #[error("invalid raft timers: {0}")]
    InvalidTimers(String),
    /// A batch of an idempotent producer was offered with acks other than all (Kafka requires
    /// acks=all for idempotence; the API refuses such requests before they get here).
    #[error("raft group {group}: idempotent batches need acks=all")]
    IdempotenceNeedsAcksAll {
        /// The Raft group.
        group: u64,
    },
    /// An idempotent batch's sequence is not its producer's next one.
    #[error("raft group {group}: producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// The Raft group.
        group: u64,
        /// The producer.
        producer_id: i64,
        /// The sequence expected next.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// An idempotent batch from an older epoch than the partition has seen.
    #[error("raft group {group}: producer {producer_id} epoch {got} is fenced by epoch {current}")]
    ProducerFenced {
        /// The Raft group.
        group: u64,
        /// The producer.
        producer_id: i64,
        /// The current epoch.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// An idempotent batch written long ago (older than the batches remembered): nothing appended.
    #[error("raft group {group}: producer {producer_id} sequence {got} was written before its last five batches")]
    DuplicateSequence {
        /// The Raft group.
        group: u64,
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        got: i32,
    },
    /// No state for the producer (new, or evicted as idle) and the batch is not its first.
    #[error("raft group {group}: no state for producer {producer_id} and its batch starts at sequence {got}, not 0")]
    UnknownProducer {
        /// The Raft group.
        group: u64,
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        got: i32,
    },
    /// Waiting for a condition took longer than allowed.
    #[error("raft group {group}: timed out waiting for {what}")]
    Timeout {
        /// The Raft group that did not answer in time.
        group: u64,
        /// What was waited for.
        what: String,
    },
}

impl ReplicationError {
    /// The leader a `NotLeader` names, for the client to retry at; `None` for every other error.
    pub fn leader(&self) -> Option<u64> {
        match self {
            ReplicationError::NotLeader { leader, .. } => *leader,
            _ => None,
        }
    }
}
