//! Per-peer coalescing of empty AppendEntries — heartbeats and commit-index updates — so that
//! thousands of idle groups cost a handful of RPCs per heartbeat interval, not one each.
//!
//! Each group's heartbeat is queued for its peer; a task per peer sends everything queued in one
//! `AppendBatch` RPC, at most one batch in flight per peer, and hands each group its own answer.
//! Appends that carry entries are never delayed: they go out on their own at once.

use proto::raft_v1::raft_client::RaftClient;
use proto::raft_v1::{AppendBatchRequest, AppendRequest, BatchItemResponse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

/// How long a batch waits for more heartbeats after the first one arrives. Small against the
/// heartbeat interval (150 ms) and the leader lease (750 ms), large enough to gather the
/// heartbeats of many groups whose timers are not aligned.
const COALESCE_WINDOW: Duration = Duration::from_millis(10);
/// Most heartbeats in one batch.
const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<Result<BatchItemResponse, tonic::Status>>;
/// A queued heartbeat and where its answer goes.
type Queued = (AppendRequest, Reply);

/// Queues of heartbeats by peer address; one per broker, shared by all its groups.
#[derive(Clone, Default)]
pub struct HeartbeatCoalescer {
    queues: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>>,
}

impl HeartbeatCoalescer {
    /// Sends `request` (an empty append) to the peer at `address` over `client`, batched with
    /// other groups' heartbeats to the same peer.
    pub async fn send(
        &self,
        address: &str,
        client: RaftClient<Channel>,
        request: AppendRequest,
    ) -> Result<BatchItemResponse, tonic::Status> {
        let (reply, answer) = oneshot::channel();
        let queue = {
            let mut queues = self.queues.lock().expect("coalescer queues");
            // The peer's task lives as long as its queue is in this map (for the broker's life).
            queues
                .entry(address.to_string())
                .or_insert_with(|| {
                    let (sender, receiver) = mpsc::unbounded_channel();
                    tokio::spawn(run_peer(client, receiver));
                    sender
                })
                .clone()
        };
        queue
            .send((request, reply))
            .map_err(|_| tonic::Status::unavailable("heartbeat queue closed"))?;
        answer
            .await
            .map_err(|_| tonic::Status::unavailable("heartbeat batch dropped"))?
    }
}

async fn run_peer(mut client: RaftClient<Channel>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = queue.recv().await {
        tokio::time::sleep(COALESCE_WINDOW).await;
        // A heartbeat whose leader stopped waiting for it (its timeout ran out while the batch
        // before was in flight) is not sent: under load, stale heartbeats would crowd out the
        // fresh ones and keep the peer overloaded.
        let mut batch: Vec<Queued> = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            if !item.1.is_closed() {
                batch.push(item);
            }
            if batch.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (requests, replies): (Vec<AppendRequest>, Vec<Reply>) = batch.into_iter().unzip();
        let mut request = tonic::Request::new(AppendBatchRequest { requests });
        request.set_timeout(Duration::from_secs(1));
        match client.append_batch(request).await {
            Ok(response) => {
                let responses = response.into_inner().responses;
                if responses.len() != replies.len() {
                    for reply in replies {
                        let _ = reply.send(Err(tonic::Status::internal("heartbeat batch answer of the wrong size")));
                    }
                    continue;
                }
                for (reply, item) in replies.into_iter().zip(responses) {
                    let _ = reply.send(Ok(item));
                }
            }
            Err(status) => {
                for reply in replies {
                    let _ = reply.send(Err(status.clone()));
                }
            }
        }
    }
}
