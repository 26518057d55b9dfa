//! The one place internal errors become wire error codes. Each code's retriability is part of
//! the contract documented in `docs/error-codes.md`.

use crate::controller::metadata::MetadataError;
use crate::controller::ControllerError;
use crate::coordinator::GroupError;
use crate::replication::ReplicationError;
use crate::storage::StorageError;
use proto::v1::ErrorCode;

/// The wire code for a storage error.
pub fn storage_error_code(error: &StorageError) -> ErrorCode {
    match error {
        StorageError::Io { .. } | StorageError::Failed { .. } | StorageError::LowDiskSpace { .. } => {
            ErrorCode::StorageUnavailable
        }
        StorageError::Corrupt { .. } | StorageError::BadStateFile { .. } => ErrorCode::CorruptData,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::EntryTooLarge { .. } => ErrorCode::RecordTooLarge,
        StorageError::NonContiguousAppend { .. }
        | StorageError::InvalidBatch { .. }
        | StorageError::InvalidPosition(_)
        | StorageError::InvalidConfig(_) => ErrorCode::InvalidRequest,
    }
}

/// The wire code for a replication error.
pub fn replication_error_code(error: &ReplicationError) -> ErrorCode {
    match error {
        ReplicationError::NotLeader { .. } => ErrorCode::NotLeader,
        ReplicationError::Storage(storage) => storage_error_code(storage),
        ReplicationError::Timeout { .. } => ErrorCode::RequestTimedOut,
        ReplicationError::Raft { .. } => ErrorCode::NotEnoughReplicas,
        ReplicationError::InvalidTimers(_) => ErrorCode::InvalidConfig,
        ReplicationError::IdempotenceNeedsAcksAll { .. } => ErrorCode::InvalidRequest,
        ReplicationError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        ReplicationError::ProducerFenced { .. } => ErrorCode::InvalidProducerEpoch,
        ReplicationError::UnknownProducer { .. } => ErrorCode::UnknownProducerId,
        ReplicationError::DuplicateSequence { .. } => ErrorCode::DuplicateSequence,
    }
}

/// The wire code for a controller error.
pub fn controller_error_code(error: &ControllerError) -> ErrorCode {
    match error {
        ControllerError::NotController { .. } => ErrorCode::NotController,
        ControllerError::Replication(replication) => replication_error_code(replication),
        ControllerError::Invalid(invalid) => match invalid {
            MetadataError::InvalidTopicName { .. } => ErrorCode::InvalidTopic,
            MetadataError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            MetadataError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
            MetadataError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            MetadataError::InvalidReplicationFactor { .. } => ErrorCode::InvalidReplicationFactor,
            MetadataError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            MetadataError::PartitionCountNotIncreased { .. } => ErrorCode::InvalidPartitions,
            MetadataError::UnknownPartition { .. } => ErrorCode::UnknownTopicOrPartition,
            MetadataError::InvalidReplicaAssignment { .. } => ErrorCode::InvalidReplicaAssignment,
            MetadataError::ReassignmentInProgress { .. } => ErrorCode::ReassignmentInProgress,
            MetadataError::NoReassignmentInProgress { .. } => ErrorCode::NoReassignmentInProgress,
            MetadataError::UnknownBroker(_) => ErrorCode::UnknownBroker,
            MetadataError::UnknownUser(_) => ErrorCode::UnknownUser,
            MetadataError::InvalidUser(_) => ErrorCode::InvalidRequest,
            // Not enough brokers left to hold the replicas, or not in that state: the reason says.
            MetadataError::CannotDecommission { .. } => ErrorCode::InvalidReplicaAssignment,
        },
    }
}

/// The wire code for a refused group request.
pub fn group_error_code(error: &GroupError) -> ErrorCode {
    match error {
        GroupError::InvalidRequest(_) => ErrorCode::InvalidRequest,
        GroupError::InvalidGroupId(_) => ErrorCode::InvalidGroupId,
        GroupError::GroupNotFound(_) => ErrorCode::GroupIdNotFound,
        GroupError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
        GroupError::CoordinatorNotAvailable(_) => ErrorCode::CoordinatorNotAvailable,
        GroupError::UnknownMember { .. } => ErrorCode::UnknownMemberId,
        GroupError::FencedEpoch { .. } => ErrorCode::FencedMemberEpoch,
        GroupError::StaleEpoch { .. } => ErrorCode::StaleMemberEpoch,
        GroupError::NotAssigned { .. } => ErrorCode::PartitionNotAssigned,
        GroupError::NonEmpty { .. } => ErrorCode::NonEmptyGroup,
        GroupError::UnknownTopic(_) => ErrorCode::UnknownTopicOrPartition,
        GroupError::UnsupportedAssignor(_) => ErrorCode::UnsupportedAssignor,
        GroupError::Replication(_) => ErrorCode::NotEnoughReplicas,
        GroupError::Timeout(_) => ErrorCode::RequestTimedOut,
    }
}

/// Whether a client may retry a request that failed with `code` without changing it (the one
/// list is `ErrorCode::is_retriable`, in `proto`).
pub fn is_retriable(code: ErrorCode) -> bool {
    code.is_retriable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Offset;

    #[test]
    fn codes_and_retriability_match_the_documented_table() {
        let full_disk = StorageError::Io {
            path: "x".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert_eq!(storage_error_code(&full_disk), ErrorCode::StorageUnavailable);
        assert!(is_retriable(ErrorCode::StorageUnavailable));
        let out_of_range = StorageError::OffsetOutOfRange {
            requested: Offset(9),
            log_start: Offset(0),
            log_end: Offset(5),
        };
        assert_eq!(storage_error_code(&out_of_range), ErrorCode::OffsetOutOfRange);
        assert!(!is_retriable(ErrorCode::OffsetOutOfRange));
        assert!(!is_retriable(ErrorCode::InvalidRequest));
        assert!(!is_retriable(ErrorCode::RecordTooLarge));
    }
}
