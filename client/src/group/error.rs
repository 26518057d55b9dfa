//! Why a group consumer call failed: the group layer's one error type.

use crate::consumer::ConsumeError;
use crate::error::ClientError;
use proto::v1::ErrorCode;

/// Why a group consumer call failed. `code()` gives the broker's error code where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The configuration is invalid.
    #[error("invalid group consumer config: {0}")]
    InvalidConfig(String),
    /// `poll` or a commit before `subscribe`.
    #[error("the consumer is not subscribed to any topic")]
    NotSubscribed,
    /// The consumer was closed.
    #[error("the consumer is closed")]
    Closed,
    /// The coordinator refused the member, for good until the application changes something:
    /// UNKNOWN_TOPIC_OR_PARTITION (a subscribed topic does not exist), INVALID_GROUP_ID,
    /// UNSUPPORTED_ASSIGNOR, INVALID_REQUEST. The member stops heartbeating; `subscribe`
    /// again to retry.
    #[error("the group coordinator refused the member: {code:?}: {message}")]
    Refused {
        /// The wire code.
        code: ErrorCode,
        /// The coordinator's explanation.
        message: String,
    },
    /// An offset commit failed. STALE_MEMBER_EPOCH: the member heartbeats at once, retry the
    /// commit after the next `poll`. UNKNOWN_MEMBER_ID / FENCED_MEMBER_EPOCH: the member lost
    /// its partitions (the next `poll` reports them lost). PARTITION_NOT_ASSIGNED: the
    /// partition was moved away.
    #[error("offset commit failed: {code:?}: {message}")]
    Commit {
        /// The wire code, if the coordinator answered.
        code: Option<ErrorCode>,
        /// What failed.
        message: String,
    },
    /// A commit named a partition this member does not own.
    #[error("{topic}/{partition} is not assigned to this member")]
    NotAssigned {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// A partition was assigned that has no committed offset, and `auto_offset_reset` is
    /// `None`.
    #[error("{topic}/{partition} has no committed offset and auto_offset_reset is none")]
    NoCommittedOffset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// Fetching records failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// A call to the cluster failed (after retries of retriable errors).
    #[error("{message}")]
    Cluster {
        /// The broker's code, if a broker answered.
        code: Option<ErrorCode>,
        /// What failed.
        message: String,
    },
}

impl GroupError {
    /// The broker error code behind this error, if any.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            GroupError::Refused { code, .. } => Some(*code),
            GroupError::Commit { code, .. } | GroupError::Cluster { code, .. } => *code,
            GroupError::Consume(ConsumeError::Cluster { code, .. }) => *code,
            _ => None,
        }
    }

    pub(crate) fn commit(error: ClientError) -> GroupError {
        GroupError::Commit {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

impl From<ClientError> for GroupError {
    fn from(error: ClientError) -> Self {
        GroupError::Cluster {
            code: error.code(),
            message: error.to_string(),
        }
    }
}
