//! This broker's quiescence state ([`Quiescence`]): which partition groups are quiet here, the
//! peers' liveness, and every way a group wakes — a write, an append, a campaign, a peer's
//! restart or death. The Raft router (`raft_service`) and the replicas call into it; the rules
//! it applies are the pure functions of [`rules`](super::rules).
//!
//! One lock over the quiet state, so a write and a quiesce decision on a group are ordered.

use super::liveness::{PeerEvent, PeerLiveness, ALIVE_WINDOW};
use super::rules::{
    answer_candidate, follower_agrees, successor, Candidacy, CandidateAnswer, FollowerView, QuiesceProposal,
};
use super::{heartbeat_now, new_incarnation, Quiet};
use crate::replication::raft_node::{HostedGroups, PartitionRaftNode};
use crate::replication::types::{LogId, PartitionRaft, Vote};
use openraft::async_runtime::watch::WatchReceiver;
use proto::raft_v1::QuiesceRequest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// This broker's quiescence state. Cheap to clone; clones share. Created with the broker's
/// [`HostedGroups`] (to reach the Raft nodes it stops and wakes) and owned by its `RaftGroups`.
#[derive(Clone)]
pub struct Quiescence {
    /// The Raft nodes hosted here.
    hosted: HostedGroups,
    /// Which groups are quiet, and per group the write requests seen and in flight. One lock:
    /// a write and a quiesce decision on a group are ordered by it.
    quiet: Arc<Mutex<QuietGroups>>,
    /// When each peer broker last pinged this one and answered its pings.
    liveness: PeerLiveness,
    /// This process's incarnation, sent in pings.
    incarnation: u64,
    /// Set once this broker runs the failure detector (to how long a follower woken by a dead
    /// leader waits before its election timer runs); until then it never agrees to quiesce, as
    /// nothing would wake its groups if their leader died.
    resume_delay: Arc<OnceLock<Duration>>,
}

/// Which groups are quiet here, and per group the writes seen and in flight.
#[derive(Default)]
struct QuietGroups {
    quiet: HashMap<u64, Quiet>,
    /// Write requests seen per group: a change means the group was not idle.
    activity: HashMap<u64, u64>,
    /// Write requests under way per group: a leader never quiesces under one.
    writes_in_flight: HashMap<u64, u64>,
}

/// Restarts a woken group's timers when dropped (see [`Quiescence::append_arrives`]).
pub(crate) struct ResumeTimers {
    groups: Quiescence,
    group: u64,
    raft: PartitionRaftNode,
}

impl Drop for ResumeTimers {
    fn drop(&mut self) {
        self.groups.resume_timers(self.group, &self.raft);
    }
}

/// How a woken group's timers restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// At once: the leader (which heartbeats at once too), or a follower that just heard from
    /// a leader.
    Now,
    /// At once, and campaign: the voter after a dead leader.
    Campaign,
    /// After a while: a follower whose last contact with a leader is from before the quiet
    /// spell would campaign at its first tick and split the vote with the one that should.
    Later,
}

/// A write on its way through a group: while one is, the group's leader does not quiesce.
pub(crate) struct WriteInFlight {
    groups: Quiescence,
    group: u64,
}

impl Drop for WriteInFlight {
    fn drop(&mut self) {
        let mut quiet = self.groups.quiet.lock().expect("quiet groups");
        if let Some(count) = quiet.writes_in_flight.get_mut(&self.group) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                quiet.writes_in_flight.remove(&self.group);
            }
        }
    }
}

impl Quiescence {
    /// Quiescence state for the groups in `hosted`; no group quiet, the failure detector off.
    pub(crate) fn new(hosted: HostedGroups) -> Self {
        Quiescence {
            hosted,
            quiet: Arc::default(),
            liveness: PeerLiveness::default(),
            incarnation: new_incarnation(),
            resume_delay: Arc::default(),
        }
    }

    /// The Raft nodes hosted here.
    pub(crate) fn hosted(&self) -> &HostedGroups {
        &self.hosted
    }

    /// This broker runs the failure detector from now on and may agree to quiesce; a follower
    /// woken by a dead leader's silence restarts its election timer after `resume_delay`
    /// (unless it campaigns first).
    pub(crate) fn enable_quiescence(&self, resume_delay: Duration) {
        let _ = self.resume_delay.set(resume_delay);
    }

    /// When each peer broker last pinged this one and answered its pings.
    pub fn liveness(&self) -> &PeerLiveness {
        &self.liveness
    }

    /// This process's incarnation.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether `group` is quiet here (its Raft timers stopped).
    pub fn is_quiet(&self, group: u64) -> bool {
        self.quiet.lock().expect("quiet groups").quiet.contains_key(&group)
    }

    /// How many write requests `group` has seen (a change means it was not idle).
    pub(crate) fn activity(&self, group: u64) -> u64 {
        let quiet = self.quiet.lock().expect("quiet groups");
        quiet.activity.get(&group).copied().unwrap_or(0)
    }

    /// Drops what is known of `group` (it is no longer hosted here).
    pub(crate) fn forget_quiet_state(&self, group: u64) {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        quiet.quiet.remove(&group);
        quiet.activity.remove(&group);
        quiet.writes_in_flight.remove(&group);
    }

    /// Marks `group` quiet and stops its timers — unless, for a leader, a write came since
    /// `expected_activity` was read or one is under way (a leader must not stop heartbeating
    /// under a write it is about to propose). Returns whether it did.
    pub(crate) fn quiesce(
        &self,
        group: u64,
        state: Quiet,
        raft: &PartitionRaftNode,
        expected_activity: Option<u64>,
    ) -> bool {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        let activity = quiet.activity.get(&group).copied().unwrap_or(0);
        if expected_activity.is_some_and(|expected| expected != activity) || quiet.writes_in_flight.contains_key(&group)
        {
            return false;
        }
        quiet.quiet.insert(group, state);
        raft.runtime_config().tick(false);
        true
    }

    /// A write reached `group` here: counts it, holds off quiescing until the returned guard
    /// drops, and wakes the group if it is quiet and led here (a follower's quiet group stays
    /// so: the write is refused there as NOT_LEADER). Also returns whether it woke it.
    pub(crate) fn begin_write(&self, group: u64) -> (WriteInFlight, bool) {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        *quiet.activity.entry(group).or_insert(0) += 1;
        *quiet.writes_in_flight.entry(group).or_insert(0) += 1;
        let leading = quiet.quiet.get(&group).is_some_and(|q| q.leading);
        let woke = leading && self.wake_locked(&mut quiet, group, Restart::Now).is_some();
        let guard = WriteInFlight {
            groups: self.clone(),
            group,
        };
        (guard, woke)
    }

    /// Wakes `group` if it is quiet: the leader's timers run again at once and it heartbeats
    /// (so followers and its lease are fresh without waiting for a tick); a follower's restart
    /// as `restart` says. Returns what the quiet state was.
    fn wake_locked(&self, quiet: &mut QuietGroups, group: u64, restart: Restart) -> Option<Quiet> {
        let state = quiet.quiet.remove(&group)?;
        let Some(raft) = self.hosted.get(group) else {
            return Some(state);
        };
        if state.leading {
            raft.runtime_config().tick(true);
            heartbeat_now(&raft);
            return Some(state);
        }
        match restart {
            Restart::Now => raft.runtime_config().tick(true),
            Restart::Campaign => {
                raft.runtime_config().tick(true);
                tokio::spawn(async move {
                    let _ = raft.trigger().elect(true).await;
                });
            }
            Restart::Later => {
                let delay = self.resume_delay.get().copied().unwrap_or(Duration::ZERO);
                let groups = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    groups.resume_timers(group, &raft);
                });
            }
        }
        Some(state)
    }

    /// An append for `group` arrived. One with entries, or from another leader than the one
    /// the group rests under, takes it out of quiet; the returned guard restarts its timers
    /// when dropped — once the append is in, so the election timer counts from this contact,
    /// not from before the quiet spell, or when the append's handling ends any other way (a
    /// dropped connection, an undecodable request): a group out of quiet must never be left
    /// without timers. Any append from the quiet group's leader ends a spell of refusing
    /// candidates.
    pub(crate) fn append_arrives(
        &self,
        group: u64,
        raft: &PartitionRaftNode,
        has_entries: bool,
        vote_json: &[u8],
    ) -> Option<ResumeTimers> {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        let state = quiet.quiet.get_mut(&group)?;
        if !has_entries && state.vote_json == vote_json {
            state.refusing_since = None;
            return None;
        }
        quiet.quiet.remove(&group);
        Some(ResumeTimers {
            groups: self.clone(),
            group,
            raft: raft.clone(),
        })
    }

    /// Restarts `group`'s timers unless it has been quiesced again meanwhile.
    pub(crate) fn resume_timers(&self, group: u64, raft: &PartitionRaftNode) {
        let quiet = self.quiet.lock().expect("quiet groups");
        if !quiet.quiet.contains_key(&group) {
            raft.runtime_config().tick(true);
        }
    }

    /// A `TransferLeader` for `group` arrived: the target's timers run at once (it campaigns),
    /// the other voters' later (they must not race it).
    pub(crate) fn wake_for_transfer(&self, group: u64, raft: &PartitionRaftNode, to: u64) {
        let me = raft.metrics().borrow_watched().id;
        let restart = if me == to { Restart::Now } else { Restart::Later };
        let mut quiet = self.quiet.lock().expect("quiet groups");
        self.wake_locked(&mut quiet, group, restart);
    }

    /// A peer restarted or came back: the quiet groups led here that it votes in wake (so it
    /// hears from their leaders); a restart also ends the leadership it held.
    pub(crate) fn on_peer_event(&self, node: u64, event: PeerEvent) {
        {
            let mut quiet = self.quiet.lock().expect("quiet groups");
            let led_here: Vec<u64> = quiet
                .quiet
                .iter()
                .filter(|(_, q)| q.leading && q.voters.contains(&node))
                .map(|(group, _)| *group)
                .collect();
            if !led_here.is_empty() {
                tracing::debug!(
                    node,
                    ?event,
                    groups = led_here.len(),
                    "peer back: waking the groups led here"
                );
            }
            for group in led_here {
                self.wake_locked(&mut quiet, group, Restart::Now);
            }
        }
        if event == PeerEvent::Restarted {
            self.on_leader_dead(node);
        }
    }

    /// `leader`'s broker is dead (or restarted): the quiet groups it led wake; in each, the
    /// voter after it campaigns at once (Pre-Vote first), the others restart their election
    /// timers a while later, so they do not split the vote.
    pub(crate) fn on_leader_dead(&self, leader: u64) {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        let led_by_it: Vec<(u64, bool)> = quiet
            .quiet
            .iter()
            .filter(|(_, q)| !q.leading && q.leader == leader)
            .map(|(group, q)| (*group, q.campaigns_first))
            .collect();
        for (group, campaigns_first) in led_by_it {
            let restart = if campaigns_first {
                Restart::Campaign
            } else {
                Restart::Later
            };
            self.wake_locked(&mut quiet, group, restart);
        }
    }

    /// Whether a (pre-)vote request for `group` is refused because the group is quiet (see
    /// [`answer_candidate`] for the rule: a quiet leader refuses and wakes, a quiet follower
    /// refuses while its leader pinged us within `ALIVE_WINDOW`, for at most `REFUSAL_LIMIT`).
    /// Otherwise a quiet group wakes and votes by openraft's rules (which refuse while a lease
    /// from the leader's last contact holds).
    pub(crate) fn refuses_candidate(&self, group: u64, rpc: &openraft::raft::VoteRequest<PartitionRaft>) -> bool {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        let Some(state) = quiet.quiet.get_mut(&group) else {
            return false;
        };
        let leader_alive = !state.leading && self.liveness.pinged_us_within(state.leader, ALIVE_WINDOW);
        let candidacy = Candidacy {
            candidate: rpc.vote.leader_id().node_id,
            leadership_transfer: rpc.leadership_transfer,
        };
        match answer_candidate(state, leader_alive, candidacy, Instant::now()) {
            CandidateAnswer::Refuse { since } => {
                state.refusing_since = Some(since);
                true
            }
            CandidateAnswer::RefuseAndWake => {
                self.wake_locked(&mut quiet, group, Restart::Now);
                true
            }
            CandidateAnswer::WakeAndVote => {
                self.wake_locked(&mut quiet, group, Restart::Later);
                false
            }
        }
    }

    /// The follower side of a `Quiesce` request: quiesces each group whose state matches the
    /// leader's (see [`follower_agrees`]); returns those.
    pub(crate) fn quiesce_as_follower(&self, request: QuiesceRequest) -> Vec<u64> {
        let runs_failure_detector = self.resume_delay.get().is_some();
        if !runs_failure_detector {
            return Vec::new();
        }
        let mut accepted = Vec::new();
        for item in request.groups {
            let Some(raft) = self.hosted.get(item.group) else {
                continue;
            };
            let (Ok(vote), Ok(last)) = (
                serde_json::from_slice::<Vote>(&item.vote_json),
                serde_json::from_slice::<LogId>(&item.last_json),
            ) else {
                continue;
            };
            let proposal = QuiesceProposal {
                leader: request.leader,
                vote,
                last,
            };
            let (view, voters, me) = {
                let receiver = raft.metrics();
                let metrics = receiver.borrow_watched();
                let view = FollowerView {
                    runs_failure_detector,
                    votes_held: self.hosted.votes_held(item.group),
                    is_follower: metrics.state == openraft::ServerState::Follower,
                    vote: metrics.vote,
                    current_leader: metrics.current_leader,
                    last_log_index: metrics.last_log_index,
                    last_applied: metrics.last_applied,
                };
                let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
                (view, voters, metrics.id)
            };
            if !follower_agrees(&view, &proposal) {
                continue;
            }
            let state = Quiet {
                leader: request.leader,
                leading: false,
                vote_json: item.vote_json,
                campaigns_first: successor(&voters, request.leader) == Some(me),
                voters,
                refusing_since: None,
            };
            if self.quiesce(item.group, state, &raft, None) {
                accepted.push(item.group);
            }
        }
        accepted
    }
}
