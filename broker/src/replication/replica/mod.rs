//! A partition replica: the segment log, the state machine and the openraft node of one
//! partition on this broker, with the operations the layers above need — append (one entry
//! point, per `acks`), read up to the high watermark, leadership and status.
//!
//! [`PartitionReplica`] is one type; its `impl` is split by concern, each file adding the
//! methods of one, all over the private fields declared here:
//!
//! - [`error`]: [`ReplicationError`], the layer's one error enum.
//! - [`timers`]: [`RaftTimers`] and the openraft configuration they make.
//! - [`start`]: start-up (opening the log, restoring an observer), membership, shutdown, and
//!   holding votes after storage lost acknowledged entries.
//! - [`write`]: [`PartitionReplica::append`] with [`Acks`], the idempotent admission loop.
//! - [`lease`]: the leader lease ([`lease::lease_standing`], pure) and waiting for a leader fit
//!   to serve; leadership transfer.
//! - [`membership`]: [`PartitionReplica::step_toward_voters`], the leader's steps of a replica
//!   move (learners, catch-up, joint consensus, clean-up).
//! - [`read`]: high watermark, committed offsets and batches.
//! - [`status`]: [`ReplicaStatus`] and the ISR, reported only by a leader whose lease holds;
//!   [`Leadership`], the part of it that reads no log.
//! - [`retention`]: [`PartitionReplica::apply_retention`], the leader's replicated log start and
//!   every replica's purge through it.
//! - [`compaction`]: a compacting group's snapshots, taken when its log outgrows its state.
//!
//! Ownership and concurrency: a replica is owned by its partition (or the controller), shared
//! behind an `Arc`; its methods take `&self` and may run concurrently. No lock is held across an
//! `.await` except the idempotence gate (`in_flight`), a tokio mutex that orders admissions.

mod compaction;
pub mod error;
pub mod lease;
pub mod membership;
pub mod read;
pub mod retention;
pub mod start;
pub mod status;
pub mod timers;
pub mod write;

pub use error::ReplicationError;
pub use membership::{MembershipStep, OtherMembers};
pub use read::{CommittedOffsets, CommittedRead};
pub use retention::RetentionPass;
pub use status::{Leadership, ReplicaStatus};
pub use timers::RaftTimers;
pub use write::{Acks, AppendBatch, AppendOutcome};

use super::idempotence::InFlightBatches;
use super::log_store::AppendNotifier;
use super::network::PeerChannels;
use super::raft_node::{LiveRaft, PartitionRaftNode};
use super::raft_service::RaftGroups;
use super::state_machine::SharedProducerTable;
use super::types::LogStartMark;
use crate::storage::{LogHost, SegmentLog};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What every replica on a broker shares: its node id, the data directory's flush worker and
/// open-file budget, the connections to peers, the Raft group router and the Raft timers.
#[derive(Clone)]
pub struct ReplicaHost {
    /// This broker's node id.
    pub node_id: u64,
    /// Group-commit worker and open-file budget of the data directory.
    pub logs: LogHost,
    /// One connection per peer.
    pub peers: PeerChannels,
    /// Routes incoming Raft messages to local groups.
    pub groups: RaftGroups,
    /// openraft configuration (timers) for the groups.
    pub raft_config: Arc<openraft::Config>,
}

/// One partition replica on this broker.
pub struct PartitionReplica {
    group: u64,
    raft: PartitionRaftNode,
    log: Arc<RwLock<SegmentLog>>,
    applied_next_offset: watch::Receiver<u64>,
    appended: AppendNotifier,
    groups: RaftGroups,
    producers: SharedProducerTable,
    in_flight: Arc<tokio::sync::Mutex<InFlightBatches>>,
    /// Bumped whenever an idempotent batch is proposed, to wake batches waiting for a gap.
    proposals: watch::Sender<u64>,
    /// openraft's leader lease (its `election_timeout_max`).
    lease: Duration,
    /// When a request last woke this group, or renewed a quiet leader's lease: until a lease
    /// has passed, a leader without a fresh lease is renewing it, not cut off.
    renewing_since: std::sync::Mutex<Option<Instant>>,
    /// Whether topic retention applies (groups with an observer have none).
    retention: bool,
    /// The newest log start retention replicated, as this replica's state machine applied it.
    log_start_marks: watch::Receiver<Option<LogStartMark>>,
    /// Ends an append that waits for disk space, at shutdown.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl PartitionReplica {
    /// The group's running openraft instance — built again first if its node sleeps (a quiet
    /// follower's does: `raft_node`).
    async fn live(&self) -> Result<LiveRaft, ReplicationError> {
        self.raft.live().await.map_err(|stopped| ReplicationError::Raft {
            group: self.group,
            message: stopped.to_string(),
        })
    }
}
