//! What a replica reports of its partition ([`ReplicaStatus`]): leader, voters, in-sync
//! replicas and offsets, for metadata and operators; and the leadership part of it alone
//! ([`Leadership`]), which reads no log, for the broker's once-a-second leadership sampler.
//!
//! The ISR is the leader's view, so only a leader that may serve reports one: a leader whose
//! lease lapsed (cut off from its quorum, see `lease`) reports no ISR and no leadership — it
//! would otherwise present followers it has not heard from for seconds as in sync, and itself
//! as the partition's leader, while another replica may already lead.

use super::lease::{lease_standing, LeaseStanding};
use super::read::CommittedOffsets;
use super::PartitionReplica;
use crate::replication::isr::{in_sync_replicas, FollowerProgress, IsrBounds};
use crate::replication::types::PartitionRaft;
use crate::storage::Offset;

/// What a replica knows of its partition, for metadata and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The leader, if known (never this replica while its lease has lapsed).
    pub leader: Option<u64>,
    /// Whether this replica is that leader (and its lease has not lapsed).
    pub is_leader: bool,
    /// Voting replicas of the group.
    pub voters: Vec<u64>,
    /// In-sync replicas (computed on a leader whose lease has not lapsed; empty elsewhere).
    pub isr: Vec<u64>,
    /// Replicas holding everything the leader holds (leader's view; empty elsewhere).
    pub caught_up: Vec<u64>,
    /// The high watermark as this replica knows it.
    pub high_watermark: Offset,
    /// First offset in the local log.
    pub log_start_offset: Offset,
    /// Next offset of the local log (including uncommitted entries).
    pub log_end_offset: Offset,
    /// This replica lost entries it had acknowledged and takes no part in elections until it
    /// has them back.
    pub held_from_elections: bool,
    /// The group is quiet here: idle, its Raft timers stopped (see `replication::quiesce`).
    pub quiescent: bool,
    /// Bytes of the local log's segments (indexes aside).
    pub log_size_bytes: u64,
    /// Segments of the local log, the active one included.
    pub log_segments: u64,
    /// Idempotent producers this replica's producer table remembers.
    pub producer_ids: u64,
    /// The local log failed an fsync and refuses writes: the replica is out of service until
    /// the broker restarts (which re-reads and verifies the log).
    pub storage_failed: bool,
}

/// Who leads a replica's partition, as the replica sees it: the part of [`ReplicaStatus`] that
/// needs no log lock, cheap enough to sample every hosted replica every second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// The Raft term this replica is in.
    pub term: u64,
    /// The leader, if known (never this replica while its lease has lapsed).
    pub leader: Option<u64>,
    /// Whether this replica is that leader (and its lease has not lapsed).
    pub is_leader: bool,
    /// In-sync replicas (computed on a leader whose lease has not lapsed; empty elsewhere).
    pub isr: Vec<u64>,
}

/// The leadership part of a status, with what else it needed to compute.
struct LeaderView {
    leadership: Leadership,
    voters: Vec<u64>,
    caught_up: Vec<u64>,
    quiescent: bool,
}

impl PartitionReplica {
    /// Leader, voters, ISR and offsets of this replica.
    pub fn status(&self, bounds: IsrBounds) -> ReplicaStatus {
        let LeaderView {
            leadership,
            voters,
            caught_up,
            quiescent,
        } = self.leader_view(bounds, true);
        let offsets = self.committed_offsets().unwrap_or(CommittedOffsets {
            log_start_offset: Offset(0),
            high_watermark: self.high_watermark(),
            log_end_offset: Offset(0),
        });
        let (log_size_bytes, log_segments, storage_failed) = self
            .log
            .read()
            .map(|log| (log.size_bytes(), log.segment_count() as u64, log.is_failed()))
            .unwrap_or((0, 0, true));
        let producer_ids = self.producers.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
        ReplicaStatus {
            leader: leadership.leader,
            is_leader: leadership.is_leader,
            voters,
            isr: leadership.isr,
            caught_up,
            high_watermark: offsets.high_watermark,
            log_start_offset: offsets.log_start_offset,
            log_end_offset: offsets.log_end_offset,
            held_from_elections: self.groups.votes_held(self.group),
            quiescent,
            log_size_bytes,
            log_segments,
            producer_ids,
            storage_failed,
        }
    }

    /// The replicas holding everything this leader holds (itself included), as its leader view
    /// computes them; `None` when this replica is not a leader fit to serve. Reads no log: the
    /// controlled shutdown asks it of every group it leads.
    pub fn caught_up_if_leader(&self, bounds: IsrBounds) -> Option<Vec<u64>> {
        let view = self.leader_view(bounds, true);
        view.leadership.is_leader.then_some(view.caught_up)
    }

    /// Term, leader and ISR of this replica, without the log's offsets and sizes.
    pub fn leadership(&self, bounds: IsrBounds) -> Leadership {
        self.leader_view(bounds, false).leadership
    }

    /// The leadership view; the caught-up set (a second ISR computation) only `with_caught_up`.
    fn leader_view(&self, bounds: IsrBounds, with_caught_up: bool) -> LeaderView {
        // (Quiescence's lock first, and not while the metrics are borrowed; the metrics are
        // borrowed, not cloned: this runs for every replica every second.)
        let quiescent = self.groups.is_quiet(self.group);
        let restoring = self.raft.is_restoring();
        self.raft
            .with_metrics(|metrics| self.leader_view_of(metrics, bounds, with_caught_up, quiescent, restoring))
    }

    /// [`Self::leader_view`] from `metrics`.
    fn leader_view_of(
        &self,
        metrics: &openraft::RaftMetrics<PartitionRaft>,
        bounds: IsrBounds,
        with_caught_up: bool,
        quiescent: bool,
        restoring: bool,
    ) -> LeaderView {
        let leads = metrics.state == openraft::ServerState::Leader && metrics.vote.committed;
        let lapsed = leads && lease_standing(self.lease_facts(metrics, quiescent, restoring)) == LeaseStanding::Lapsed;
        let is_leader = leads && !lapsed;
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        let (isr, caught_up) = if is_leader {
            let followers = self.follower_progress(metrics, &voters, quiescent);
            let caught_up_bounds = IsrBounds {
                max_lag_entries: 0,
                max_lag_time: bounds.max_lag_time,
            };
            (
                in_sync_replicas(metrics.id, metrics.last_log_index, &followers, bounds),
                if with_caught_up {
                    in_sync_replicas(metrics.id, metrics.last_log_index, &followers, caught_up_bounds)
                } else {
                    Vec::new()
                },
            )
        } else {
            (Vec::new(), Vec::new())
        };
        LeaderView {
            leadership: Leadership {
                term: metrics.current_term,
                // A lapsed leader does not know who leads now.
                leader: if lapsed { None } else { metrics.current_leader },
                is_leader,
                isr,
            },
            voters,
            caught_up,
            quiescent,
        }
    }

    /// The leader's view of each voter, for the ISR.
    fn follower_progress(
        &self,
        metrics: &openraft::RaftMetrics<PartitionRaft>,
        voters: &[u64],
        quiescent: bool,
    ) -> Vec<FollowerProgress> {
        use openraft::Instant as _;
        voters
            .iter()
            .map(|node| FollowerProgress {
                node: *node,
                matched_index: metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(node).cloned().flatten())
                    .map(|log_id| log_id.index),
                // A quiet group exchanges nothing: its followers all held the last entry
                // when it quiesced, and are as responsive as their brokers' pings.
                since_last_ack: if quiescent {
                    self.groups.liveness().since_answered(*node)
                } else {
                    metrics
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(node).cloned().flatten())
                        .map(|at| at.elapsed())
                },
            })
            .collect()
    }
}
