//! The server side of the Raft transport: routes `raft.v1` calls to the local Raft group they
//! name. Unknown groups get NOT_FOUND, undecodable messages INVALID_ARGUMENT, a shut-down group
//! UNAVAILABLE — all of which the sending leader treats as a failed RPC and retries later.

use super::quiesce::{self, PeerEvent, PeerLiveness, Quiet};
use super::state_machine::PartitionStateMachine;
use super::types::LogId;
use super::types::PartitionRaft;
use super::wire::decode_append;
use crate::storage::{LostAcknowledged, StoredVote};
use proto::raft_v1::raft_server::{Raft as RaftRpc, RaftServer};
use proto::raft_v1::{
    AppendBatchRequest, AppendBatchResponse, AppendRequest, BatchItemResponse, JsonRequest, JsonResponse, PingRequest,
    PingResponse, QuiesceRequest, QuiesceResponse, SnapshotRequest,
};
use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};
use tonic::{Request, Response, Status};

/// A running partition Raft node.
pub type PartitionRaftNode = openraft::Raft<PartitionRaft, PartitionStateMachine>;

/// The Raft groups hosted by this broker, by group id.
#[derive(Clone)]
pub struct RaftGroups {
    groups: Arc<RwLock<HashMap<u64, PartitionRaftNode>>>,
    /// Groups whose local replica lost entries it had acknowledged: until the replica has those
    /// entries back they grant votes only to candidates their rule allows (see `CatchUpRule`).
    votes_held: Arc<RwLock<HashMap<u64, CatchUpRule>>>,
    /// Which groups are quiet, and a count of client requests per group (see `quiesce`). One
    /// lock for both: a request and a quiesce decision on a group are ordered by it.
    quiet: Arc<Mutex<QuietGroups>>,
    /// When each peer broker was last heard from.
    liveness: PeerLiveness,
    /// This process's incarnation, sent in pings.
    incarnation: u64,
}

#[derive(Default)]
struct QuietGroups {
    quiet: HashMap<u64, Quiet>,
    activity: HashMap<u64, u64>,
}

impl Default for RaftGroups {
    fn default() -> Self {
        RaftGroups {
            groups: Arc::default(),
            votes_held: Arc::default(),
            quiet: Arc::default(),
            liveness: PeerLiveness::default(),
            incarnation: quiesce::new_incarnation(),
        }
    }
}

impl RaftGroups {
    /// Makes `raft` reachable as group `group`.
    pub fn insert(&self, group: u64, raft: PartitionRaftNode) {
        self.groups.write().expect("raft group map").insert(group, raft);
    }

    /// Stops routing to group `group`, returning its node.
    pub fn remove(&self, group: u64) -> Option<PartitionRaftNode> {
        self.release_votes(group);
        {
            let mut quiet = self.quiet.lock().expect("quiet groups");
            quiet.quiet.remove(&group);
            quiet.activity.remove(&group);
        }
        self.groups.write().expect("raft group map").remove(&group)
    }

    /// Refuses the vote requests of `group` that `rule` does not allow, until
    /// [`release_votes`](Self::release_votes).
    pub(crate) fn hold_votes(&self, group: u64, rule: CatchUpRule) {
        self.votes_held.write().expect("held votes").insert(group, rule);
    }

    /// Lets `group` vote again.
    pub fn release_votes(&self, group: u64) {
        self.votes_held.write().expect("held votes").remove(&group);
    }

    /// Whether `group` refuses votes now.
    pub fn votes_held(&self, group: u64) -> bool {
        self.votes_held.read().expect("held votes").contains_key(&group)
    }

    /// The node of group `group`, if hosted here.
    pub fn get(&self, group: u64) -> Option<PartitionRaftNode> {
        self.groups.read().expect("raft group map").get(&group).cloned()
    }

    /// Every hosted group with its node.
    pub(crate) fn all(&self) -> Vec<(u64, PartitionRaftNode)> {
        let groups = self.groups.read().expect("raft group map");
        groups.iter().map(|(id, raft)| (*id, raft.clone())).collect()
    }

    /// When each peer broker was last heard from.
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

    /// The quiet state of `group`, if it is quiet.
    pub(crate) fn quiet_state(&self, group: u64) -> Option<Quiet> {
        self.quiet.lock().expect("quiet groups").quiet.get(&group).cloned()
    }

    /// How many client requests `group` has seen (a change means it was not idle).
    pub(crate) fn activity(&self, group: u64) -> u64 {
        self.quiet
            .lock()
            .expect("quiet groups")
            .activity
            .get(&group)
            .copied()
            .unwrap_or(0)
    }

    /// Marks `group` quiet and stops its timers — unless a client request came since
    /// `expected_activity` was read (a leader must not stop heartbeating under a write it is
    /// about to propose). Returns whether it did.
    pub(crate) fn quiesce(
        &self,
        group: u64,
        state: Quiet,
        raft: &PartitionRaftNode,
        expected_activity: Option<u64>,
    ) -> bool {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        let activity = quiet.activity.get(&group).copied().unwrap_or(0);
        if expected_activity.is_some_and(|expected| expected != activity) {
            return false;
        }
        quiet.quiet.insert(group, state);
        raft.runtime_config().tick(false);
        true
    }

    /// A client request reached `group`: counts it, and wakes the group if it is quiet.
    /// Returns whether it woke it.
    pub(crate) fn note_request(&self, group: u64) -> bool {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        *quiet.activity.entry(group).or_insert(0) += 1;
        self.wake_locked(&mut quiet, group).is_some()
    }

    /// Wakes `group` if it is quiet: its timers run again, and if it is led here the leader
    /// heartbeats at once (so followers and the leader's lease are fresh without waiting for a
    /// tick). Returns what the quiet state was.
    pub(crate) fn wake(&self, group: u64) -> Option<Quiet> {
        let mut quiet = self.quiet.lock().expect("quiet groups");
        self.wake_locked(&mut quiet, group)
    }

    fn wake_locked(&self, quiet: &mut QuietGroups, group: u64) -> Option<Quiet> {
        let state = quiet.quiet.remove(&group)?;
        if let Some(raft) = self.get(group) {
            raft.runtime_config().tick(true);
            if state.leading {
                tokio::spawn(async move {
                    let _ = raft.trigger().heartbeat().await;
                });
            }
        }
        Some(state)
    }

    /// Takes `group` out of the quiet set without restarting its timers: a follower woken by an
    /// append restarts them only once the append is in (see [`Self::resume_timers`]), so the
    /// election timer starts from the leader's fresh contact, not from before the quiet spell.
    fn take_quiet(&self, group: u64) -> Option<Quiet> {
        self.quiet.lock().expect("quiet groups").quiet.remove(&group)
    }

    /// Restarts `group`'s timers unless it has been quiesced again meanwhile.
    fn resume_timers(&self, group: u64, raft: &PartitionRaftNode) {
        let quiet = self.quiet.lock().expect("quiet groups");
        if !quiet.quiet.contains_key(&group) {
            raft.runtime_config().tick(true);
        }
    }

    /// A peer restarted or came back: groups led here that it votes in wake (so it hears from
    /// their leaders); a restart also ends the leadership it held.
    pub(crate) fn on_peer_event(&self, node: u64, event: PeerEvent) {
        let led_here: Vec<u64> = {
            let quiet = self.quiet.lock().expect("quiet groups");
            quiet
                .quiet
                .iter()
                .filter(|(_, q)| q.leading && q.voters.contains(&node))
                .map(|(group, _)| *group)
                .collect()
        };
        if !led_here.is_empty() {
            tracing::debug!(
                node,
                ?event,
                groups = led_here.len(),
                "peer back: waking the groups led here"
            );
        }
        for group in led_here {
            self.wake(group);
        }
        if event == PeerEvent::Restarted {
            self.on_leader_dead(node);
        }
    }

    /// `leader`'s broker is dead (or restarted): the quiet groups it led wake; in each, the
    /// voter after it campaigns at once (Pre-Vote first), the others run their election timers.
    pub(crate) fn on_leader_dead(&self, leader: u64) {
        let woken: Vec<(u64, Quiet)> = {
            let mut quiet = self.quiet.lock().expect("quiet groups");
            let groups: Vec<u64> = quiet
                .quiet
                .iter()
                .filter(|(_, q)| !q.leading && q.leader == leader)
                .map(|(group, _)| *group)
                .collect();
            groups
                .into_iter()
                .filter_map(|group| self.wake_locked(&mut quiet, group).map(|q| (group, q)))
                .collect()
        };
        for (group, state) in woken {
            if !state.campaigns_first {
                continue;
            }
            if let Some(raft) = self.get(group) {
                tokio::spawn(async move {
                    let _ = raft.trigger().elect(true).await;
                });
            }
        }
    }

    /// Whether a vote request for `group` is refused because the group is quiet under a
    /// leader that is alive; a leader refusing also wakes, so the candidate hears from it. A
    /// group whose leader looks dead wakes and votes by openraft's rules.
    fn refuses_for_live_quiet_leader(&self, group: u64, leadership_transfer: bool) -> bool {
        let Some(state) = self.quiet_state(group) else {
            return false;
        };
        let leader_alive = state.leading || self.liveness.heard_within(state.leader, quiesce::ALIVE_WINDOW);
        if leader_alive && !leadership_transfer {
            if state.leading {
                self.wake(group);
            }
            return true;
        }
        self.wake(group);
        false
    }

    /// The tonic service to mount on the broker's internal listener.
    pub fn service(&self) -> RaftServer<RaftGroups> {
        RaftServer::new(self.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// Hands one append to its group; answers with openraft's response as JSON. An append
    /// with entries, or from another leader than the one a quiet group rests under, wakes it.
    async fn append_one(&self, request: AppendRequest) -> Result<Vec<u8>, Status> {
        let group = request.group;
        let raft = self.node(group)?;
        let wakes = self
            .quiet_state(group)
            .is_some_and(|q| !request.entries.is_empty() || q.vote_json != request.vote_json);
        let woke = wakes && self.take_quiet(group).is_some();
        let rpc = decode_append(request).map_err(|e| Status::invalid_argument(e.to_string()));
        let response = match rpc {
            Ok(rpc) => raft
                .append_entries(rpc)
                .await
                .map_err(|e| Status::unavailable(e.to_string())),
            Err(status) => Err(status),
        };
        if woke {
            self.resume_timers(group, &raft);
        }
        serde_json::to_vec(&response?).map_err(|e| Status::internal(e.to_string()))
    }

    /// The vote rules this broker adds to openraft's, for a vote or a pre-vote: a replica that
    /// lost acknowledged entries votes only for candidates that hold them, and a quiet group
    /// refuses candidates while its leader is alive. Returns the refusal to send, if any.
    fn refusal(
        &self,
        group: u64,
        raft: &PartitionRaftNode,
        rpc: &openraft::raft::VoteRequest<PartitionRaft>,
    ) -> Option<openraft::raft::VoteResponse<PartitionRaft>> {
        let held = self.votes_held.read().expect("held votes").get(&group).copied();
        let unsafe_candidate = held.is_some_and(|rule| !rule.candidate_is_safe(rpc.last_log_id.as_ref()));
        if unsafe_candidate || self.refuses_for_live_quiet_leader(group, rpc.leadership_transfer) {
            // A refusal carrying our own (older) vote: the candidate counts nothing from it.
            let vote = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&raft.metrics()).vote;
            return Some(openraft::raft::VoteResponse::<PartitionRaft>::new(vote, None, false));
        }
        None
    }

    /// A vote or pre-vote request: this broker's refusals first, then openraft's rules.
    async fn answer_vote(&self, request: JsonRequest, pre_vote: bool) -> Result<Response<JsonResponse>, Status> {
        let raft = self.node(request.group)?;
        let rpc: openraft::raft::VoteRequest<PartitionRaft> =
            serde_json::from_slice(&request.json).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(refusal) = self.refusal(request.group, &raft, &rpc) {
            return json_response(&refusal);
        }
        let response = if pre_vote {
            raft.pre_vote(rpc).await
        } else {
            raft.vote(rpc).await
        };
        json_response(&response.map_err(|e| Status::unavailable(e.to_string()))?)
    }

    fn node(&self, group: u64) -> Result<PartitionRaftNode, Status> {
        self.get(group)
            .ok_or_else(|| Status::not_found(format!("raft group {group} is not hosted on this broker")))
    }
}

/// When a replica that lost acknowledged entries holds everything it had acknowledged again,
/// and whom it may vote for until then.
///
/// A committed entry the replica lost is, by Raft's leader completeness, in the log of every
/// leader since; so the replica holds it again once it has applied (that is, matched a leader's
/// log through) either the lost entry's index, or any entry of a later leader — whose log has
/// every entry of earlier leaders before its own. Until then it does not campaign, and it votes
/// only for a candidate whose last entry is at or after the lost one in Raft's log order: such
/// a log holds everything the replica had (log matching), so the vote cannot help elect a
/// leader without a committed entry — and two replicas that lost entries do not stall a
/// partition whose third replica has them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatchUpRule {
    /// Applying an entry at this index or beyond is enough.
    index: u64,
    /// Applying an entry of a leader after this one (term, node) is enough.
    leader: (u64, u64),
}

impl CatchUpRule {
    pub(crate) fn after(lost: LostAcknowledged, vote: Option<StoredVote>) -> CatchUpRule {
        match lost {
            LostAcknowledged::Through(id) => CatchUpRule {
                index: id.index.0,
                leader: (id.term, id.leader_node),
            },
            // The mark is unreadable: anything up to the last term this replica voted in may
            // be missing, so only a leader elected after that will do.
            LostAcknowledged::Unknown => CatchUpRule {
                index: u64::MAX,
                leader: (vote.map_or(0, |v| v.term), u64::MAX),
            },
        }
    }

    pub(crate) fn is_met(&self, metrics: &openraft::RaftMetrics<PartitionRaft>) -> bool {
        metrics.last_applied.as_ref().is_some_and(|applied| {
            applied.index >= self.index || (applied.leader_id.term, applied.leader_id.node_id) > self.leader
        })
    }

    /// Whether a candidate whose last entry is `last` holds everything the replica lost.
    fn candidate_is_safe(&self, last: Option<&LogId>) -> bool {
        last.is_some_and(|last| {
            let leader = (last.leader_id.term, last.leader_id.node_id);
            leader > self.leader || (leader == self.leader && last.index >= self.index)
        })
    }
}

fn json_response<T: serde::Serialize>(value: &T) -> Result<Response<JsonResponse>, Status> {
    let json = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(JsonResponse { json: json.into() }))
}

#[tonic::async_trait]
impl RaftRpc for RaftGroups {
    async fn append(&self, request: Request<AppendRequest>) -> Result<Response<JsonResponse>, Status> {
        let json = self.append_one(request.into_inner()).await?;
        Ok(Response::new(JsonResponse { json: json.into() }))
    }

    async fn append_batch(
        &self,
        request: Request<AppendBatchRequest>,
    ) -> Result<Response<AppendBatchResponse>, Status> {
        let answers = request.into_inner().requests.into_iter().map(|request| async move {
            match self.append_one(request).await {
                Ok(json) => BatchItemResponse {
                    json: json.into(),
                    error: String::new(),
                },
                Err(status) => BatchItemResponse {
                    json: Default::default(),
                    error: status.message().to_string(),
                },
            }
        });
        let responses = futures_util::future::join_all(answers).await;
        Ok(Response::new(AppendBatchResponse { responses }))
    }

    async fn vote(&self, request: Request<JsonRequest>) -> Result<Response<JsonResponse>, Status> {
        self.answer_vote(request.into_inner(), false).await
    }

    async fn pre_vote(&self, request: Request<JsonRequest>) -> Result<Response<JsonResponse>, Status> {
        self.answer_vote(request.into_inner(), true).await
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let request = request.into_inner();
        if let Some(event) = self.liveness.heard(request.node, request.incarnation) {
            self.on_peer_event(request.node, event);
        }
        Ok(Response::new(PingResponse {
            incarnation: self.incarnation,
        }))
    }

    async fn quiesce(&self, request: Request<QuiesceRequest>) -> Result<Response<QuiesceResponse>, Status> {
        let request = request.into_inner();
        let mut accepted = Vec::new();
        for item in request.groups {
            let Some(raft) = self.get(item.group) else { continue };
            if self.votes_held(item.group) {
                continue;
            }
            let Some((voters, me)) = quiesce::follower_agrees(&raft, request.leader, &item.vote_json, &item.last_json)
            else {
                continue;
            };
            let state = Quiet {
                leader: request.leader,
                leading: false,
                vote_json: item.vote_json,
                campaigns_first: quiesce::successor(&voters, request.leader) == Some(me),
                voters,
            };
            if self.quiesce(item.group, state, &raft, None) {
                accepted.push(item.group);
            }
        }
        Ok(Response::new(QuiesceResponse { quiet: accepted }))
    }

    async fn transfer_leader(&self, request: Request<JsonRequest>) -> Result<Response<JsonResponse>, Status> {
        let request = request.into_inner();
        let raft = self.node(request.group)?;
        let rpc: openraft::raft::TransferLeaderRequest<PartitionRaft> =
            serde_json::from_slice(&request.json).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The target is about to campaign: it needs its timers (and a leader lease) back.
        self.wake(request.group);
        let response = raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        json_response(&response)
    }

    async fn install_snapshot(&self, request: Request<SnapshotRequest>) -> Result<Response<JsonResponse>, Status> {
        let request = request.into_inner();
        let raft = self.node(request.group)?;
        let vote = serde_json::from_slice(&request.vote_json).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let meta = serde_json::from_slice(&request.meta_json).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let snapshot = openraft::Snapshot {
            meta,
            snapshot: Cursor::new(request.data.to_vec()),
        };
        let woke = self.take_quiet(request.group).is_some();
        let response = raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| Status::unavailable(e.to_string()));
        if woke {
            self.resume_timers(request.group, &raft);
        }
        json_response(&response?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::types::log_id_of;
    use crate::storage::{EntryId, RaftIndex};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        log_id_of(&EntryId {
            term,
            leader_node: node,
            index: RaftIndex(index),
        })
    }

    #[test]
    fn a_replica_that_lost_entries_votes_only_for_logs_that_hold_them() {
        let lost = EntryId {
            term: 5,
            leader_node: 2,
            index: RaftIndex(100),
        };
        let rule = CatchUpRule::after(LostAcknowledged::Through(lost), None);
        assert!(rule.candidate_is_safe(Some(&log_id(5, 2, 100))));
        assert!(rule.candidate_is_safe(Some(&log_id(5, 2, 140))));
        assert!(rule.candidate_is_safe(Some(&log_id(6, 1, 90))), "a later leader's log");
        assert!(!rule.candidate_is_safe(Some(&log_id(5, 2, 99))));
        assert!(!rule.candidate_is_safe(Some(&log_id(4, 3, 500))));
        assert!(!rule.candidate_is_safe(None));

        // Unknown loss: only a log with an entry of a term after the replica's last vote.
        let vote = StoredVote {
            term: 7,
            node: 1,
            committed: false,
        };
        let rule = CatchUpRule::after(LostAcknowledged::Unknown, Some(vote));
        assert!(!rule.candidate_is_safe(Some(&log_id(7, 3, 1_000))));
        assert!(rule.candidate_is_safe(Some(&log_id(8, 1, 10))));
    }
}
