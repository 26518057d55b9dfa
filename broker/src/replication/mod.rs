//! # Replication: everything openraft
//!
//! **One job:** run each partition as its own Raft group whose log is the partition's
//! [`SegmentLog`](crate::storage::SegmentLog).
//!
//! **Owns:** the openraft type configuration (declared once, in [`types`]), the log-store
//! adapter ([`log_store`]) and the partition state machine ([`state_machine`]).
//!
//! **Invariants:** openraft types never leave this module; entries are stored byte-for-byte
//! as openraft hands them over, and `IOFlushed` fires only once the storage layer reports the
//! append durable under the topic's fsync policy.
//!
//! **Must not depend on:** the API layer. (It does use tonic: the Raft transport lives here.)

pub mod catch_up;
mod coalescer;
mod idempotence;
pub mod isr;
pub mod log_store;
pub mod network;
pub mod producer_state;
pub mod quiesce;
pub mod raft_node;
pub mod raft_service;
pub mod replica;
pub mod state_machine;
pub mod types;
mod wire;

pub use isr::IsrBounds;
pub use log_store::{PartitionLogReader, PartitionLogStore};
pub use network::PeerChannels;
pub use raft_service::RaftGroups;
pub use replica::{
    CommittedOffsets, CommittedRead, IdempotentAppend, PartitionReplica, RaftTimers, ReplicaHost, ReplicaStatus,
    ReplicationError,
};
pub use state_machine::{AppliedState, BatchObserver, PartitionStateMachine};
pub use types::{PartitionRaft, RecordBatchPayload};

#[cfg(test)]
mod suite_test;
