//! The leader side of quiescence: every scan interval, the groups led here that have been idle
//! long enough, with every follower holding (and having applied) the leader's last entry, are
//! proposed to their followers in one `Quiesce` RPC per peer; a group whose followers all
//! agreed stops its timers. A follower on a broker the failure detector holds dead is not
//! waited for, as long as the others make a majority with the leader: otherwise every group
//! with a replica on a dead broker stayed awake until it came back — at 10,000 partitions, a
//! third of them, more timers than two brokers' cores could run (see [`idle_leader_state`]).
//! (The follower's side is `Quiescence::quiesce_as_follower`, its rule
//! [`follower_agrees`](super::rules::follower_agrees).)

use super::groups::Quiescence;
use super::liveness::ping_peer;
use super::Quiet;
use crate::replication::raft_node::PartitionRaftNode;
use crate::replication::types::{LogId, Vote};
use crate::replication::PeerChannels;
use bytes::Bytes;
use proto::raft_v1::raft_client::RaftClient;
use proto::raft_v1::{QuiesceGroup, QuiesceRequest};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// How often the leader looks for groups to quiesce.
const SCAN_INTERVAL: Duration = Duration::from_millis(250);
/// How often the quiet groups are checked against their Raft nodes
/// ([`Quiescence::wake_diverged`]): every quiet group, so less often than the scan.
const DIVERGENCE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for a follower's answer to a quiesce request.
const QUIESCE_RPC_TIMEOUT: Duration = Duration::from_secs(1);

/// What the leader-side scan needs of a group to quiesce it.
struct Proposal {
    group: u64,
    raft: PartitionRaftNode,
    vote: Vote,
    last: LogId,
    voters: Vec<u64>,
    activity: u64,
}

/// A group led here as the scan last saw it: its last entry, since when that has been the last,
/// and the write requests it had seen then.
struct IdleSince {
    last: LogId,
    since: Instant,
    activity: u64,
}

/// Settings of the quiescer.
#[derive(Debug, Clone)]
pub struct QuiesceConfig {
    /// This broker's node id.
    pub node_id: u64,
    /// Every other broker: node id → Raft address. Brokers join while it runs (their ping
    /// loops start as they appear); one that leaves keeps its loop until the broker restarts.
    pub peers: tokio::sync::watch::Receiver<BTreeMap<u64, String>>,
    /// How long a group stays idle before its leader quiesces it.
    pub quiesce_after: Duration,
    /// A peer silent this long is dead: the quiet groups it led wake and elect.
    pub dead_after: Duration,
    /// How long the followers of a dead leader that do not campaign first wait before their
    /// election timers run (the election timeout's upper bound).
    pub resume_delay: Duration,
    /// Groups never quiesced (the controller).
    pub never: HashSet<u64>,
    /// A follower quiet this long puts its Raft node to sleep (`None`: never). See
    /// `raft_node`.
    pub dormant_after: Option<Duration>,
}

/// Starts the ping loops (one per peer, as peers appear) and the leader-side scan; they run for
/// the life of the runtime, or until the returned handles are aborted.
pub fn spawn(groups: Quiescence, channels: PeerChannels, config: QuiesceConfig) -> Vec<tokio::task::JoinHandle<()>> {
    groups.enable_quiescence(config.resume_delay);
    let mut tasks = vec![tokio::spawn(ping_every_peer(
        groups.clone(),
        channels.clone(),
        config.clone(),
    ))];
    if let Some(after) = config.dormant_after {
        tasks.push(tokio::spawn(put_quiet_groups_to_sleep(groups.clone(), after)));
    }
    tasks.push(tokio::spawn(scan(groups, channels, config)));
    tasks
}

/// How often quiet followers are looked for to put to sleep.
const DORMANCY_SWEEP_INTERVAL: Duration = Duration::from_secs(2);

/// Every [`DORMANCY_SWEEP_INTERVAL`], puts to sleep the Raft nodes of the groups that have been
/// quiet here under a known leader for `after`, seen so at every sweep since, and unused as
/// long (see `raft_node`): one at a time, as each hands its state machine over and stops its
/// instance.
async fn put_quiet_groups_to_sleep(groups: Quiescence, after: Duration) {
    let mut quiet_since: HashMap<u64, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(DORMANCY_SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let settled = groups.settled_quiet_groups();
        let now = Instant::now();
        quiet_since.retain(|group, _| settled.contains(group));
        let due: Vec<u64> = settled
            .into_iter()
            .filter(|group| now.duration_since(*quiet_since.entry(*group).or_insert(now)) >= after)
            .collect();
        for group in due {
            let Some(node) = groups.hosted().get(group) else {
                continue;
            };
            // (Checked again: it may have woken since the list was made. A wake from here on
            // waits for the node to be asleep, then builds it again.)
            if node.is_dormant() || !groups.is_settled_quiet(group) {
                continue;
            }
            if node.go_dormant(after).await {
                tracing::trace!(group, "quiet group's Raft node asleep");
            }
        }
    }
}

/// Keeps one ping loop per peer, starting one for each peer that joins. The loops belong to
/// this task: aborting it stops them.
async fn ping_every_peer(groups: Quiescence, channels: PeerChannels, config: QuiesceConfig) {
    let mut peers = config.peers.clone();
    let mut pinging: HashMap<u64, String> = HashMap::new();
    let mut loops = tokio::task::JoinSet::new();
    loop {
        let current = peers.borrow_and_update().clone();
        for (node, address) in current {
            if pinging.get(&node) == Some(&address) {
                continue;
            }
            // A peer that moved to another address is pinged there too.
            pinging.insert(node, address.clone());
            loops.spawn(ping_peer(
                groups.clone(),
                channels.clone(),
                config.node_id,
                node,
                address,
                config.dead_after,
            ));
        }
        if peers.changed().await.is_err() {
            // The sender is gone: the peers are final.
            std::future::pending::<()>().await;
        }
    }
}

/// The leader side: every scan interval, quiesces the groups led here that have been idle for
/// `quiesce_after` with every follower holding (and having applied) the leader's last entry —
/// every follower not on a dead broker (see [`idle_leader_state`]).
async fn scan(groups: Quiescence, channels: PeerChannels, config: QuiesceConfig) {
    let mut idle_since: HashMap<u64, IdleSince> = HashMap::new();
    let mut ticker = tokio::time::interval(SCAN_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_divergence_check = Instant::now();
    loop {
        ticker.tick().await;
        if last_divergence_check.elapsed() >= DIVERGENCE_CHECK_INTERVAL {
            last_divergence_check = Instant::now();
            groups.wake_diverged();
        }
        let mut proposals = Vec::new();
        let mut awake = HashSet::new();
        // Only the awake groups: with thousands of quiet ones, visiting each every scan was most
        // of an idle broker's CPU.
        for (group, raft) in groups.awake_groups() {
            awake.insert(group);
            if config.never.contains(&group) || groups.hosted().votes_held(group) {
                idle_since.remove(&group);
                continue;
            }
            let Some((last, voters, vote)) = idle_leader_state(&raft, |node| groups.liveness().is_dead(node)) else {
                idle_since.remove(&group);
                continue;
            };
            let activity = groups.activity(group);
            let seen = IdleSince {
                last,
                since: Instant::now(),
                activity,
            };
            let entry = idle_since.entry(group).or_insert(seen);
            if entry.last != last || entry.activity != activity {
                *entry = IdleSince {
                    last,
                    since: Instant::now(),
                    activity,
                };
                continue;
            }
            if entry.since.elapsed() < config.quiesce_after {
                continue;
            }
            proposals.push(Proposal {
                group,
                raft,
                vote,
                last,
                voters,
                activity,
            });
        }
        idle_since.retain(|group, _| awake.contains(group));
        if proposals.is_empty() {
            continue;
        }
        let accepted = ask_followers(&channels, &config, &proposals).await;
        for proposal in proposals {
            // A dead follower's broker that did not answer at all is not waited for (its
            // return wakes the group: `Quiescence::on_peer_event`); one that answered counts.
            let mut waived = Vec::new();
            let all_agreed = proposal
                .voters
                .iter()
                .filter(|v| **v != config.node_id)
                .all(|v| match accepted.get(v) {
                    Some(quiet) => quiet.contains(&proposal.group),
                    None if groups.liveness().is_dead(*v) => {
                        waived.push(*v);
                        true
                    }
                    None => false,
                });
            if !all_agreed {
                continue;
            }
            let still_idle = idle_leader_state(&proposal.raft, |node| groups.liveness().is_dead(node))
                .is_some_and(|(last, _, vote)| last == proposal.last && vote == proposal.vote);
            let Ok(vote_json) = serde_json::to_vec(&proposal.vote) else {
                continue;
            };
            if still_idle {
                let quiet = Quiet {
                    leader: config.node_id,
                    leading: true,
                    vote_json: vote_json.into(),
                    voters: proposal.voters,
                    me: config.node_id,
                    refusing_since: None,
                    awaiting_leader: false,
                };
                if groups.quiesce(proposal.group, quiet, &proposal.raft, Some(proposal.activity), &waived) {
                    idle_since.remove(&proposal.group);
                    tracing::debug!(group = proposal.group, "quiesced");
                }
            }
        }
    }
}

/// If this replica leads a group of two or more voters (no learners) whose every voter has
/// applied its last entry — every voter whose broker `is_dead` does not say is dead, if with
/// the leader they are a majority —: that entry, the voters and the leader's vote. (Run for
/// every group led here at every scan: nothing is serialized until a group is proposed.)
///
/// Why quiesce without a dead voter: safety never depends on quiescence (it only stops
/// timers), and the group would otherwise tick for as long as that broker is down. When the
/// broker is back its pings wake the group (after silence) or have it reach the restarted
/// replica (after a restart), which then catches up as usual.
fn idle_leader_state(raft: &PartitionRaftNode, is_dead: impl Fn(u64) -> bool) -> Option<(LogId, Vec<u64>, Vote)> {
    raft.with_metrics(|metrics| idle_leader_state_of(metrics, is_dead))
}

/// [`idle_leader_state`] from `metrics`.
fn idle_leader_state_of(
    metrics: &openraft::RaftMetrics<crate::replication::types::PartitionRaft>,
    is_dead: impl Fn(u64) -> bool,
) -> Option<(LogId, Vec<u64>, Vote)> {
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
    let mut in_step = 1;
    for follower in voters.iter().filter(|v| **v != metrics.id) {
        if replication.get(follower).cloned().flatten().as_ref() == Some(&last) {
            in_step += 1;
        } else if !is_dead(*follower) {
            return None;
        }
    }
    (in_step * 2 > voters.len()).then_some((last, voters, metrics.vote))
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
        let (Ok(last_json), Ok(vote_json)) = (serde_json::to_vec(&proposal.last), serde_json::to_vec(&proposal.vote))
        else {
            continue;
        };
        let (last_json, vote_json): (Bytes, Bytes) = (last_json.into(), vote_json.into());
        for voter in proposal.voters.iter().filter(|v| **v != config.node_id) {
            by_peer.entry(*voter).or_default().push(QuiesceGroup {
                group: proposal.group,
                vote_json: vote_json.clone(),
                last_json: last_json.clone(),
            });
        }
    }
    let asks = by_peer.into_iter().map(|(peer, groups)| async move {
        let address = config.peers.borrow().get(&peer).cloned()?;
        let channel = channels.channel(&address).ok()?;
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
