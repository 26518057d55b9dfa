//! The server side of the Raft transport: routes `raft.v1` calls to the local Raft group they
//! name. Unknown groups get NOT_FOUND, undecodable messages INVALID_ARGUMENT, a shut-down group
//! UNAVAILABLE — all of which the sending leader treats as a failed RPC and retries later.

use super::quiesce::{self, Contact, PeerLiveness, QuietGroups, ResumeTimers};
use super::state_machine::PartitionStateMachine;
use super::types::LogId;
use super::types::PartitionRaft;
use super::wire::decode_append;
use crate::storage::{LostAcknowledged, StoredVote};
use futures_util::{Stream, StreamExt};
use proto::raft_v1::raft_server::{Raft as RaftRpc, RaftServer};
use proto::raft_v1::{
    AppendBatchRequest, AppendBatchResponse, AppendRequest, BatchItemResponse, JsonRequest, JsonResponse, PingRequest,
    PingResponse, QuiesceRequest, QuiesceResponse, SnapshotRequest,
};
use std::collections::HashMap;
use std::io::Cursor;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

/// A running partition Raft node.
pub type PartitionRaftNode = openraft::Raft<PartitionRaft, PartitionStateMachine>;

/// The Raft groups hosted by this broker, by group id.
#[derive(Clone)]
pub struct RaftGroups {
    groups: Arc<RwLock<HashMap<u64, PartitionRaftNode>>>,
    /// Groups whose local replica lost entries it had acknowledged: until the replica has those
    /// entries back they grant votes only to candidates their rule allows (see `CatchUpRule`).
    votes_held: Arc<RwLock<HashMap<u64, CatchUpRule>>>,
    /// Which groups are quiet, and per group the write requests seen and in flight (see
    /// `quiesce`). One lock: a write and a quiesce decision on a group are ordered by it.
    pub(super) quiet: Arc<Mutex<QuietGroups>>,
    /// When each peer broker last pinged this one and answered its pings.
    pub(super) liveness: PeerLiveness,
    /// This process's incarnation, sent in pings.
    pub(super) incarnation: u64,
    /// Set once this broker runs the failure detector (to how long a follower woken by a dead
    /// leader waits before its election timer runs); until then it never agrees to quiesce, as
    /// nothing would wake its groups if their leader died.
    pub(super) quiescence: Arc<OnceLock<Duration>>,
}

impl Default for RaftGroups {
    fn default() -> Self {
        RaftGroups {
            groups: Arc::default(),
            votes_held: Arc::default(),
            quiet: Arc::default(),
            liveness: PeerLiveness::default(),
            incarnation: quiesce::new_incarnation(),
            quiescence: Arc::default(),
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
        self.forget_quiet_state(group);
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
        // Dropped once the append is in — or when this call ends any other way.
        let _resume = self.append_arrives(group, &raft, !request.entries.is_empty(), &request.vote_json);
        let rpc = decode_append(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let response = raft
            .append_entries(rpc)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        serde_json::to_vec(&response).map_err(|e| Status::internal(e.to_string()))
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
        if unsafe_candidate || self.refuses_for_live_quiet_leader(group, rpc) {
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

    type AppendStreamStream = Pin<Box<dyn Stream<Item = Result<JsonResponse, Status>> + Send + 'static>>;

    async fn append_stream(
        &self,
        request: Request<Streaming<AppendRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let Some(first) = inbound.message().await? else {
            return Ok(Response::new(Box::pin(futures_util::stream::empty())));
        };
        let group = first.group;
        let raft = self.node(group)?;
        // Quiescence: a request that wakes the group (see `append_one`) restarts its timers once
        // openraft has answered it, or when the stream ends without an answer.
        let resume: Arc<Mutex<Option<ResumeTimers>>> = Arc::default();
        let (groups, node, resume_on_answer) = (self.clone(), raft.clone(), Arc::clone(&resume));
        let requests = futures_util::stream::once(async move { Ok(first) })
            .chain(inbound)
            .scan((), move |_, item: Result<AppendRequest, Status>| {
                let decoded = item.ok().filter(|request| request.group == group).and_then(|request| {
                    let has_entries = !request.entries.is_empty();
                    if let Some(guard) = groups.append_arrives(group, &node, has_entries, &request.vote_json) {
                        *resume.lock().expect("resume guard") = Some(guard);
                    }
                    decode_append(request).ok()
                });
                futures_util::future::ready(decoded)
            });
        let answers = raft.stream_append(requests).map(move |result| {
            drop(resume_on_answer.lock().expect("resume guard").take());
            let result = result.map_err(|fatal| Status::unavailable(fatal.to_string()))?;
            let json = serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?;
            Ok(JsonResponse { json: json.into() })
        });
        Ok(Response::new(Box::pin(answers)))
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
        if let Some(event) = self
            .liveness
            .heard(request.node, request.incarnation, Contact::PingedUs)
        {
            self.on_peer_event(request.node, event);
        }
        Ok(Response::new(PingResponse {
            incarnation: self.incarnation,
        }))
    }

    async fn quiesce(&self, request: Request<QuiesceRequest>) -> Result<Response<QuiesceResponse>, Status> {
        let quiet = self.quiesce_as_follower(request.into_inner());
        Ok(Response::new(QuiesceResponse { quiet }))
    }

    async fn transfer_leader(&self, request: Request<JsonRequest>) -> Result<Response<JsonResponse>, Status> {
        let request = request.into_inner();
        let raft = self.node(request.group)?;
        let rpc: openraft::raft::TransferLeaderRequest<PartitionRaft> =
            serde_json::from_slice(&request.json).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The target is about to campaign: it needs its timers back (the other voters wake
        // without racing it).
        self.wake_for_transfer(request.group, &raft, *rpc.to_node_id());
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
        let _resume = self.append_arrives(request.group, &raft, true, &request.vote_json);
        let response = raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        json_response(&response)
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
