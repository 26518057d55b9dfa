//! The server side of the Raft transport: routes `raft.v1` calls to the local Raft group they
//! name. Unknown groups get NOT_FOUND, undecodable messages INVALID_ARGUMENT, a shut-down group
//! UNAVAILABLE — all of which the sending leader treats as a failed RPC and retries later.

use super::state_machine::PartitionStateMachine;
use super::types::PartitionRaft;
use super::wire::decode_append;
use proto::raft_v1::raft_server::{Raft as RaftRpc, RaftServer};
use proto::raft_v1::{
    AppendBatchRequest, AppendBatchResponse, AppendRequest, BatchItemResponse, JsonRequest, JsonResponse,
    SnapshotRequest,
};
use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::sync::{Arc, RwLock};
use tonic::{Request, Response, Status};

/// A running partition Raft node.
pub type PartitionRaftNode = openraft::Raft<PartitionRaft, PartitionStateMachine>;

/// The Raft groups hosted by this broker, by group id.
#[derive(Clone, Default)]
pub struct RaftGroups {
    groups: Arc<RwLock<HashMap<u64, PartitionRaftNode>>>,
    /// Groups whose local replica lost entries it had acknowledged: they grant no votes until
    /// the replica has those entries back (see `PartitionReplica::start`).
    votes_held: Arc<RwLock<HashSet<u64>>>,
}

impl RaftGroups {
    /// Makes `raft` reachable as group `group`.
    pub fn insert(&self, group: u64, raft: PartitionRaftNode) {
        self.groups.write().expect("raft group map").insert(group, raft);
    }

    /// Stops routing to group `group`, returning its node.
    pub fn remove(&self, group: u64) -> Option<PartitionRaftNode> {
        self.groups.write().expect("raft group map").remove(&group)
    }

    /// Refuses every vote request of `group` until [`release_votes`](Self::release_votes).
    pub fn hold_votes(&self, group: u64) {
        self.votes_held.write().expect("held votes").insert(group);
    }

    /// Lets `group` vote again.
    pub fn release_votes(&self, group: u64) {
        self.votes_held.write().expect("held votes").remove(&group);
    }

    /// Whether `group` refuses votes now.
    pub fn votes_held(&self, group: u64) -> bool {
        self.votes_held.read().expect("held votes").contains(&group)
    }

    /// The node of group `group`, if hosted here.
    pub fn get(&self, group: u64) -> Option<PartitionRaftNode> {
        self.groups.read().expect("raft group map").get(&group).cloned()
    }

    /// The tonic service to mount on the broker's internal listener.
    pub fn service(&self) -> RaftServer<RaftGroups> {
        RaftServer::new(self.clone())
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    /// Hands one append to its group; answers with openraft's response as JSON.
    async fn append_one(&self, request: AppendRequest) -> Result<Vec<u8>, Status> {
        let raft = self.node(request.group)?;
        let rpc = decode_append(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let response = raft
            .append_entries(rpc)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        serde_json::to_vec(&response).map_err(|e| Status::internal(e.to_string()))
    }

    fn node(&self, group: u64) -> Result<PartitionRaftNode, Status> {
        self.get(group)
            .ok_or_else(|| Status::not_found(format!("raft group {group} is not hosted on this broker")))
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
        let request = request.into_inner();
        let raft = self.node(request.group)?;
        let rpc = serde_json::from_slice(&request.json).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if self.votes_held(request.group) {
            // A refusal carrying our own (older) vote: the candidate counts nothing from it.
            let vote = openraft::async_runtime::watch::WatchReceiver::borrow_watched(&raft.metrics()).vote;
            return json_response(&openraft::raft::VoteResponse::<PartitionRaft>::new(vote, None, false));
        }
        let response = raft.vote(rpc).await.map_err(|e| Status::unavailable(e.to_string()))?;
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
        let response = raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        json_response(&response)
    }
}
