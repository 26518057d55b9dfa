//! Quiescence: idle partition groups stop their Raft timers, and one failure detector per peer
//! broker stands in for their heartbeats.
//!
//! A Raft group ticks — election timer on followers, heartbeats from the leader — whether or not
//! anybody writes; with thousands of partitions that ticking is nearly all of an idle broker's
//! CPU. A leader whose group has been idle for a while, and whose followers have applied every
//! entry it has, asks them to quiesce (the `Quiesce` RPC, batched per peer); once all of them
//! agreed it stops its own timers too. A quiet group costs nothing until:
//!
//! - **a client touches it** (produce, fetch, ListOffsets, leader transfer): the leader wakes
//!   and heartbeats at once; requests wait for a quorum to answer that heartbeat (the lease)
//!   before being served, so a deposed leader cannot answer from a quiet group. An append that
//!   carries entries wakes each follower it reaches.
//! - **its leader's broker dies**: every broker pings each peer ([`PeerLiveness`], the `Ping`
//!   RPC). A follower that has not heard from a leader's broker for the dead-after time wakes
//!   the groups that broker led; one follower per group — the next voter after the leader —
//!   campaigns at once (with Pre-Vote), the others keep their normal election timers.
//! - **a peer restarts or comes back**: a new incarnation in its pings, or pings after silence,
//!   wakes the groups led here that it belongs to (so it hears from their leaders), and a
//!   restart also counts as the death of the leader it was.
//! - **somebody campaigns**: a vote request for a quiet group whose leader is alive is refused
//!   (and wakes the group if it is led here, so the candidate hears from its leader); if the
//!   leader looks dead the group wakes and votes normally.
//!
//! Safety does not depend on any of this: quiescence only stops timers, every vote and append
//! still goes through openraft's rules. What it trades is how a quiet group notices a dead
//! leader — per broker instead of per group — and one round trip on the first request after
//! idling.

use super::raft_service::{PartitionRaftNode, RaftGroups};
use super::types::LogId;
use super::PeerChannels;
use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use proto::raft_v1::raft_client::RaftClient;
use proto::raft_v1::{PingRequest, QuiesceGroup, QuiesceRequest};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// How often a broker pings each peer.
pub const PING_INTERVAL: Duration = Duration::from_millis(100);
/// A leader heard from this recently is alive for the vote rule: a quiet group refuses
/// candidates while its leader is. Shorter than the dead-after time, so that once a follower
/// has declared a leader dead (and campaigns), the other followers no longer refuse it.
pub const ALIVE_WINDOW: Duration = Duration::from_millis(250);
/// How long a quiet follower refuses candidates for a leader it hears pings from but no append:
/// a leader alive enough to ping but not reaching this group (its core stopped, a link fault
/// the pings do not share) must not keep the group leaderless. A live leader woken by the
/// candidate reaches the group well within it.
const REFUSAL_LIMIT: Duration = Duration::from_millis(750);
/// How often the leader looks for groups to quiesce.
const SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait for a follower's answer to a quiesce request.
const QUIESCE_RPC_TIMEOUT: Duration = Duration::from_secs(1);

/// A quiesced group as one replica sees it.
#[derive(Debug, Clone)]
pub(crate) struct Quiet {
    /// The leader the group was quiesced under.
    pub leader: u64,
    /// Whether this replica is that leader.
    pub leading: bool,
    /// The leader's vote as appends carry it (JSON): an append with another vote comes from a
    /// newer leader and wakes the group.
    pub vote_json: Bytes,
    /// The group's voters.
    pub voters: Vec<u64>,
    /// Whether this follower campaigns first when the leader dies (the voter after the leader).
    pub campaigns_first: bool,
    /// When this follower first refused a candidate because the leader looked alive, with no
    /// append from the leader since: refusals stop a while after (see `REFUSAL_LIMIT`).
    pub refusing_since: Option<Instant>,
}

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

/// Whom to wake after a peer event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerEvent {
    /// First heard of, or a new incarnation: it restarted (or this broker did).
    Restarted,
    /// Heard from again after it was declared dead.
    BackAlive,
}

/// Which way a sign of life came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contact {
    /// The peer pinged this broker: its links to us — the way its appends come — work.
    PingedUs,
    /// The peer answered this broker's ping: our links to it work.
    Answered,
}

#[derive(Debug)]
struct PeerState {
    known_since: Instant,
    pinged_us_at: Option<Instant>,
    answered_at: Option<Instant>,
    incarnation: u64,
    /// Declared dead: it has not pinged us for the dead-after time.
    dead: bool,
}

/// When each peer broker last pinged this one and last answered its pings, and its
/// incarnation. Shared by the ping loops, the `Ping` handler, the vote rule and the ISR.
///
/// Whether a peer *as a leader* is alive is judged by its pings reaching us only: they travel
/// its connection to us, like its appends. A peer we can reach but which cannot reach us is
/// dead as a leader here — so a one-way cut from a leader to a follower lets that follower
/// take part in electing another leader, as its election timer would have.
#[derive(Clone, Default)]
pub struct PeerLiveness {
    peers: Arc<Mutex<HashMap<u64, PeerState>>>,
}

impl PeerLiveness {
    /// Records a sign of life from `node` (running as `incarnation`); returns what changed.
    pub(crate) fn heard(&self, node: u64, incarnation: u64, contact: Contact) -> Option<PeerEvent> {
        let mut peers = self.peers.lock().expect("peer liveness");
        let now = Instant::now();
        let first = !peers.contains_key(&node);
        let state = peers.entry(node).or_insert(PeerState {
            known_since: now,
            pinged_us_at: None,
            answered_at: None,
            incarnation,
            dead: false,
        });
        match contact {
            Contact::PingedUs => state.pinged_us_at = Some(now),
            Contact::Answered => state.answered_at = Some(now),
        }
        let event = if first || state.incarnation != incarnation {
            Some(PeerEvent::Restarted)
        } else if state.dead && contact == Contact::PingedUs {
            Some(PeerEvent::BackAlive)
        } else {
            None
        };
        state.incarnation = incarnation;
        if contact == Contact::PingedUs || event == Some(PeerEvent::Restarted) {
            state.dead = false;
        }
        event
    }

    /// How long ago `node` last answered this broker's ping, if ever: how fresh our links to it
    /// are (the ISR of a quiet leader).
    pub fn since_answered(&self, node: u64) -> Option<Duration> {
        let peers = self.peers.lock().expect("peer liveness");
        peers.get(&node)?.answered_at.map(|at| at.elapsed())
    }

    /// Whether `node` pinged this broker within `window`: alive as a leader of ours.
    pub fn pinged_us_within(&self, node: u64, window: Duration) -> bool {
        let peers = self.peers.lock().expect("peer liveness");
        peers
            .get(&node)
            .and_then(|state| state.pinged_us_at)
            .is_some_and(|at| at.elapsed() <= window)
    }

    /// Declares `node` dead if it has not pinged us for `dead_after` (counting from when it
    /// became known if it never did); true only on the transition.
    fn declare_dead_if_silent(&self, node: u64, dead_after: Duration) -> bool {
        let mut peers = self.peers.lock().expect("peer liveness");
        match peers.get_mut(&node) {
            Some(state) if !state.dead && state.pinged_us_at.unwrap_or(state.known_since).elapsed() >= dead_after => {
                state.dead = true;
                true
            }
            _ => false,
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
            tokio::spawn(async move {
                let _ = raft.trigger().heartbeat().await;
            });
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
        rpc: &openraft::raft::VoteRequest<super::types::PartitionRaft>,
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

/// A fresh incarnation number for a broker process (or an in-process test node).
pub(crate) fn new_incarnation() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The voter that campaigns first when `leader` dies: the next one after it in id order.
pub(crate) fn successor(voters: &[u64], leader: u64) -> Option<u64> {
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    let position = sorted.iter().position(|v| *v == leader)?;
    let next = sorted[(position + 1) % sorted.len()];
    (next != leader).then_some(next)
}

/// What the leader-side scan needs of a group to quiesce it.
struct Proposal {
    group: u64,
    raft: PartitionRaftNode,
    vote_json: Bytes,
    last: LogId,
    voters: Vec<u64>,
    activity: u64,
}

/// Settings of the quiescer.
#[derive(Debug, Clone)]
pub struct QuiesceConfig {
    /// This broker's node id.
    pub node_id: u64,
    /// Every other broker: node id → Raft address.
    pub peers: BTreeMap<u64, String>,
    /// How long a group stays idle before its leader quiesces it.
    pub quiesce_after: Duration,
    /// A peer silent this long is dead: the quiet groups it led wake and elect.
    pub dead_after: Duration,
    /// How long the followers of a dead leader that do not campaign first wait before their
    /// election timers run (the election timeout's upper bound).
    pub resume_delay: Duration,
    /// Groups never quiesced (the controller).
    pub never: HashSet<u64>,
}

/// Starts the ping loops (one per peer) and the leader-side scan; they run for the life of the
/// runtime, or until the returned handles are aborted.
pub fn spawn(groups: RaftGroups, channels: PeerChannels, config: QuiesceConfig) -> Vec<tokio::task::JoinHandle<()>> {
    groups.enable_quiescence(config.resume_delay);
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = config
        .peers
        .iter()
        .map(|(node, address)| {
            tokio::spawn(ping_peer(
                groups.clone(),
                channels.clone(),
                config.node_id,
                *node,
                address.clone(),
                config.dead_after,
            ))
        })
        .collect();
    tasks.push(tokio::spawn(scan(groups, channels, config)));
    tasks
}

async fn ping_peer(
    groups: RaftGroups,
    channels: PeerChannels,
    me: u64,
    peer: u64,
    address: String,
    dead_after: Duration,
) {
    let mut ticker = tokio::time::interval(PING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Ok(channel) = channels.channel(&address) {
            let mut request = tonic::Request::new(PingRequest {
                node: me,
                incarnation: groups.incarnation(),
            });
            request.set_timeout(dead_after);
            if let Ok(answer) = RaftClient::new(channel).ping(request).await {
                let incarnation = answer.into_inner().incarnation;
                if let Some(event) = groups.liveness().heard(peer, incarnation, Contact::Answered) {
                    groups.on_peer_event(peer, event);
                }
            }
        }
        if groups.liveness().declare_dead_if_silent(peer, dead_after) {
            tracing::info!(peer, "peer broker silent: waking the quiet groups it led");
            groups.on_leader_dead(peer);
        }
    }
}

/// The leader side: every scan interval, quiesces the groups led here that have been idle for
/// `quiesce_after` with every follower holding (and having applied) the leader's last entry.
async fn scan(groups: RaftGroups, channels: PeerChannels, config: QuiesceConfig) {
    // Per group: the last entry seen and since when it has been the last.
    let mut idle_since: HashMap<u64, (LogId, Instant, u64)> = HashMap::new();
    let mut ticker = tokio::time::interval(SCAN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let mut proposals = Vec::new();
        let mut hosted = HashSet::new();
        for (group, raft) in groups.all() {
            hosted.insert(group);
            if config.never.contains(&group) || groups.is_quiet(group) || groups.votes_held(group) {
                idle_since.remove(&group);
                continue;
            }
            let Some((last, voters, vote_json)) = idle_leader_state(&raft) else {
                idle_since.remove(&group);
                continue;
            };
            let activity = groups.activity(group);
            let entry = idle_since.entry(group).or_insert((last, Instant::now(), activity));
            if entry.0 != last || entry.2 != activity {
                *entry = (last, Instant::now(), activity);
                continue;
            }
            if entry.1.elapsed() < config.quiesce_after {
                continue;
            }
            proposals.push(Proposal {
                group,
                raft,
                vote_json,
                last,
                voters,
                activity,
            });
        }
        idle_since.retain(|group, _| hosted.contains(group));
        if proposals.is_empty() {
            continue;
        }
        let accepted = ask_followers(&channels, &config, &proposals).await;
        for proposal in proposals {
            let all_agreed = proposal
                .voters
                .iter()
                .filter(|v| **v != config.node_id)
                .all(|v| accepted.get(v).is_some_and(|quiet| quiet.contains(&proposal.group)));
            if !all_agreed {
                continue;
            }
            let still_idle = idle_leader_state(&proposal.raft)
                .is_some_and(|(last, _, vote_json)| last == proposal.last && vote_json == proposal.vote_json);
            if still_idle {
                let quiet = Quiet {
                    leader: config.node_id,
                    leading: true,
                    vote_json: proposal.vote_json,
                    voters: proposal.voters,
                    campaigns_first: false,
                    refusing_since: None,
                };
                if groups.quiesce(proposal.group, quiet, &proposal.raft, Some(proposal.activity)) {
                    idle_since.remove(&proposal.group);
                    tracing::debug!(group = proposal.group, "quiesced");
                }
            }
        }
    }
}

/// If this replica leads a group of two or more voters (no learners) whose every voter has
/// applied its last entry: that entry, the voters and the leader's vote as JSON.
fn idle_leader_state(raft: &PartitionRaftNode) -> Option<(LogId, Vec<u64>, Bytes)> {
    let receiver = raft.metrics();
    let metrics = receiver.borrow_watched();
    if metrics.state != openraft::ServerState::Leader || !metrics.vote.committed {
        return None;
    }
    let membership = metrics.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    if voters.len() < 2 || membership.nodes().count() != voters.len() {
        return None;
    }
    let last = metrics.last_applied?;
    // Applied, so committed. A follower knows the commit once it has applied the entry too; it
    // checks that on its side, the leader checks that every voter matched the entry.
    if metrics.last_log_index != Some(last.index) {
        return None;
    }
    let replication = metrics.replication.as_ref()?;
    let all_matched = voters
        .iter()
        .filter(|v| **v != metrics.id)
        .all(|v| replication.get(v).cloned().flatten().as_ref() == Some(&last));
    if !all_matched {
        return None;
    }
    let vote_json = serde_json::to_vec(&metrics.vote).ok()?;
    Some((last, voters, vote_json.into()))
}

/// Sends each follower one `Quiesce` request for all its groups; returns, per follower, the
/// groups it quiesced.
async fn ask_followers(
    channels: &PeerChannels,
    config: &QuiesceConfig,
    proposals: &[Proposal],
) -> HashMap<u64, HashSet<u64>> {
    let mut by_peer: BTreeMap<u64, Vec<QuiesceGroup>> = BTreeMap::new();
    for proposal in proposals {
        let last_json: Bytes = match serde_json::to_vec(&proposal.last) {
            Ok(json) => json.into(),
            Err(_) => continue,
        };
        for voter in proposal.voters.iter().filter(|v| **v != config.node_id) {
            by_peer.entry(*voter).or_default().push(QuiesceGroup {
                group: proposal.group,
                vote_json: proposal.vote_json.clone(),
                last_json: last_json.clone(),
            });
        }
    }
    let asks = by_peer.into_iter().map(|(peer, groups)| async move {
        let address = config.peers.get(&peer)?;
        let channel = channels.channel(address).ok()?;
        let mut request = tonic::Request::new(QuiesceRequest {
            leader: config.node_id,
            groups,
        });
        request.set_timeout(QUIESCE_RPC_TIMEOUT);
        let answer = RaftClient::new(channel).quiesce(request).await.ok()?;
        Some((peer, answer.into_inner().quiet.into_iter().collect::<HashSet<u64>>()))
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The follower side of a quiesce request for one group: agrees if this replica follows the
/// same leader under the same vote, holds exactly the leader's last entry and has applied it.
pub(crate) fn follower_agrees(
    raft: &PartitionRaftNode,
    leader: u64,
    vote_json: &[u8],
    last_json: &[u8],
) -> Option<(Vec<u64>, u64)> {
    let vote: super::types::Vote = serde_json::from_slice(vote_json).ok()?;
    let last: LogId = serde_json::from_slice(last_json).ok()?;
    let receiver = raft.metrics();
    let metrics = receiver.borrow_watched();
    let agrees = metrics.state == openraft::ServerState::Follower
        && metrics.vote == vote
        && metrics.vote.committed
        && metrics.current_leader == Some(leader)
        && metrics.last_log_index == Some(last.index)
        && metrics.last_applied.as_ref() == Some(&last);
    agrees.then(|| (metrics.membership_config.membership().voter_ids().collect(), metrics.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_voter_after_the_leader_campaigns_first() {
        assert_eq!(successor(&[3, 1, 2], 1), Some(2));
        assert_eq!(successor(&[3, 1, 2], 3), Some(1), "wraps around");
        assert_eq!(successor(&[1], 1), None, "nobody else");
        assert_eq!(successor(&[1, 2], 5), None, "the leader is not a voter");
    }

    #[tokio::test]
    async fn a_new_incarnation_or_a_return_from_silence_is_reported_once() {
        let liveness = PeerLiveness::default();
        assert_eq!(
            liveness.heard(2, 7, Contact::Answered),
            Some(PeerEvent::Restarted),
            "first heard of"
        );
        assert_eq!(liveness.heard(2, 7, Contact::PingedUs), None);
        assert!(!liveness.declare_dead_if_silent(2, Duration::from_secs(60)));
        assert!(liveness.declare_dead_if_silent(2, Duration::ZERO));
        assert!(
            !liveness.declare_dead_if_silent(2, Duration::ZERO),
            "only the transition"
        );
        assert_eq!(
            liveness.heard(2, 7, Contact::Answered),
            None,
            "answers do not revive a leader whose pings do not reach us"
        );
        assert_eq!(liveness.heard(2, 7, Contact::PingedUs), Some(PeerEvent::BackAlive));
        assert_eq!(liveness.heard(2, 8, Contact::Answered), Some(PeerEvent::Restarted));
        assert!(liveness.pinged_us_within(2, Duration::from_secs(1)));
        assert!(liveness.since_answered(2).is_some());
        assert!(!liveness.pinged_us_within(3, Duration::from_secs(1)), "never heard of");
    }

    #[tokio::test]
    async fn a_peer_that_only_answers_is_dead_as_a_leader() {
        let liveness = PeerLiveness::default();
        liveness.heard(2, 7, Contact::Answered);
        assert!(!liveness.pinged_us_within(2, Duration::from_secs(1)));
        assert!(liveness.declare_dead_if_silent(2, Duration::ZERO));
    }
}
