//! The leader lease: whether this replica may serve as its partition's leader now.
//!
//! openraft keeps, on a leader, when a quorum last acknowledged it (`last_quorum_acked`); within
//! `election_timeout_max` of that no other leader can have been elected, so the leader may answer
//! alone. A leader cut off from its quorum keeps believing it leads; once its lease has lapsed
//! it stops serving (writes, reads, and its claim in [`status`](PartitionReplica::status)), so a
//! deposed leader's answers go stale for at most a lease. A lease that is missing for a reason
//! that passes — just elected, just woken, quiet — is renewed, not refused: [`lease_standing`]
//! is that rule, as a pure function.

use super::{PartitionReplica, ReplicationError};
use crate::replication::quiesce::heartbeat_now;
use crate::replication::types::PartitionRaft;
use std::time::Duration;
use tokio::time::Instant;

/// How long a request waits for a quiet group's leader to renew its lease.
pub(super) const LEADER_WAKE_WAIT: Duration = Duration::from_secs(2);

/// How a leader stands with its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseStanding {
    /// A quorum acknowledged it within the lease: it may answer alone.
    Fresh,
    /// No fresh lease, for a reason that passes: its vote is not committed yet or no entry of its
    /// own term is applied (just elected), the group was just woken, or it is quiet (nothing
    /// renews a quiet leader's lease until a request has it heartbeat).
    Renewing,
    /// It has been awake and settled, and lost the lease: cut off from its quorum. It stops
    /// serving and claims no leadership.
    Lapsed,
}

/// What [`lease_standing`] judges a leader by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaseFacts {
    /// A quorum acknowledged it within the lease (and its vote is committed).
    pub fresh: bool,
    /// Its vote is committed.
    pub vote_committed: bool,
    /// An entry of its own term is applied.
    pub own_term_applied: bool,
    /// The group is quiet here.
    pub quiet: bool,
    /// A request woke the group, or renewed a quiet leader's lease, less than a lease ago.
    pub renewing: bool,
}

/// Where a leader stands with its lease (see [`LeaseStanding`]).
pub(super) fn lease_standing(facts: LeaseFacts) -> LeaseStanding {
    if facts.fresh {
        LeaseStanding::Fresh
    } else if facts.quiet || facts.renewing || !facts.vote_committed || !facts.own_term_applied {
        LeaseStanding::Renewing
    } else {
        LeaseStanding::Lapsed
    }
}

/// Whether `metrics` show a leader under a committed vote that a quorum acknowledged within
/// `lease` — or that is a quorum by itself.
fn leads_within_lease(metrics: &openraft::RaftMetrics<PartitionRaft>, lease: Duration) -> bool {
    use openraft::Instant as _;
    metrics.state == openraft::ServerState::Leader
        && metrics.vote.committed
        && (is_only_voter(metrics)
            || metrics
                .last_quorum_acked
                .as_ref()
                .is_some_and(|acked| acked.elapsed() < lease))
}

/// Whether this replica is its group's only voter. Nobody acknowledges such a leader, so
/// openraft never advances its `last_quorum_acked` past the election (its own lease check
/// treats it as always valid); judged by that timestamp, an RF=1 partition refused every
/// request one lease after its election.
fn is_only_voter(metrics: &openraft::RaftMetrics<PartitionRaft>) -> bool {
    let mut voters = metrics.membership_config.membership().voter_ids();
    voters.next() == Some(metrics.id) && voters.next().is_none()
}

/// Whether an entry of the current leader's term is applied.
fn own_term_applied(metrics: &openraft::RaftMetrics<PartitionRaft>) -> bool {
    metrics
        .last_applied
        .as_ref()
        .is_some_and(|applied| applied.leader_id == metrics.vote.leader_id)
}

impl PartitionReplica {
    /// The facts [`lease_standing`] judges, from `metrics` and this replica's quiet state.
    /// `restoring`: the node sleeps or was just built again (`PartitionRaftNode::is_restoring`,
    /// read before its metrics): a leader woken by something else than a request — a peer's
    /// return, say — is renewing its lease too, not cut off.
    pub(super) fn lease_facts(
        &self,
        metrics: &openraft::RaftMetrics<PartitionRaft>,
        quiet: bool,
        restoring: bool,
    ) -> LeaseFacts {
        let renewing = restoring
            || self
                .renewing_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < self.lease);
        LeaseFacts {
            fresh: leads_within_lease(metrics, self.lease),
            vote_committed: metrics.vote.committed,
            own_term_applied: own_term_applied(metrics),
            quiet,
            renewing,
        }
    }

    /// Waits until this replica is a leader fit to serve a request, and returns its term: it
    /// leads under a committed vote, a quorum acknowledged it within the lease, and with
    /// `own_term` an entry of its own term is applied — only then do the high watermark and the
    /// producer table reflect everything earlier leaders committed (a leader elected a moment
    /// ago may still hold an old commit index; answering a fetch from it would move the high
    /// watermark backwards).
    ///
    /// A quiet leader whose lease lapsed heartbeats at once and the request waits for the
    /// quorum's answers (as does a request that just woke the group). A leader that has been
    /// awake and lost its lease — cut off from its quorum — is refused at once.
    pub(super) async fn ready_leader(&self, deadline: Instant, own_term: bool) -> Result<u64, ReplicationError> {
        let lease = self.lease;
        let ready = |m: &openraft::RaftMetrics<PartitionRaft>| {
            leads_within_lease(m, lease) && (!own_term || own_term_applied(m))
        };
        let answer_now = self.raft.with_metrics(|metrics| {
            if ready(metrics) {
                Some(Ok(metrics.vote.leader_id.term))
            } else if metrics.state != openraft::ServerState::Leader {
                Some(Err(ReplicationError::NotLeader {
                    group: self.group,
                    leader: metrics.current_leader,
                }))
            } else {
                None
            }
        });
        if let Some(answer) = answer_now {
            return answer;
        }
        if self.groups.is_quiet(self.group) {
            // Quiet, so nothing renews the lease on its own: one heartbeat round does.
            self.renewing_since_now();
            heartbeat_now(&self.raft);
        } else {
            let restoring = self.raft.is_restoring();
            let standing = self
                .raft
                .with_metrics(|metrics| lease_standing(self.lease_facts(metrics, false, restoring)));
            if standing == LeaseStanding::Lapsed {
                // Only the lease is missing, and not because the group was just woken.
                return Err(ReplicationError::NotLeader {
                    group: self.group,
                    leader: None,
                });
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self
            .live()
            .await?
            .wait(Some(remaining))
            .metrics(ready, "a leader with a fresh lease")
            .await
        {
            Ok(metrics) => Ok(metrics.vote.leader_id.term),
            Err(_) => Err(ReplicationError::NotLeader {
                group: self.group,
                leader: self.leader(),
            }),
        }
    }

    pub(super) fn renewing_since_now(&self) {
        *self.renewing_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Waits until this replica can answer a read (fetch, ListOffsets) as the leader: see
    /// `ready_leader`. A read does not wake a quiet group: if the lease has lapsed, the
    /// leader renews it with one heartbeat round and the group stays quiet — consumers polling
    /// idle partitions do not keep them ticking.
    pub async fn ready_to_read(&self, deadline: Instant) -> Result<u64, ReplicationError> {
        self.ready_leader(deadline, true).await
    }

    /// Whether this replica is a leader ready for writes: its vote is committed and a quorum
    /// acknowledged it within the lease (a new leader refuses writes with `NotLeader` until
    /// then; a cut-off one from when its lease lapses).
    pub fn is_leader(&self) -> bool {
        // Read the fields in place, no metrics clone.
        self.raft
            .with_metrics(|metrics| leads_within_lease(metrics, self.lease))
    }

    /// The Raft term this replica is in: a leader that wrote something in this term has applied
    /// everything its predecessors committed once that write applies.
    pub fn current_term(&self) -> u64 {
        self.raft.with_metrics(|metrics| metrics.current_term)
    }

    /// The current leader as this replica knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.with_metrics(|metrics| metrics.current_leader)
    }

    /// Waits until some replica is leader as seen from here, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, ReplicationError> {
        let established = |m: &openraft::RaftMetrics<PartitionRaft>| m.current_leader.is_some() && m.vote.committed;
        // (A sleeping node knows its leader: no need to wake it.)
        if let Some(leader) = self
            .raft
            .with_metrics(|m| established(m).then_some(m.current_leader).flatten())
        {
            return Ok(leader);
        }
        let metrics = self
            .live()
            .await?
            .wait(Some(timeout))
            .metrics(established, "an established leader")
            .await
            .map_err(|_| ReplicationError::Timeout {
                group: self.group,
                what: "a leader".into(),
            })?;
        Ok(metrics.current_leader.expect("checked by the wait condition"))
    }

    /// Hands leadership to the voter `to` (operators moving leaders; the nemesis). openraft has
    /// the target campaign once its log holds everything this leader's does, and the other
    /// voters set their lease aside for it. Returns once this replica sees `to` leading.
    pub async fn transfer_leadership(&self, to: u64, timeout: Duration) -> Result<(), ReplicationError> {
        if self.leader() == Some(to) {
            return Ok(());
        }
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + timeout, false).await?;
        let raft = self.live().await?;
        raft.trigger()
            .transfer_leader(to)
            .await
            .map_err(|fatal| ReplicationError::Raft {
                group: self.group,
                message: fatal.to_string(),
            })?;
        raft.wait(Some(timeout))
            .metrics(|m| m.current_leader == Some(to), "leadership transferred")
            .await
            .map(|_| ())
            .map_err(|_| ReplicationError::Timeout {
                group: self.group,
                what: format!("broker {to} to take over the leadership"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLED: LeaseFacts = LeaseFacts {
        fresh: false,
        vote_committed: true,
        own_term_applied: true,
        quiet: false,
        renewing: false,
    };

    #[test]
    fn a_settled_awake_leader_without_a_fresh_lease_has_lapsed() {
        assert_eq!(lease_standing(SETTLED), LeaseStanding::Lapsed);
        assert_eq!(
            lease_standing(LeaseFacts { fresh: true, ..SETTLED }),
            LeaseStanding::Fresh
        );
    }

    #[test]
    fn a_lease_missing_for_a_passing_reason_is_being_renewed() {
        for (facts, why) in [
            (
                LeaseFacts { quiet: true, ..SETTLED },
                "quiet: a heartbeat round renews it",
            ),
            (
                LeaseFacts {
                    renewing: true,
                    ..SETTLED
                },
                "just woken",
            ),
            (
                LeaseFacts {
                    vote_committed: false,
                    ..SETTLED
                },
                "just elected",
            ),
            (
                LeaseFacts {
                    own_term_applied: false,
                    ..SETTLED
                },
                "no entry of its term yet",
            ),
        ] {
            assert_eq!(lease_standing(facts), LeaseStanding::Renewing, "{why}");
        }
    }
}
