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
}

/// Whom to wake after a peer event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerEvent {
    /// First heard of, or a new incarnation: it restarted (or this broker did).
    Restarted,
    /// Heard from again after it was declared dead.
    BackAlive,
}

#[derive(Debug)]
struct PeerState {
    heard_at: Instant,
    incarnation: u64,
    dead: bool,
}

/// When each peer broker was last heard from (a ping it sent or answered), and its
/// incarnation. Shared by the ping loops, the `Ping` handler and the vote rule.
#[derive(Clone, Default)]
pub struct PeerLiveness {
    peers: Arc<Mutex<HashMap<u64, PeerState>>>,
}

impl PeerLiveness {
    /// Records that `node` (running as `incarnation`) was heard from now; returns what changed.
    pub(crate) fn heard(&self, node: u64, incarnation: u64) -> Option<PeerEvent> {
        let mut peers = self.peers.lock().expect("peer liveness");
        let now = Instant::now();
        match peers.get_mut(&node) {
            None => {
                peers.insert(
                    node,
                    PeerState {
                        heard_at: now,
                        incarnation,
                        dead: false,
                    },
                );
                Some(PeerEvent::Restarted)
            }
            Some(state) => {
                state.heard_at = now;
                let event = if state.incarnation != incarnation {
                    Some(PeerEvent::Restarted)
                } else if state.dead {
                    Some(PeerEvent::BackAlive)
                } else {
                    None
                };
                state.incarnation = incarnation;
                state.dead = false;
                event
            }
        }
    }

    /// How long ago `node` was last heard from, if ever.
    pub fn since_heard(&self, node: u64) -> Option<Duration> {
        let peers = self.peers.lock().expect("peer liveness");
        peers.get(&node).map(|state| state.heard_at.elapsed())
    }

    /// Whether `node` was heard from within `window`.
    pub fn heard_within(&self, node: u64, window: Duration) -> bool {
        self.since_heard(node).is_some_and(|ago| ago <= window)
    }

    /// Declares `node` dead if it has been silent for `dead_after`; true only on the transition.
    fn declare_dead_if_silent(&self, node: u64, dead_after: Duration) -> bool {
        let mut peers = self.peers.lock().expect("peer liveness");
        match peers.get_mut(&node) {
            Some(state) if !state.dead && state.heard_at.elapsed() >= dead_after => {
                state.dead = true;
                true
            }
            _ => false,
        }
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
    /// Groups never quiesced (the controller).
    pub never: HashSet<u64>,
}

/// Starts the ping loops (one per peer) and the leader-side scan; they run for the life of the
/// runtime, or until the returned handles are aborted.
pub fn spawn(groups: RaftGroups, channels: PeerChannels, config: QuiesceConfig) -> Vec<tokio::task::JoinHandle<()>> {
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
                if let Some(event) = groups.liveness().heard(peer, answer.into_inner().incarnation) {
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
        assert_eq!(liveness.heard(2, 7), Some(PeerEvent::Restarted), "first heard of");
        assert_eq!(liveness.heard(2, 7), None);
        assert!(!liveness.declare_dead_if_silent(2, Duration::from_secs(60)));
        assert!(liveness.declare_dead_if_silent(2, Duration::ZERO));
        assert!(
            !liveness.declare_dead_if_silent(2, Duration::ZERO),
            "only the transition"
        );
        assert_eq!(liveness.heard(2, 7), Some(PeerEvent::BackAlive));
        assert_eq!(liveness.heard(2, 8), Some(PeerEvent::Restarted));
        assert!(liveness.heard_within(2, Duration::from_secs(1)));
        assert!(!liveness.heard_within(3, Duration::from_secs(1)), "never heard of");
    }
}
