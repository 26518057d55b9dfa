//! What the wire error codes mean to a caller: which ones may be retried as is.
//!
//! The list lives here, beside the generated [`ErrorCode`], so the broker (which documents each
//! code's retriability in `docs/error-codes.md`) and the client (which decides whether to retry)
//! read the same one. A new code must be added to the table test below, which fails otherwise.

use crate::v1::ErrorCode;

impl ErrorCode {
    /// Whether a client may retry a request that failed with this code without changing it:
    /// the leader or controller moved, a timeout, a replica that cannot write or read now.
    ///
    /// `UNKNOWN_TOPIC_OR_PARTITION` is retriable as in Kafka: a broker that just restarted may
    /// not have re-applied the metadata yet. A topic that really does not exist fails at the
    /// caller's deadline, with this code as the last error.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::StorageUnavailable
                | ErrorCode::CorruptData
                | ErrorCode::NotLeader
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::NotController
                | ErrorCode::RequestTimedOut
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code and whether it is retriable, as documented in `common.proto`.
    const TABLE: &[(ErrorCode, bool)] = &[
        (ErrorCode::None, false),
        (ErrorCode::InvalidRequest, false),
        (ErrorCode::OffsetOutOfRange, false),
        (ErrorCode::RecordTooLarge, false),
        (ErrorCode::CorruptData, true),
        (ErrorCode::StorageUnavailable, true),
        (ErrorCode::NotLeader, true),
        (ErrorCode::UnknownTopicOrPartition, true),
        (ErrorCode::TopicAlreadyExists, false),
        (ErrorCode::InvalidTopic, false),
        (ErrorCode::InvalidReplicationFactor, false),
        (ErrorCode::InvalidPartitions, false),
        (ErrorCode::InvalidConfig, false),
        (ErrorCode::NotController, true),
        (ErrorCode::RequestTimedOut, true),
        (ErrorCode::NotEnoughReplicas, true),
        // Sequence errors are not retriable as is: the producer resends earlier batches first
        // or re-stamps under a new producer id (its own rule, not this one).
        (ErrorCode::OutOfOrderSequence, false),
        (ErrorCode::InvalidProducerEpoch, false),
        (ErrorCode::UnknownProducerId, false),
        (ErrorCode::DuplicateSequence, false),
        (ErrorCode::NotCoordinator, true),
        (ErrorCode::CoordinatorNotAvailable, true),
        (ErrorCode::InvalidGroupId, false),
        (ErrorCode::GroupIdNotFound, false),
        // Membership errors are not retriable as is: the member rejoins (epoch 0) or
        // heartbeats for its current epoch first (the group consumer's own rule).
        (ErrorCode::UnknownMemberId, false),
        (ErrorCode::FencedMemberEpoch, false),
        (ErrorCode::StaleMemberEpoch, false),
        (ErrorCode::NonEmptyGroup, false),
        (ErrorCode::PartitionNotAssigned, false),
        (ErrorCode::UnsupportedAssignor, false),
        (ErrorCode::TopicIsInternal, false),
        (ErrorCode::InvalidReplicaAssignment, false),
        (ErrorCode::ReassignmentInProgress, false),
        (ErrorCode::NoReassignmentInProgress, false),
        (ErrorCode::UnknownBroker, false),
        (ErrorCode::SaslAuthenticationFailed, false),
        (ErrorCode::ClusterAuthorizationFailed, false),
        (ErrorCode::UnknownUser, false),
        (ErrorCode::TopicAuthorizationFailed, false),
        (ErrorCode::GroupAuthorizationFailed, false),
    ];

    #[test]
    fn retriability_matches_the_table() {
        for &(code, retriable) in TABLE {
            assert_eq!(code.is_retriable(), retriable, "{code:?}");
        }
    }

    #[test]
    fn the_table_covers_every_code() {
        let every_code: Vec<ErrorCode> = (0..1000).filter_map(|n| ErrorCode::try_from(n).ok()).collect();
        assert_eq!(every_code.len(), TABLE.len(), "a code is missing from the table");
        for code in every_code {
            assert!(
                TABLE.iter().any(|&(listed, _)| listed == code),
                "{code:?} is not in the table"
            );
        }
    }
}
