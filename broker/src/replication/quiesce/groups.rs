//! Which partition groups are quiet on this broker, and every way one wakes: a write, an
//! append, a campaign, a peer's restart or death. Kept on [`RaftGroups`] (the router that
//! receives those messages) under one lock, so a write and a quiesce decision on a group are
//! ordered.

use super::leader::follower_agrees;
use super::liveness::{PeerEvent, PeerLiveness, ALIVE_WINDOW};
use super::{heartbeat_now, successor, Quiet};
use crate::replication::raft_service::{PartitionRaftNode, RaftGroups};
use openraft::async_runtime::watch::WatchReceiver;
use proto::raft_v1::QuiesceRequest;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How long a quiet follower refuses candidates for a leader it hears pings from but no append:
/// a leader alive enough to ping but not reaching this group (its core stopped, a link fault
/// the pings do not share) must not keep the group leaderless. A live leader woken by the
/// candidate reaches the group well within it.
const REFUSAL_LIMIT: Duration = Duration::from_millis(750);
/// Which groups are quiet here, and per group the writes seen and in flight.
#[derive(Default)]
pub(crate) struct QuietGroups {
    quiet: HashMap<u64, Quiet>,
    /// Write requests seen per group: a change means the group was not idle.
    activity: HashMap<u64, u64>,
    /// Write requests under way per group: a leader never quiesces under one.
    writes_in_flight: HashMap<u64, u64>,
}

/// Restarts a woken group's timers when dropped (see [`RaftGroups::append_arrives`]).
pub(crate) struct ResumeTimers {
    groups: RaftGroups,
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
    groups: RaftGroups,
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

impl RaftGroups {
    /// This broker runs the failure detector from now on and may agree to quiesce; a follower
    /// woken by a dead leader's silence restarts its election timer after `resume_delay`
    /// (unless it campaigns first).
    pub(crate) fn enable_quiescence(&self, resume_delay: Duration) {
        let _ = self.quiescence.set(resume_delay);
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
        let Some(raft) = self.get(group) else {
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
                let delay = self.quiescence.get().copied().unwrap_or(Duration::ZERO);
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

    /// Whether a (pre-)vote request for `group` is refused because the group is quiet under a
    /// leader that is alive — it pinged us within `ALIVE_WINDOW` — and the refusals have not
    /// gone on for `REFUSAL_LIMIT` without an append from it. A leader refusing also wakes, so
    /// the candidate hears from it. Otherwise a quiet group wakes and votes by openraft's rules
    /// (which refuse while a lease from the leader's last contact holds).
    pub(crate) fn refuses_for_live_quiet_leader(
        &self,
        group: u64,
        rpc: &openraft::raft::VoteRequest<crate::replication::types::PartitionRaft>,
    ) -> bool {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        let Some(state) = quiet.quiet.get_mut(&group) else {
            return false;
        };
        let candidate = rpc.vote.leader_id().node_id;
        if state.leading {
            if !rpc.leadership_transfer {
                self.wake_locked(&mut quiet, group, Restart::Now);
                return true;
            }
        } else {
            let leader_alive = self.liveness.pinged_us_within(state.leader, ALIVE_WINDOW);
            let refusing_since = *state.refusing_since.get_or_insert_with(Instant::now);
            let refuse = leader_alive
                && !rpc.leadership_transfer
                && candidate != state.leader
                && refusing_since.elapsed() < REFUSAL_LIMIT;
            if refuse {
                return true;
            }
        }
        self.wake_locked(&mut quiet, group, Restart::Later);
        false
    }

    /// The follower side of a `Quiesce` request: quiesces each group whose state matches the
    /// leader's; returns those.
    pub(crate) fn quiesce_as_follower(&self, request: QuiesceRequest) -> Vec<u64> {
        if self.quiescence.get().is_none() {
            return Vec::new();
        }
        let mut accepted = Vec::new();
        for item in request.groups {
            let Some(raft) = self.get(item.group) else { continue };
            if self.votes_held(item.group) {
                continue;
            }
            let Some((voters, me)) = follower_agrees(&raft, request.leader, &item.vote_json, &item.last_json) else {
                continue;
            };
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
