//! Changing a group's voters: the leader's steps toward a wanted voter set, one at a time
//! — add the new members as learners, wait until they have caught up, hand the leadership
//! away if this replica is leaving, switch the voters (openraft's joint consensus: a joint
//! entry, then the uniform one), then remove the members left over (a partition's dropped
//! replicas) or keep them as learners (the controller group, which every broker follows).
//!
//! Each call takes at most one step and says which, so its caller (the partition's
//! reassignment driver) can be restarted at any point — by a crash, a leader change, a
//! controller failover — and simply call again on whichever replica leads then: every step
//! starts from the membership the Raft log holds, never from memory.

use super::{PartitionReplica, ReplicationError};
use crate::replication::types::PartitionRaft;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// What one call of [`PartitionReplica::step_toward_voters`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipStep {
    /// The voters are the wanted set and nothing else is a member: the move is done.
    Done,
    /// These wanted replicas joined as learners; they start catching up.
    AddedLearners(Vec<u64>),
    /// Learners still catching up: each with the entries it lacks (`None`: nothing heard
    /// yet), and the leader's last log index.
    CatchingUp {
        /// The learners behind, with their lag.
        lagging: Vec<(u64, Option<u64>)>,
        /// The leader's last log index as they were measured.
        leader_last: u64,
    },
    /// This replica leaves the voters: it handed the leadership to this wanted voter, which
    /// takes the next steps.
    HandedLeadership(u64),
    /// The voters are now the wanted set (joint consensus committed and flattened).
    SwitchedVoters,
    /// Members outside the wanted set (learners of a cancelled move) were removed.
    RemovedMembers(Vec<u64>),
}

/// What a step toward a voter set does with members outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherMembers {
    /// They stay, as learners (the controller group: every broker follows the metadata).
    Keep,
    /// They are removed (a partition's dropped replicas).
    Remove,
}

/// The membership as the leader holds it.
struct Members {
    voters: BTreeSet<u64>,
    nodes: BTreeSet<u64>,
    /// Still in joint consensus (a change that lost its leader half-way).
    joint: bool,
}

impl PartitionReplica {
    /// Takes the next step toward the voters `wanted` (node id → Raft address): see the
    /// module. A learner counts as caught up once it lacks at most `max_lag` entries (the
    /// caller decides how many: none for a partition at rest). With `others` set to
    /// [`OtherMembers::Keep`] members outside `wanted` stay (as learners: the controller group,
    /// where every broker is one); with [`OtherMembers::Remove`] they go (a partition's dropped
    /// replicas). Only the leader can; others get `NotLeader`.
    pub async fn step_toward_voters(
        &self,
        wanted: &BTreeMap<u64, String>,
        max_lag: u64,
        timeout: Duration,
        others: OtherMembers,
    ) -> Result<MembershipStep, ReplicationError> {
        if wanted.is_empty() {
            return Err(self.raft_error("a partition needs at least one voter".into()));
        }
        // Counts as activity, and wakes a quiet group: learners hear nothing from a quiet one.
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + timeout, false).await?;
        let members = self.current_members();
        let wanted_ids: BTreeSet<u64> = wanted.keys().copied().collect();

        let missing: BTreeMap<u64, BasicNode> = wanted
            .iter()
            .filter(|(id, _)| !members.nodes.contains(id))
            .map(|(id, address)| (*id, BasicNode { addr: address.clone() }))
            .collect();
        if !missing.is_empty() {
            let added: Vec<u64> = missing.keys().copied().collect();
            self.change_members(ChangeMembers::AddNodes(missing), timeout, false)
                .await?;
            return Ok(MembershipStep::AddedLearners(added));
        }

        let (lagging, leader_last) = self.lagging_learners(&wanted_ids, &members.voters, max_lag);
        if !lagging.is_empty() {
            return Ok(MembershipStep::CatchingUp { lagging, leader_last });
        }

        if members.voters != wanted_ids || members.joint {
            let me = self.raft.with_metrics(|metrics| metrics.id);
            if !wanted_ids.contains(&me) {
                // Leaving: hand over first, so the partition is never without a leader for an
                // election timeout. With no wanted replica a voter yet (every replica replaced)
                // there is nobody to hand to: the switch below makes this leader step down.
                if let Some(next) = wanted.keys().find(|id| members.voters.contains(id)) {
                    self.transfer_leadership(*next, timeout).await?;
                    return Ok(MembershipStep::HandedLeadership(*next));
                }
            }
            // With `Keep`, the voters the switch drops stay as learners.
            let retain = others == OtherMembers::Keep;
            self.change_members(ChangeMembers::ReplaceAllVoters(wanted_ids), timeout, retain)
                .await?;
            return Ok(MembershipStep::SwitchedVoters);
        }

        let extra: BTreeSet<u64> = members.nodes.difference(&wanted_ids).copied().collect();
        if !extra.is_empty() && others == OtherMembers::Remove {
            let removed = extra.iter().copied().collect();
            self.change_members(ChangeMembers::RemoveNodes(extra), timeout, false)
                .await?;
            return Ok(MembershipStep::RemovedMembers(removed));
        }
        Ok(MembershipStep::Done)
    }

    /// The voters of the membership in force (the last one in the log, committed or not).
    pub fn voters(&self) -> Vec<u64> {
        self.current_members().voters.into_iter().collect()
    }

    fn current_members(&self) -> Members {
        self.raft.with_metrics(|metrics| {
            let membership = metrics.membership_config.membership();
            Members {
                voters: membership.voter_ids().collect(),
                nodes: membership.nodes().map(|(id, _)| *id).collect(),
                joint: membership.get_joint_config().len() > 1,
            }
        })
    }

    /// Wanted replicas that are not voters yet and lack more than `max_lag` of the leader's
    /// entries, with what they lack.
    fn lagging_learners(
        &self,
        wanted: &BTreeSet<u64>,
        voters: &BTreeSet<u64>,
        max_lag: u64,
    ) -> (Vec<(u64, Option<u64>)>, u64) {
        self.raft
            .with_metrics(|metrics| Self::lagging_in(metrics, wanted, voters, max_lag))
    }

    /// [`Self::lagging_learners`] from `metrics`.
    fn lagging_in(
        metrics: &openraft::RaftMetrics<PartitionRaft>,
        wanted: &BTreeSet<u64>,
        voters: &BTreeSet<u64>,
        max_lag: u64,
    ) -> (Vec<(u64, Option<u64>)>, u64) {
        let last = metrics.last_log_index.unwrap_or(0);
        let lagging = wanted
            .iter()
            .filter(|id| !voters.contains(id))
            .filter_map(|id| {
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index);
                let lag = matched.map(|m| last.saturating_sub(m));
                match lag {
                    Some(lag) if lag <= max_lag => None,
                    _ => Some((*id, lag)),
                }
            })
            .collect();
        (lagging, last)
    }

    /// Proposes a membership change and waits (up to `timeout`) until it is committed.
    async fn change_members(
        &self,
        change: ChangeMembers<u64, BasicNode>,
        timeout: Duration,
        retain: bool,
    ) -> Result<(), ReplicationError> {
        let raft = self.live().await?;
        let proposed = tokio::time::timeout(timeout, raft.change_membership(change, retain)).await;
        match proposed {
            Err(_) => Err(ReplicationError::Timeout {
                group: self.group,
                what: "a membership change to commit".into(),
            }),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(ReplicationError::NotLeader {
                    group: self.group,
                    leader: forward.leader_id,
                })
            }
            Ok(Err(other)) => Err(self.raft_error(other.to_string())),
        }
    }

    fn raft_error(&self, message: String) -> ReplicationError {
        ReplicationError::Raft {
            group: self.group,
            message,
        }
    }
}
