//! Why a group request was refused. Each variant maps to one wire code in
//! `api::error_codes::group_error_code`; the messages name what to do about it.

use crate::partition::TopicPartition;

/// A refused group request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The request is malformed (empty member id, bad epoch, ...).
    #[error("invalid group request: {0}")]
    InvalidRequest(String),
    /// The group id is empty or too long.
    #[error("invalid group id {0:?}: it must be 1 to 255 bytes")]
    InvalidGroupId(String),
    /// No such group.
    #[error("group {0:?} does not exist")]
    GroupNotFound(String),
    /// This broker does not lead the group's offsets partition.
    #[error("this broker does not coordinate group {group:?} (offsets partition {partition}); the coordinator is {leader:?}")]
    NotCoordinator {
        /// The group.
        group: String,
        /// Its partition of `__consumer_offsets`.
        partition: u32,
        /// The coordinator, if known here.
        leader: Option<u64>,
    },
    /// No coordinator can answer yet (the offsets topic is being created, or is loading).
    #[error("no coordinator is available yet: {0}")]
    CoordinatorNotAvailable(String),
    /// The member is not in the group.
    #[error("member {member:?} is not in group {group:?} (it left or its session expired): rejoin with epoch 0")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// The member's epoch is not the coordinator's: it was fenced.
    #[error("member {member:?} sent epoch {sent}, the group holds {current}: fenced, rejoin with epoch 0")]
    FencedEpoch {
        /// The member.
        member: String,
        /// The epoch the member sent.
        sent: i32,
        /// The epoch the coordinator holds for it.
        current: i32,
    },
    /// A commit with an older epoch than the member's current one.
    #[error("member {member:?} committed with epoch {sent}, its current epoch is {current}: heartbeat first")]
    StaleEpoch {
        /// The member.
        member: String,
        /// The epoch the commit carried.
        sent: i32,
        /// The member's current epoch.
        current: i32,
    },
    /// A member committed a partition it does not hold.
    #[error("member {member:?} does not own {}/{}", partition.topic, partition.partition)]
    NotAssigned {
        /// The member.
        member: String,
        /// The partition.
        partition: TopicPartition,
    },
    /// The group has members: the operation needs an empty group.
    #[error("group {group:?} has {members} member(s): {operation} needs an empty group (stop its consumers first)")]
    NonEmpty {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
        /// What was refused.
        operation: &'static str,
    },
    /// A subscribed or committed topic or partition does not exist.
    #[error("unknown topic or partition {0}")]
    UnknownTopic(String),
    /// No assignor by that name.
    #[error("unknown assignor {0:?}: use \"uniform\" or \"range\"")]
    UnsupportedAssignor(String),
    /// Writing to the offsets partition failed.
    #[error("writing to the offsets partition failed: {0}")]
    Replication(String),
    /// The write was not acknowledged in time; it may still commit.
    #[error("the offsets partition did not acknowledge in time (the change may still commit): {0}")]
    Timeout(String),
}
