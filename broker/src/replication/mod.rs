//! # Replication: everything openraft
//!
//! **One job:** run each partition as its own Raft group whose log is the partition's
//! [`SegmentLog`](crate::storage::SegmentLog).
//!
//! **Owns:** the openraft type configuration (declared once, in [`types`]), the log-store
//! adapter ([`log_store`]) and the partition state machine ([`state_machine`]).
//!
//! **Map** (every file):
//! - [`types`]: the openraft type configuration and id conversions to the storage layer's.
//! - [`replica`]: [`PartitionReplica`], the API the layers above use, one file per concern:
//!   `replica/error.rs` ([`ReplicationError`]), `replica/timers.rs` ([`RaftTimers`]),
//!   `replica/start.rs` (start-up, membership, vote holding), `replica/write.rs`
//!   ([`PartitionReplica::append`], [`Acks`]), `replica/lease.rs` (the leader lease),
//!   `replica/read.rs` (committed reads), `replica/status.rs` ([`ReplicaStatus`], the ISR).
//! - [`raft_node`]: the running Raft node type and the nodes hosted on this broker.
//! - [`raft_service`]: [`RaftGroups`], the server side of the `raft.v1` transport.
//! - [`network`], `coalescer`, `wire`: the client side of the transport (one channel per peer,
//!   heartbeats coalesced per peer, the append wire form).
//! - [`log_store`], [`state_machine`]: openraft's storage traits over the segment log;
//!   [`snapshot`]: what a snapshot holds, where the newest is kept (persisted in the partition
//!   directory), [`Compaction`].
//! - [`producer_state`], `idempotence`: the idempotent-producer table and admission (pure).
//! - [`isr`]: in-sync replicas (pure). [`catch_up`]: vote holding after lost storage (pure).
//! - [`metrics`]: the commit-latency histogram, recorded by the write path.
//! - [`quiesce`]: idle groups stop their timers; `quiesce/rules.rs` holds its rules (pure),
//!   `groups.rs` the quiet state, `liveness.rs` the failure detector, `leader.rs` the scan.
//! - `suite_test.rs`: openraft's storage test suite over the log store.
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
pub mod metrics;
pub mod network;
pub mod producer_state;
pub mod quiesce;
pub mod raft_node;
pub mod raft_service;
pub mod replica;
pub mod snapshot;
pub mod state_machine;
pub mod throttle;
pub mod types;
mod wire;

/// How many HTTP/2 streams a connection between brokers may see reset before the other side
/// accepted them, or reset by errors, before it is torn down (h2's defaults, 20 and 1,024, guard
/// a public endpoint against rapid-reset floods). Thousands of Raft groups share one connection
/// per peer, and under load their timed-out vote and append calls are cancelled — reset —
/// by the hundred: at the defaults the connection went down with every group's replication
/// stream on it, which made more calls time out (the restart storm of issue 16). Still bounded:
/// each pending reset is a few bytes of bookkeeping.
pub const MAX_RESET_STREAMS: usize = 65_536;

pub use isr::IsrBounds;
pub use log_store::{PartitionLogReader, PartitionLogStore};
pub use network::PeerChannels;
pub use raft_service::RaftGroups;
pub use replica::{
    Acks, AppendBatch, AppendOutcome, CommittedOffsets, CommittedRead, Leadership, MembershipStep, OtherMembers,
    PartitionReplica, RaftTimers, ReplicaHost, ReplicaStatus, ReplicationError,
};
pub use snapshot::Compaction;
pub use state_machine::{AppliedState, BatchObserver, PartitionStateMachine};
pub use throttle::CatchUpThrottle;
pub use types::{LogStartMark, PartitionPayload, PartitionRaft, RecordBatchPayload};

#[cfg(test)]
mod suite_test;
