//! The server side of the Raft transport: routes `raft.v1` calls to the local Raft group they
//! name. Unknown groups get NOT_FOUND, undecodable messages INVALID_ARGUMENT, a shut-down group
//! UNAVAILABLE — all of which the sending leader treats as a failed RPC and retries later.

use super::metrics::{self, VoteAnswer};
use super::quiesce::{Contact, PeerLiveness, PeerPhase, Quiescence, ResumeTimers};
use super::raft_node::{HostedGroups, LiveRaft, PartitionRaftNode};
use super::throttle::CatchUpThrottle;
use super::types::PartitionRaft;
use super::wire::decode_append;
use futures_util::{Stream, StreamExt};
use proto::raft_v1::raft_server::{Raft as RaftRpc, RaftServer};
use proto::raft_v1::{
    AppendBatchRequest, AppendBatchResponse, AppendRequest, BatchItemResponse, JsonRequest, JsonResponse, PingRequest,
    PingResponse, QuiesceRequest, QuiesceResponse, SnapshotRequest,
};
use std::io::Cursor;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

/// Longest wait for one group's answer within a coalesced batch of heartbeats: a batch is
/// answered as a whole, so without it one busy group would hold every other group's answer
/// until their leaders' heartbeat timeouts (the heartbeat interval, 150 ms by default) had all
/// run out — thousands of failed heartbeats, then elections. A group that misses it answers an
/// error; its append still reaches its Raft core.
const BATCH_ITEM_DEADLINE: Duration = Duration::from_millis(100);

/// The Raft groups hosted by this broker and the router of `raft.v1` calls to them, with the
/// broker's quiescence state (which groups are quiet, peer liveness), which those calls consult
/// and update. Cheap to clone; clones share.
#[derive(Clone)]
pub struct RaftGroups {
    hosted: HostedGroups,
    quiescence: Quiescence,
    throttle: CatchUpThrottle,
}

impl Default for RaftGroups {
    fn default() -> Self {
        let hosted = HostedGroups::default();
        RaftGroups {
            quiescence: Quiescence::new(hosted.clone()),
            hosted,
            throttle: CatchUpThrottle::default(),
        }
    }
}

impl RaftGroups {
    /// The nodes hosted here and the groups whose votes are held.
    pub(crate) fn hosted(&self) -> &HostedGroups {
        &self.hosted
    }

    /// This broker's quiescence state (see `replication::quiesce`).
    pub fn quiescence(&self) -> &Quiescence {
        &self.quiescence
    }

    /// Makes `raft` reachable as group `group`.
    pub fn insert(&self, group: u64, raft: PartitionRaftNode) {
        self.hosted.insert(group, raft);
    }

    /// Stops routing to group `group`, returning its node.
    pub fn remove(&self, group: u64) -> Option<PartitionRaftNode> {
        self.hosted.release_votes(group);
        self.quiescence.forget_quiet_state(group);
        self.hosted.remove(group)
    }

    /// Lets `group` vote again.
    pub fn release_votes(&self, group: u64) {
        self.hosted.release_votes(group);
    }

    /// Whether `group` refuses votes now.
    pub fn votes_held(&self, group: u64) -> bool {
        self.hosted.votes_held(group)
    }

    /// Whether `group` is quiet here (its Raft timers stopped).
    pub fn is_quiet(&self, group: u64) -> bool {
        self.quiescence.is_quiet(group)
    }

    /// The limit on what this broker's leaders send to learners (see `throttle`).
    pub fn catch_up_throttle(&self) -> &CatchUpThrottle {
        &self.throttle
    }

    /// When each peer broker last pinged this one and answered its pings.
    pub fn liveness(&self) -> &PeerLiveness {
        self.quiescence.liveness()
    }

    /// The node of group `group`, if hosted here.
    pub fn get(&self, group: u64) -> Option<PartitionRaftNode> {
        self.hosted.get(group)
    }

    /// The tonic service to mount on the broker's internal listener.
    pub fn service(&self) -> RaftServer<RaftGroups> {
        RaftServer::new(self.clone())
            .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(proto::MAX_MESSAGE_BYTES)
    }

    /// Hands one append to its group; answers with openraft's response as JSON. An append
    /// with entries, or from another leader than the one a quiet group rests under, wakes it.
    async fn append_one(&self, request: AppendRequest) -> Result<Vec<u8>, Status> {
        let group = request.group;
        let raft = self.node(group)?;
        let vote_json = request.vote_json.clone();
        let rpc = decode_append(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (vote, prev, commit) = (rpc.vote, rpc.prev_log_id, rpc.leader_commit);
        // Dropped once the append is in — or when this call ends any other way.
        let resume = match self.arrival(group, &raft, &rpc, &vote_json) {
            Arrival::AnsweredAsleep(_) => {
                return serde_json::to_vec(&openraft::raft::AppendEntriesResponse::<PartitionRaft>::Success)
                    .map_err(|e| Status::internal(e.to_string()));
            }
            Arrival::ToOpenraft(resume) => resume,
        };
        let response = live(&raft)
            .await?
            .append_entries(rpc)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if let Some(resume) = resume {
            let success = matches!(response, openraft::raft::AppendEntriesResponse::Success);
            resume.settle(success, vote, prev, commit);
        }
        serde_json::to_vec(&response).map_err(|e| Status::internal(e.to_string()))
    }

    /// An append for `group` arrived (`vote_json` as it came): told quiescence, and
    /// answered here if the node sleeps and it changes nothing on it — a quiet leader renewing
    /// its lease for a read, a leader built again probing its followers — as openraft would
    /// answer, without building the node again. (Entries it holds already wake nothing.)
    fn arrival(
        &self,
        group: u64,
        raft: &PartitionRaftNode,
        rpc: &openraft::raft::AppendEntriesRequest<PartitionRaft>,
        vote_json: &[u8],
    ) -> Arrival {
        let answered_asleep = raft.answer_asleep(&rpc.vote, last_sent(rpc));
        let has_new_entries = !rpc.entries.is_empty() && answered_asleep.is_none();
        let resume = self.quiescence.append_arrives(group, raft, has_new_entries, vote_json);
        match (resume, answered_asleep) {
            (None, Some(matching)) => Arrival::AnsweredAsleep(matching),
            (resume, _) => Arrival::ToOpenraft(resume),
        }
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
        let held = self.hosted.held_votes_rule(group);
        let unsafe_candidate = held.is_some_and(|rule| !rule.candidate_is_safe(rpc.last_log_id.as_ref()));
        // The lease openraft's follower keeps after each contact with its leader, for the
        // contacts it did not see: the ones its node answered asleep.
        let within_lease = !rpc.leadership_transfer && raft.leader_contact_within(self.quiescence.leader_lease());
        if unsafe_candidate || within_lease || self.quiescence.refuses_candidate(group, rpc) {
            // A refusal carrying our own (older) vote: the candidate counts nothing from it.
            let vote = raft.with_metrics(|metrics| metrics.vote);
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
            metrics::vote_answered(pre_vote, VoteAnswer::Refused);
            return json_response(&refusal);
        }
        let raft = live(&raft).await?;
        let response = if pre_vote {
            raft.pre_vote(rpc).await
        } else {
            raft.vote(rpc).await
        }
        .map_err(|e| Status::unavailable(e.to_string()))?;
        let answer = if response.vote_granted {
            VoteAnswer::Granted
        } else {
            VoteAnswer::Rejected
        };
        metrics::vote_answered(pre_vote, answer);
        json_response(&response)
    }

    fn node(&self, group: u64) -> Result<PartitionRaftNode, Status> {
        self.get(group)
            .ok_or_else(|| Status::not_found(format!("raft group {group} is not hosted on this broker")))
    }
}

/// The last entry an append carries, or the one before them if it carries none.
fn last_sent(rpc: &openraft::raft::AppendEntriesRequest<PartitionRaft>) -> Option<super::types::LogId> {
    rpc.entries.last().map(|entry| entry.log_id).or(rpc.prev_log_id)
}

/// `node`'s running instance, built again if it sleeps; UNAVAILABLE if it is shut down.
async fn live(node: &PartitionRaftNode) -> Result<LiveRaft, Status> {
    node.live()
        .await
        .map_err(|stopped| Status::unavailable(stopped.to_string()))
}

/// What becomes of an append that arrived ([`RaftGroups::arrival`]).
enum Arrival {
    /// Answered asleep, with the matching entry.
    AnsweredAsleep(Option<super::types::LogId>),
    /// For openraft, with the guard that restarts a woken group's timers.
    ToOpenraft(Option<ResumeTimers>),
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
        let first_seen = match raft.is_dormant().then(|| decode_append(first.clone()).ok()).flatten() {
            // A session whose first append changes nothing on a sleeping follower is answered
            // asleep, and ended. The leader opens its next session with its next entries,
            // which build the node again.
            Some(rpc) => match self.arrival(group, &raft, &rpc, &first.vote_json) {
                Arrival::AnsweredAsleep(matching) => {
                    let answer: openraft::raft::StreamAppendResult<PartitionRaft> = Ok(matching);
                    let answer = serde_json::to_vec(&answer)
                        .map(|json| JsonResponse { json: json.into() })
                        .map_err(|e| Status::internal(e.to_string()));
                    return Ok(Response::new(Box::pin(futures_util::stream::once(async { answer }))));
                }
                Arrival::ToOpenraft(guard) => {
                    *resume.lock().expect("resume guard") = guard;
                    true
                }
            },
            None => false,
        };
        let (groups, node, resume_on_answer) = (self.clone(), raft.clone(), Arc::clone(&resume));
        let requests = futures_util::stream::once(async move { Ok(first) })
            .chain(inbound)
            .scan(first_seen, move |seen, item: Result<AppendRequest, Status>| {
                // (The first request's arrival is told quiescence once.)
                let told = std::mem::take(seen);
                let decoded = item.ok().filter(|request| request.group == group).and_then(|request| {
                    let has_entries = !request.entries.is_empty();
                    if told {
                        return decode_append(request).ok();
                    }
                    if let Some(guard) = groups
                        .quiescence
                        .append_arrives(group, &node, has_entries, &request.vote_json)
                    {
                        *resume.lock().expect("resume guard") = Some(guard);
                    }
                    decode_append(request).ok()
                });
                futures_util::future::ready(decoded)
            });
        // Ends when the node goes to sleep: the instance it was opened on stops. (The leader
        // opens the next one with its next entries, which builds the node again.)
        let asleep = raft.asleep();
        let answers = live(&raft)
            .await?
            .stream_append(requests)
            .take_until(asleep)
            .map(move |result| {
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
            let answer = tokio::time::timeout(BATCH_ITEM_DEADLINE, self.append_one(request))
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(
                        "this group's append was not answered in time",
                    ))
                });
            match answer {
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
        let liveness = self.quiescence.liveness();
        let event = liveness.heard(request.node, request.incarnation, Contact::PingedUs);
        // (Before the event is handled: a restarted peer still opening its replicas is reached
        // only once it has.)
        liveness.note_phase(
            request.node,
            PeerPhase {
                stopping: request.stopping,
                opening: request.opening,
            },
        );
        if let Some(event) = event {
            self.quiescence.on_peer_event(request.node, event);
        }
        Ok(Response::new(PingResponse {
            incarnation: self.quiescence.incarnation(),
            stopping: self.quiescence.is_stopping(),
            opening: self.quiescence.is_opening(),
        }))
    }

    async fn quiesce(&self, request: Request<QuiesceRequest>) -> Result<Response<QuiesceResponse>, Status> {
        let quiet = self.quiescence.quiesce_as_follower(request.into_inner());
        Ok(Response::new(QuiesceResponse { quiet }))
    }

    async fn transfer_leader(&self, request: Request<JsonRequest>) -> Result<Response<JsonResponse>, Status> {
        let request = request.into_inner();
        let raft = self.node(request.group)?;
        let rpc: openraft::raft::TransferLeaderRequest<PartitionRaft> =
            serde_json::from_slice(&request.json).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // The target is about to campaign: it needs its timers back (the other voters wake
        // without racing it).
        self.quiescence
            .wake_for_transfer(request.group, &raft, *rpc.to_node_id());
        let response = live(&raft)
            .await?
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
        let _resume = self
            .quiescence
            .append_arrives(request.group, &raft, true, &request.vote_json);
        let response = live(&raft)
            .await?
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        json_response(&response)
    }
}

/// The Raft transport's decoders on bytes from whoever reaches the internal listener: an
/// append (protobuf, then its entries), a vote and a leadership transfer (JSON), a snapshot's
/// vote (JSON). A fuzzing entry point (`crate::fuzzing`): none may panic.
pub fn decode_untrusted(kind: u8, data: &[u8]) {
    use prost::Message;
    match kind % 4 {
        0 => {
            if let Ok(request) = proto::raft_v1::AppendRequest::decode(data) {
                let _ = decode_append(request);
            }
        }
        1 => {
            let _ = serde_json::from_slice::<openraft::raft::VoteRequest<PartitionRaft>>(data);
        }
        2 => {
            let _ = serde_json::from_slice::<openraft::raft::TransferLeaderRequest<PartitionRaft>>(data);
        }
        _ => {
            let _ = serde_json::from_slice::<super::types::Vote>(data);
        }
    }
}
