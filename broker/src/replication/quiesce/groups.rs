//! This broker's quiescence state ([`Quiescence`]): which partition groups are quiet here, the
//! peers' liveness, and every way a group wakes — a write, an append, a campaign, a peer's
//! restart or death. The Raft router (`raft_service`) and the replicas call into it; the rules
//! it applies are the pure functions of [`rules`](super::rules).
//!
//! One lock over the quiet state, so a write and a quiesce decision on a group are ordered.

use super::liveness::{PeerEvent, PeerLiveness, ALIVE_WINDOW, FIRST_CONTACT_GRACE, PING_INTERVAL};
use super::rules::{
    answer_candidate, campaigns_after_death, follower_agrees, Candidacy, CandidateAnswer, FollowerView, QuiesceProposal,
};
use super::{heartbeat_now, new_incarnation, Quiet};
use crate::replication::metrics::{quiet_group_woke, WakeReason};
use crate::replication::raft_node::{HostedGroups, PartitionRaftNode};
use crate::replication::types::{LogId, PartitionRaft, Vote};
use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use proto::raft_v1::QuiesceRequest;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Set once this broker runs the failure detector (to how long a follower woken to vote
    /// waits before its election timer runs, so that it does not split the candidate's vote);
    /// until then it never agrees to quiesce, as nothing would wake its groups if their leader
    /// died.
    resume_delay: Arc<OnceLock<Duration>>,
    /// Set before any replica starts when this broker will run quiescence: a replica that
    /// restarts then awaits its leader with its timers stopped ([`Quiescence::await_leader`]).
    restarts_await_leader: Arc<AtomicBool>,
    /// Set when this broker's controlled shutdown begins; its pings say so to its peers.
    stopping: Arc<AtomicBool>,
    /// True from the start of a broker that runs quiescence until it has opened the replicas
    /// its metadata assigns it ([`Quiescence::replicas_opened`]); its pings say so, and its
    /// replicas' patience for their leaders counts from then.
    opening: Arc<tokio::sync::watch::Sender<bool>>,
    /// Turns to campaign for groups whose leader died ([`CAMPAIGNS_AT_ONCE`]).
    campaigns: Arc<tokio::sync::Semaphore>,
    /// Turns for replicas whose patience for a leader ran out (as many at once): a former
    /// leader campaigns at its turn, another replica's timers start at its turn.
    patience_turns: Arc<tokio::sync::Semaphore>,
    /// Turns to reach a restarted follower ([`REACHES_AT_ONCE`]).
    reaches: Arc<tokio::sync::Semaphore>,
}

/// Most groups this broker campaigns for at once after their leader died; the rest wait their
/// turn with their timers stopped (see [`Quiescence::on_leader_dead`]).
const CAMPAIGNS_AT_ONCE: usize = 64;
/// How long one campaign (or one replica whose patience ran out) holds its turn at most: until
/// the group knows a leader of a newer term, or this.
const CAMPAIGN_WAIT: Duration = Duration::from_secs(2);

/// How long a replica awaiting a leader — restarted, or following a dead leader while another
/// voter campaigns — waits before its timers run anyway, at its turn (plus up to
/// [`RESTART_PATIENCE_SPREAD`], by group, so that such groups do not all campaign at once). A
/// backstop: the leader's append, its death or a candidate normally wake it within seconds.
pub(crate) const RESTART_PATIENCE: Duration = Duration::from_secs(10);
/// The spread of [`RESTART_PATIENCE`] over groups.
const RESTART_PATIENCE_SPREAD: Duration = Duration::from_secs(5);
/// How long a restarted replica that led its group before waits for a leader to reach it
/// (plus up to [`FORMER_LEADER_PATIENCE_SPREAD`]) before it campaigns at its turn, when the
/// group's other voters started with this broker (a whole cluster starting: the replicas that
/// led are the ones to campaign). If they were up before it, they have elected a leader, which
/// reaches it once it has opened its replicas: it waits [`RESTART_PATIENCE`] like any other.
pub(crate) const FORMER_LEADER_PATIENCE: Duration = Duration::from_secs(2);
/// The spread of [`FORMER_LEADER_PATIENCE`] over groups.
const FORMER_LEADER_PATIENCE_SPREAD: Duration = Duration::from_secs(2);
/// Most groups led here that reach a restarted follower at once (each holds its turn until its
/// heartbeat is acknowledged — at most [`RESTART_PATIENCE`] —, or, for a follower known to be
/// behind, until it holds the last entry — at most [`RESTARTED_FOLLOWER_ACK_WAIT`]).
/// Thousands of heartbeats at once outran what the restarted broker could answer within the
/// wait, and each unanswered one was sent again: the load grew with the delay.
const REACHES_AT_ONCE: usize = 256;
/// The longest a broker's opening of its replicas is waited for — by its own replicas'
/// patience, by its peers' leaders before they reach it, by its peers' failure detectors
/// excusing its silence — should it never say it has finished (10,000 replicas open in ~8 s
/// after a crash).
pub(crate) const MAX_OPENING: Duration = Duration::from_secs(60);

/// How long a replica awaiting a leader waits, and what decides it.
#[derive(Debug, Clone)]
enum Patience {
    /// [`RESTART_PATIENCE`]: a restarted follower, or a follower of a dead leader.
    Follower,
    /// A restarted replica that led its group: [`FORMER_LEADER_PATIENCE`] unless each of
    /// `others` (the group's other voters) was up before this broker started.
    FormerLeader { others: Vec<u64> },
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

/// Restarts a woken group's timers when dropped (see [`Quiescence::append_arrives`]) — or, for
/// a heartbeat reaching a restarted replica that awaits its leader, lets it go quiet under that
/// leader if the heartbeat found it in step ([`ResumeTimers::settle`]).
pub(crate) struct ResumeTimers {
    groups: Quiescence,
    group: u64,
    raft: PartitionRaftNode,
    /// The heartbeat's vote (as appends carry it) when it reached a replica awaiting its
    /// leader after a restart: the group is still marked awaiting.
    awaited_heartbeat: Option<Bytes>,
}

impl ResumeTimers {
    /// The append this guard was made for was answered `success`, with `prev` its previous log
    /// id and `commit` the leader's commit. A heartbeat that reached a restarted replica
    /// awaiting its leader, matched its last entry, and whose leader has committed exactly that
    /// entry (a quiet leader has) found the replica in step: it goes quiet under that leader,
    /// as if it had agreed to quiesce, and no timer runs. Anything else wakes it.
    pub(crate) fn settle(mut self, success: bool, vote: Vote, prev: Option<LogId>, commit: Option<LogId>) {
        let Some(vote_json) = self.awaited_heartbeat.take() else {
            return;
        };
        // (The replica's log holds nothing past `prev`: a heartbeat appends nothing, and what
        // a restarted replica holds is what it loaded at its start.)
        let last_log_index = self.raft.with_metrics(|metrics| metrics.last_log_index);
        let in_step =
            success && vote.committed && prev.is_some() && prev == commit && last_log_index == prev.map(|p| p.index);
        if !in_step {
            self.awaited_heartbeat = Some(vote_json);
            return; // dropped: wakes
        }
        let leader = vote.leader_id.node_id;
        let mut quiet = self.groups.quiet.lock().expect("quiet groups");
        if let Some(state) = quiet.quiet.get_mut(&self.group).filter(|q| q.awaiting_leader) {
            state.leader = leader;
            state.vote_json = vote_json;
            state.awaiting_leader = false;
            state.refusing_since = None;
        }
    }
}

impl Drop for ResumeTimers {
    fn drop(&mut self) {
        if self.awaited_heartbeat.is_some() {
            let mut quiet = self.groups.quiet.lock().expect("quiet groups");
            if quiet.quiet.get(&self.group).is_some_and(|q| q.awaiting_leader) {
                // Later: a leader reaching its restarted follower wakes when it finds it out of
                // step, and appends to it; run at once, its election timer could fire before
                // then on a busy broker, and its campaign would only wake the leader too.
                self.groups
                    .wake_locked(&mut quiet, self.group, Restart::Later, WakeReason::Append);
            }
            return;
        }
        self.groups.resume_timers(self.group, &self.raft);
    }
}

/// How a woken group's timers restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    /// At once: the leader (which heartbeats at once too), or a follower that just heard from
    /// a leader.
    Now,
    /// Campaign, when its turn comes (at most [`CAMPAIGNS_AT_ONCE`] at a time): the next live
    /// voter after a dead leader, or a restarted replica that led and heard from no leader.
    Campaign,
    /// Timers on when its turn comes, held until the group knows a leader of a newer term or
    /// for [`CAMPAIGN_WAIT`]: a replica whose patience for a leader ran out.
    InTurn,
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
            restarts_await_leader: Arc::default(),
            stopping: Arc::default(),
            opening: Arc::new(tokio::sync::watch::Sender::new(false)),
            campaigns: Arc::new(tokio::sync::Semaphore::new(CAMPAIGNS_AT_ONCE)),
            patience_turns: Arc::new(tokio::sync::Semaphore::new(CAMPAIGNS_AT_ONCE)),
            reaches: Arc::new(tokio::sync::Semaphore::new(REACHES_AT_ONCE)),
        }
    }

    /// Begins this broker's controlled shutdown: from now on its pings and answers tell its
    /// peers, so they hand it no leadership. Then waits (at most `wait`) until each of `peers`
    /// that answered a ping within `wait` has answered once more, so that
    /// [`PeerLiveness::is_stopping`] knows which of them are stopping too.
    pub async fn announce_stopping(&self, peers: &[u64], wait: Duration) {
        let started = Instant::now();
        self.stopping.store(true, Ordering::Relaxed);
        let reachable: Vec<u64> = peers
            .iter()
            .copied()
            .filter(|peer| self.liveness.since_answered(*peer).is_some_and(|ago| ago < wait))
            .collect();
        while started.elapsed() < wait
            && !reachable
                .iter()
                .all(|peer| self.liveness.answered_since(*peer, started))
        {
            tokio::time::sleep(PING_INTERVAL / 4).await;
        }
    }

    /// Whether this broker's controlled shutdown has begun.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// From now on a replica that restarts awaits its leader (see [`Self::await_leader`]), and
    /// this broker is opening its replicas until [`Self::replicas_opened`]: called before any
    /// replica starts, on a broker that will run quiescence.
    pub fn await_leaders_on_restart(&self) {
        self.restarts_await_leader.store(true, Ordering::Relaxed);
        self.opening.send_replace(true);
    }

    /// This broker has opened the replicas its metadata assigned it at its start: its pings say
    /// so from now on (its peers' leaders then reach the replicas awaiting them), and those
    /// replicas' patience starts. Opening 10,000 replicas after a crash takes ~8 s; leaders
    /// that heartbeat a restarted broker meanwhile find groups it does not host yet, and gave up
    /// on them — waking thousands of groups at once (issue 16's crash-restart storm).
    pub fn replicas_opened(&self) {
        self.opening.send_replace(false);
    }

    /// Whether this broker is still opening its replicas after its start.
    pub(crate) fn is_opening(&self) -> bool {
        *self.opening.borrow()
    }

    /// Returns once this broker has opened its replicas (at once if it is not opening them), or
    /// after [`MAX_OPENING`].
    async fn opened(&self) {
        let mut opening = self.opening.subscribe();
        let _ = tokio::time::timeout(MAX_OPENING, opening.wait_for(|opening| !opening)).await;
    }

    /// Whether a replica that restarts awaits its leader.
    pub(crate) fn restarts_await_leader(&self) -> bool {
        self.restarts_await_leader.load(Ordering::Relaxed)
    }

    /// A replica of `group` restarted with a committed vote for `leader`'s leadership in its
    /// log and its timers stopped: it waits quiet for that leader, which wakes on this broker's
    /// restart and appends to it: a heartbeat settles it quiet if it finds it in step, and wakes
    /// it otherwise (the leader may have changed meanwhile); appends with entries leave it
    /// awaiting, following their leader ([`Self::append_arrives`]). Its leader's death, a
    /// candidate while that leader looks dead, and — a backstop —
    /// [`RESTART_PATIENCE`] with no word from anyone, counted from when this broker has opened
    /// its replicas.
    ///
    /// `leader` may be this broker (`me`): the replica led the group before the restart. Its
    /// leadership is not restored (openraft's `enable_leader_restore` is off), and after a
    /// crash its peers have elected another leader, which reaches it as above. If the group's
    /// other voters started with this broker (a cold start of the whole cluster) nobody leads
    /// it: it campaigns at its turn after [`FORMER_LEADER_PATIENCE`]. Any candidate meanwhile wakes it and
    /// gets its vote by openraft's rules. Running its timers from the start instead, thousands
    /// of such replicas campaigned against groups that had new leaders, and every campaign
    /// woke the leader it asked.
    pub(crate) fn await_leader(&self, group: u64, leader: u64, voters: Vec<u64>, me: u64) {
        let state = Quiet {
            leader,
            leading: false,
            // No append carries an empty vote: the first one wakes the group.
            vote_json: Default::default(),
            me,
            voters,
            refusing_since: None,
            awaiting_leader: true,
        };
        let patience = if leader == me {
            Patience::FormerLeader {
                others: state.voters.iter().copied().filter(|voter| *voter != me).collect(),
            }
        } else {
            Patience::Follower
        };
        self.quiet.lock().expect("quiet groups").quiet.insert(group, state);
        self.stop_awaiting_after_patience(group, patience);
    }

    /// Ends `group`'s wait for a leader after its `patience` (spread by group) from when this
    /// broker has opened its replicas, if it still waits then.
    fn stop_awaiting_after_patience(&self, group: u64, patience: Patience) {
        let groups = self.clone();
        tokio::spawn(async move {
            groups.opened().await;
            if let Patience::FormerLeader { others } = &patience {
                // Decided on what each other voter said first: a peer not heard from yet (its
                // connection to us is new) would count as starting with us.
                groups.liveness.all_heard_or_dead(others, FIRST_CONTACT_GRACE).await;
            }
            let (patience, spread) = match patience {
                Patience::FormerLeader { others }
                    if !others.iter().all(|voter| groups.liveness.was_up_before_us(*voter)) =>
                {
                    (FORMER_LEADER_PATIENCE, FORMER_LEADER_PATIENCE_SPREAD)
                }
                _ => (RESTART_PATIENCE, RESTART_PATIENCE_SPREAD),
            };
            let spread_ms = group.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (spread.as_millis() as u64 + 1);
            tokio::time::sleep(patience + Duration::from_millis(spread_ms)).await;
            groups.stop_awaiting(group);
        });
    }

    /// Ends `group`'s wait for a leader, if it still waits: its timers run at its turn. (Should
    /// the group have been stopped and started again meanwhile, its new replica's wait merely
    /// ends early.)
    fn stop_awaiting(&self, group: u64) {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        if let Some(state) = quiet.quiet.get(&group).filter(|q| q.awaiting_leader) {
            // In turns, like the campaigns after a leader's death: after a cold start of the
            // whole cluster every group is here at once — 10,000 timers started within 2 s
            // (thousands of elections on two cores) brought false deaths and never settled. A
            // replica that led campaigns at its turn; any other's timers start at its turn.
            let restart = if state.leader == state.me {
                Restart::Campaign
            } else {
                Restart::InTurn
            };
            tracing::debug!(
                group,
                ?restart,
                "no leader reached this replica while it awaited one: its timers run at its turn"
            );
            self.wake_locked(&mut quiet, group, restart, WakeReason::RestartPatience);
        }
    }

    /// The Raft nodes hosted here.
    pub(crate) fn hosted(&self) -> &HostedGroups {
        &self.hosted
    }

    /// This broker runs the failure detector from now on and may agree to quiesce; a follower
    /// woken to vote restarts its election timer after `resume_delay`.
    pub(crate) fn enable_quiescence(&self, resume_delay: Duration) {
        let _ = self.resume_delay.set(resume_delay);
    }

    /// The lease a follower grants its leader after each contact (openraft's
    /// `election_timeout_max`; zero until quiescence runs).
    pub(crate) fn leader_lease(&self) -> Duration {
        self.resume_delay.get().copied().unwrap_or(Duration::ZERO)
    }

    /// When each peer broker last pinged this one and answered its pings.
    pub fn liveness(&self) -> &PeerLiveness {
        &self.liveness
    }

    /// This process's incarnation.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The hosted groups that are not quiet, with their nodes (one pass under one lock).
    pub(crate) fn awake_groups(&self) -> Vec<(u64, PartitionRaftNode)> {
        let quiet = self.quiet.lock().expect("quiet groups");
        self.hosted.all_where(|group| !quiet.quiet.contains_key(&group))
    }

    /// Whether `group` is quiet here: its Raft timers stopped under a known leader. A replica
    /// awaiting a leader (restarted, or its leader dead) has its timers stopped too, but is not
    /// settled: it reports not quiet.
    pub fn is_quiet(&self, group: u64) -> bool {
        let quiet = self.quiet.lock().expect("quiet groups");
        quiet.quiet.get(&group).is_some_and(|q| !q.awaiting_leader)
    }

    /// The groups quiet here under a known leader, this broker or another (not awaiting one):
    /// the ones whose Raft nodes may sleep.
    pub(crate) fn settled_quiet_groups(&self) -> std::collections::HashSet<u64> {
        let quiet = self.quiet.lock().expect("quiet groups");
        quiet
            .quiet
            .iter()
            .filter(|(_, q)| !q.awaiting_leader)
            .map(|(group, _)| *group)
            .collect()
    }

    /// Whether `group` is quiet here under a known leader.
    pub(crate) fn is_settled_quiet(&self, group: u64) -> bool {
        let quiet = self.quiet.lock().expect("quiet groups");
        quiet.quiet.get(&group).is_some_and(|q| !q.awaiting_leader)
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
    /// under a write it is about to propose), or a follower in `waived` (not waited for, as
    /// dead) is alive again: its return, handled under the same lock, must find the group
    /// either quiet (and reach it) or awake. Returns whether it did.
    pub(crate) fn quiesce(
        &self,
        group: u64,
        state: Quiet,
        raft: &PartitionRaftNode,
        expected_activity: Option<u64>,
        waived: &[u64],
    ) -> bool {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        let activity = quiet.activity.get(&group).copied().unwrap_or(0);
        if expected_activity.is_some_and(|expected| expected != activity)
            || quiet.writes_in_flight.contains_key(&group)
            || waived.iter().any(|follower| !self.liveness.is_dead(*follower))
        {
            return false;
        }
        quiet.quiet.insert(group, state);
        raft.set_ticking(false);
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
        let woke = leading
            && self
                .wake_locked(&mut quiet, group, Restart::Now, WakeReason::Write)
                .is_some();
        let guard = WriteInFlight {
            groups: self.clone(),
            group,
        };
        (guard, woke)
    }

    /// Wakes `group` if it is quiet: the leader's timers run again at once and it heartbeats
    /// (so followers and its lease are fresh without waiting for a tick); a follower's restart
    /// as `restart` says. Returns what the quiet state was.
    fn wake_locked(&self, quiet: &mut QuietGroups, group: u64, restart: Restart, reason: WakeReason) -> Option<Quiet> {
        let state = quiet.quiet.remove(&group)?;
        quiet_group_woke(reason);
        let Some(raft) = self.hosted.get(group) else {
            return Some(state);
        };
        if state.leading {
            raft.set_ticking(true);
            heartbeat_now(&raft);
            return Some(state);
        }
        match restart {
            Restart::Now => raft.set_ticking(true),
            Restart::Campaign | Restart::InTurn => {
                // Expired patience takes its own turns: queued behind thousands of them (a cold
                // start), the campaigns after a leader's death would wait minutes.
                let turns = if reason == WakeReason::RestartPatience {
                    &self.patience_turns
                } else {
                    &self.campaigns
                };
                let (groups, campaigns) = (self.clone(), Arc::clone(turns));
                // A leader of a newer term than the one now known: the metrics may still name
                // a dead leader, or (a restarted follower) the one its log voted for.
                let term_at_wake = raft.with_metrics(|metrics| metrics.current_term);
                tokio::spawn(async move {
                    // Timers stopped until its turn; started then — unless the group went quiet
                    // again meanwhile (another voter won and quiesced it).
                    let turn = campaigns.acquire_owned().await;
                    {
                        let quiet = groups.quiet.lock().expect("quiet groups");
                        if quiet.quiet.contains_key(&group) {
                            return;
                        }
                        raft.set_ticking(true);
                    }
                    let led = move |m: &openraft::RaftMetrics<PartitionRaft>| {
                        m.current_leader.is_some() && m.current_term > term_at_wake
                    };
                    if turn.is_err() || raft.with_metrics(led) {
                        return;
                    }
                    let Ok(raft) = raft.live().await else {
                        return;
                    };
                    if restart == Restart::Campaign {
                        let _ = raft.trigger().elect(true).await;
                    }
                    let _ = raft
                        .wait(Some(CAMPAIGN_WAIT))
                        .metrics(led, "a leader of a newer term")
                        .await;
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
    /// the group rests under, takes it out of quiet — except a replica awaiting a leader, which
    /// an append with entries from a leader leaves awaiting, following that leader; the
    /// returned guard restarts its timers
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
        if has_entries && state.awaiting_leader {
            // A leader's own retries reach a restarted broker's replicas as soon as each is
            // open, before the leader is told to reach it (once its broker has opened them
            // all). Woken by those appends, with that leader quiet, thousands of replicas ran
            // out of election timeout and campaigned, waking the groups they asked (~2,000
            // `candidate` wakes at 10,000 partitions). It keeps awaiting, following that
            // leader: the leader's heartbeat settles or wakes it, its death or the patience
            // wakes it, as for any awaiting replica.
            if let Ok(vote) = serde_json::from_slice::<Vote>(vote_json) {
                if vote.committed {
                    state.leader = vote.leader_id.node_id;
                    state.refusing_since = None;
                    return None;
                }
            }
        }
        if !has_entries && state.awaiting_leader {
            // Left awaiting until the answer shows whether the heartbeat found it in step.
            return Some(ResumeTimers {
                groups: self.clone(),
                group,
                raft: raft.clone(),
                awaited_heartbeat: Some(Bytes::copy_from_slice(vote_json)),
            });
        }
        quiet.quiet.remove(&group);
        quiet_group_woke(WakeReason::Append);
        Some(ResumeTimers {
            groups: self.clone(),
            group,
            raft: raft.clone(),
            awaited_heartbeat: None,
        })
    }

    /// Restarts `group`'s timers unless it has been quiesced again meanwhile.
    pub(crate) fn resume_timers(&self, group: u64, raft: &PartitionRaftNode) {
        let quiet = self.quiet.lock().expect("quiet groups");
        if !quiet.quiet.contains_key(&group) {
            raft.set_ticking(true);
        }
    }

    /// A `TransferLeader` for `group` arrived: the target's timers run at once (it campaigns),
    /// the other voters' later (they must not race it).
    pub(crate) fn wake_for_transfer(&self, group: u64, raft: &PartitionRaftNode, to: u64) {
        let me = raft.with_metrics(|metrics| metrics.id);
        let restart = if me == to { Restart::Now } else { Restart::Later };
        let mut quiet = self.quiet.lock().expect("quiet groups");
        self.wake_locked(&mut quiet, group, restart, WakeReason::Transfer);
    }

    /// A peer restarted or came back: the quiet groups led here that it votes in must reach it.
    /// After a restart its replicas await their leaders: each such group stays quiet and
    /// heartbeats it until a heartbeat finds its replica in step (see
    /// [`reach_restarted_follower`]). After silence its replicas may have campaigned: the
    /// groups wake. A restart also ends the leadership it held.
    pub(crate) fn on_peer_event(&self, node: u64, event: PeerEvent) {
        {
            let mut quiet = self.quiet.lock().expect("quiet groups");
            let led_here: Vec<u64> = quiet
                .quiet
                .iter()
                .filter(|(_, q)| q.leading && q.voters.contains(&node))
                .map(|(group, _)| *group)
                .collect();
            tracing::info!(
                node,
                ?event,
                groups = led_here.len(),
                "peer back: reaching it from the quiet groups led here"
            );
            for group in led_here {
                if event == PeerEvent::Restarted {
                    if let Some(raft) = self.hosted.get(group) {
                        tokio::spawn(reach_restarted_follower(self.clone(), group, raft, node));
                    }
                } else {
                    self.wake_locked(&mut quiet, group, Restart::Now, WakeReason::PeerBack);
                }
            }
        }
        if event == PeerEvent::Restarted {
            self.on_leader_dead(node);
        }
        // (A peer first heard of is not one that restarted: this broker did. Replicas
        // awaiting it as their leader keep waiting for its append.)
    }

    /// Whether `group` is quiet here and led here.
    fn leads_quietly(&self, group: u64) -> bool {
        let quiet = self.quiet.lock().expect("quiet groups");
        quiet.quiet.get(&group).is_some_and(|q| q.leading)
    }

    /// Wakes `group` if it is quiet and led here.
    fn wake_leader(&self, group: u64) {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        if quiet.quiet.get(&group).is_some_and(|q| q.leading) {
            self.wake_locked(&mut quiet, group, Restart::Now, WakeReason::RestartedFollower);
        }
    }

    /// `leader`'s broker is dead (or restarted): in each quiet group it led here, the next live
    /// voter after it campaigns (Pre-Vote first) if it sees a live majority
    /// ([`campaigns_after_death`]), at most
    /// [`CAMPAIGNS_AT_ONCE`] groups at a time; the other followers await the new leader with
    /// their timers stopped, as a restarted replica does (the new leader's heartbeat wakes them), for at
    /// most [`RESTART_PATIENCE`].
    ///
    /// Why paced, and why the others wait: at 10,000 partitions a dead broker led 3,333 groups.
    /// Woken all at once, with every follower's timers running, the survivors' two cores could
    /// not run that many timers and elections: candidates timed out before their votes came
    /// back, the waiting followers' timers ran out and they campaigned too, and the failover
    /// took minutes.
    pub(crate) fn on_leader_dead(&self, leader: u64) {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        // Also the groups already awaiting a leader that is dead here: `leader` may have been
        // the one to campaign for them.
        let led_by_it: Vec<(u64, bool, bool)> = quiet
            .quiet
            .iter()
            .filter(|(_, q)| {
                !q.leading && (q.leader == leader || (q.awaiting_leader && self.liveness.is_dead(q.leader)))
            })
            .map(|(group, q)| {
                let campaigns = campaigns_after_death(&q.voters, q.leader, q.me, |v| !self.liveness.is_dead(v));
                (*group, campaigns, q.awaiting_leader)
            })
            .collect();
        let campaigning = led_by_it.iter().filter(|(_, campaigns, _)| *campaigns).count();
        tracing::info!(
            leader,
            campaigning,
            awaiting = led_by_it.len() - campaigning,
            "a leader's broker is dead or restarted: campaigning for some of its groups, awaiting the new leader of the others"
        );
        for (group, campaigns, awaiting) in led_by_it {
            if campaigns {
                self.wake_locked(&mut quiet, group, Restart::Campaign, WakeReason::LeaderDead);
            } else if !awaiting {
                if let Some(state) = quiet.quiet.get_mut(&group) {
                    state.awaiting_leader = true;
                    state.refusing_since = None;
                    self.stop_awaiting_after_patience(group, Patience::Follower);
                }
            }
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
                self.wake_locked(&mut quiet, group, Restart::Now, WakeReason::Candidate);
                true
            }
            CandidateAnswer::WakeAndVote => {
                self.wake_locked(&mut quiet, group, Restart::Later, WakeReason::Candidate);
                false
            }
        }
    }

    /// Wakes each quiet group whose Raft node no longer matches its quiet state — a quiet
    /// leader that no longer leads, a quiet follower that knows another leader or none — and
    /// returns how many. A quiet leader still exchanges heartbeats (renewing its lease for a
    /// read, reaching a restarted follower), and a higher vote in an answer makes openraft step
    /// it down: its timers stopped, nothing would ever elect a leader again (seen once at
    /// 10,000 partitions after a crash-restart: seven groups quiet on every broker, leaderless
    /// on two). Run every second by the leader-side scan; replicas awaiting a leader are left
    /// alone (they know none by design).
    pub(crate) fn wake_diverged(&self) -> usize {
        let expected: HashMap<u64, (bool, u64)> = {
            let quiet = self.quiet.lock().expect("quiet groups");
            quiet
                .quiet
                .iter()
                .filter(|(_, q)| !q.awaiting_leader)
                .map(|(group, q)| (*group, (q.leading, q.leader)))
                .collect()
        };
        let diverged: Vec<(u64, (bool, u64))> = self
            .hosted
            .all_where(|group| expected.contains_key(&group))
            .into_iter()
            .filter_map(|(group, raft)| {
                let (leading, leader) = expected[&group];
                let matches = raft.with_metrics(|metrics| {
                    if leading {
                        metrics.state == openraft::ServerState::Leader
                    } else {
                        metrics.current_leader == Some(leader)
                    }
                });
                (!matches).then_some((group, (leading, leader)))
            })
            .collect();
        let mut quiet = self.quiet.lock().expect("quiet groups");
        let mut woken = 0;
        for (group, (leading, leader)) in diverged {
            // (Unless its quiet state changed meanwhile: a wake and a quiesce since.)
            if quiet
                .quiet
                .get(&group)
                .is_some_and(|q| !q.awaiting_leader && q.leading == leading && q.leader == leader)
            {
                tracing::info!(
                    group,
                    leading,
                    leader,
                    "a quiet group's Raft node left its quiet state: it wakes"
                );
                // (Later for a follower: its metrics may merely lag a settle or a quiesce; a
                // deposed leader's timers restart at once whatever.)
                self.wake_locked(&mut quiet, group, Restart::Later, WakeReason::Diverged);
                woken += 1;
            }
        }
        woken
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
            let (view, voters, me) = raft.with_metrics(|metrics| {
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
            });
            if !follower_agrees(&view, &proposal) {
                continue;
            }
            let state = Quiet {
                leader: request.leader,
                leading: false,
                vote_json: item.vote_json,
                me,
                voters,
                refusing_since: None,
                awaiting_leader: false,
            };
            if self.quiesce(item.group, state, &raft, None, &[]) {
                accepted.push(item.group);
            }
        }
        accepted
    }
}

/// How long a quiet leader waits for a restarted follower to acknowledge one heartbeat before
/// it sends another.
const RESTARTED_FOLLOWER_ACK_WAIT: Duration = Duration::from_secs(1);
/// The pause between two such heartbeats (a heartbeat can still fail at once: its broker said
/// it had opened its replicas, but the first pass may have skipped one on an error, or the
/// wait for it ran out).
const RESTARTED_FOLLOWER_RETRY: Duration = Duration::from_millis(500);

/// A quiet group led here learns that `follower`'s broker restarted. Its replica there awaits
/// its leader with timers stopped; one heartbeat that finds it holding the leader's last entry
/// settles it quiet again (`ResumeTimers::settle`), so the group never wakes — with thousands
/// of groups, waking them all at once on every restart overloaded the brokers until the failure
/// detector misread their slowness as deaths. No heartbeat is sent before that broker has
/// opened its replicas (it says so in its pings; openraft's own retries of earlier appends
/// are not ours to hold). Then heartbeats, at most [`REACHES_AT_ONCE`] groups
/// at a time, until one is acknowledged; the group wakes if the follower is not in step (the
/// leader then replicates to it as usual), or if none is acknowledged within
/// [`RESTART_PATIENCE`] of its turn. A follower the leader knows to be behind is not sent a
/// heartbeat first: the group wakes at its turn. Nothing is sent to a follower whose broker is
/// declared dead meanwhile. It stops as soon as the group is no longer quiet
/// here (a write woke it).
async fn reach_restarted_follower(groups: Quiescence, group: u64, node: PartitionRaftNode, follower: u64) {
    let holds_last = move |m: &openraft::RaftMetrics<PartitionRaft>| {
        let matched = m.replication.as_ref().and_then(|r| r.get(&follower).copied().flatten());
        matched.map(|m| m.index) == m.last_log_index
    };
    // Known not to hold the last entry (the group elected this leader while the follower was
    // down, say): the group must wake to catch it up — judged now, as openraft's own retries
    // may catch it up before any heartbeat is acknowledged, and the append that does wakes the
    // follower; with this leader quiet, its timers would run out and its campaign would wake
    // the group anyway (~2,800 `candidate` wakes at 10,000 partitions, before this).
    let behind = node.with_metrics(|metrics| !holds_last(metrics));
    // Not before its broker has opened its replicas: a heartbeat to a group it does not host
    // yet fails, and its patience counts from then too. Then in turn (see REACHES_AT_ONCE) —
    // unless it is behind: the group wakes at once, and its heartbeats and appends reach it.
    groups.liveness.ready_or_gone(follower).await;
    if groups.liveness.is_dead(follower) {
        // Gone again (its return, or next restart, reaches it anew); the group stays quiet.
        return;
    }
    let Ok(_turn) = Arc::clone(&groups.reaches).acquire_owned().await else {
        return;
    };
    let mut behind = behind;
    if node.is_dormant() {
        // Asleep: reached with the heartbeat its instance would send, without waking it (see
        // `PartitionRaftNode::heartbeat_asleep`); the answer tells whether it is behind. (What
        // the leader kept may not know: one built again after this follower's broker died —
        // for a read — went back to sleep knowing nothing of it.)
        let give_up = Instant::now() + RESTART_PATIENCE;
        while groups.leads_quietly(group) {
            match node.heartbeat_asleep(follower).await {
                // Woken meanwhile: reached as a running leader, below.
                None => break,
                Some(Ok(true)) => return,
                // Behind (or deposed): woken below, in its turn, until it has caught up.
                Some(Ok(false)) => {
                    behind = true;
                    break;
                }
                Some(Err(error)) if Instant::now() >= give_up => {
                    tracing::info!(group, follower, %error, "a restarted follower answered no heartbeat: the group wakes");
                    groups.wake_leader(group);
                    return;
                }
                Some(Err(_)) => tokio::time::sleep(RESTARTED_FOLLOWER_RETRY).await,
            }
        }
        if !groups.leads_quietly(group) {
            return;
        }
    }
    // (Only at its turn: a sleeping leader is built again here, and a broker leading thousands
    // of quiet groups would build them all at once.)
    let Ok(raft) = node.live().await else {
        return;
    };
    if behind {
        groups.wake_leader(group);
        // The turn is held while the woken leader catches the follower up (paced, like the
        // heartbeats: ~3,000 groups at 10,000 partitions after a crash-restart).
        let _ = raft
            .wait(Some(RESTARTED_FOLLOWER_ACK_WAIT))
            .metrics(holds_last, "a restarted follower caught up")
            .await;
        return;
    }
    let give_up = Instant::now() + RESTART_PATIENCE;
    let acknowledged = |m: &openraft::RaftMetrics<PartitionRaft>| {
        m.heartbeat.as_ref().and_then(|h| h.get(&follower).copied().flatten())
    };
    while groups.leads_quietly(group) {
        let before = acknowledged(&raft.metrics().borrow_watched());
        heartbeat_now(&node);
        let answered = raft
            .wait(Some(RESTARTED_FOLLOWER_ACK_WAIT))
            .metrics(
                |m| acknowledged(m) != before,
                "a restarted follower acknowledged a heartbeat",
            )
            .await;
        if let Ok(metrics) = answered {
            if !holds_last(&metrics) {
                groups.wake_leader(group);
            }
            return;
        }
        if Instant::now() >= give_up {
            tracing::info!(
                group,
                follower,
                "a restarted follower acknowledged no heartbeat: the group wakes"
            );
            groups.wake_leader(group);
            return;
        }
        tokio::time::sleep(RESTARTED_FOLLOWER_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::{PartitionReplica, RaftGroups, RaftTimers, ReplicaHost};
    use crate::storage::{FlushWorker, LogConfig};

    fn quiet_state(leading: bool, leader: u64, awaiting_leader: bool) -> Quiet {
        Quiet {
            leader,
            leading,
            vote_json: Bytes::new(),
            voters: vec![1],
            me: 1,
            refusing_since: None,
            awaiting_leader,
        }
    }

    /// A quiet group whose Raft node contradicts its quiet state wakes, and only such a group:
    /// a quiet leader that no longer leads (openraft stepped it down on a higher vote in an
    /// answer) would otherwise keep its timers stopped for good.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_group_its_raft_node_contradicts_wakes() {
        let root = tempfile::tempdir().unwrap();
        let flush = FlushWorker::start("diverged").unwrap();
        let host = ReplicaHost {
            node_id: 1,
            logs: flush.handle().into(),
            peers: Default::default(),
            groups: RaftGroups::default(),
            raft_config: RaftTimers::default().raft_config("test").unwrap(),
        };
        let replica = PartitionReplica::start(&host, 7, root.path(), LogConfig::default(), None)
            .await
            .unwrap();
        replica
            .bootstrap([(1, "127.0.0.1:1".to_string())].into())
            .await
            .unwrap();
        let quiescence = host.groups.quiescence();
        let raft = quiescence.hosted().get(7).expect("hosted");
        raft.live()
            .await
            .unwrap()
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.state == openraft::ServerState::Leader, "leads")
            .await
            .unwrap();

        // Quiet as what it is, the leader: left alone.
        assert!(quiescence.quiesce(7, quiet_state(true, 1, false), &raft, None, &[]));
        assert_eq!(quiescence.wake_diverged(), 0);
        assert!(quiescence.is_quiet(7));

        // Awaiting a leader: knows none by design, left alone.
        assert!(quiescence.quiesce(7, quiet_state(false, 2, true), &raft, None, &[]));
        assert_eq!(quiescence.wake_diverged(), 0);

        // Quiet as a follower of broker 2, which its node does not follow: it wakes, timers on.
        assert!(quiescence.quiesce(7, quiet_state(false, 2, false), &raft, None, &[]));
        assert_eq!(quiescence.wake_diverged(), 1);
        assert!(!quiescence.is_quiet(7));
        assert_eq!(quiescence.wake_diverged(), 0, "woken once");

        // Awaiting a leader, an append with entries from broker 2's leadership (openraft's own
        // retry reaching a restarted replica): it keeps awaiting, timers stopped, following
        // broker 2 — whose death would now wake it. A heartbeat is left to settle it.
        assert!(quiescence.quiesce(7, quiet_state(false, 3, true), &raft, None, &[]));
        let from_2 = serde_json::to_vec(&Vote::new_committed(5, 2)).unwrap();
        assert!(quiescence.append_arrives(7, &raft, true, &from_2).is_none());
        {
            let quiet = quiescence.quiet.lock().unwrap();
            let state = &quiet.quiet[&7];
            assert!(state.awaiting_leader && state.leader == 2, "{state:?}");
        }
        let heartbeat = quiescence.append_arrives(7, &raft, false, &from_2);
        assert!(heartbeat.is_some_and(|guard| guard.awaited_heartbeat.is_some()));
        // (Dropped unsettled: the heartbeat did not find it in step, so it woke.)
        assert!(!quiescence.quiet.lock().unwrap().quiet.contains_key(&7));
        replica.shutdown().await.unwrap();
    }
}
