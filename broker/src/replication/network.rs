//! The client side of the Raft transport: openraft's `RaftNetworkV2` over tonic.
//!
//! Every Raft group on a broker shares one HTTP/2 connection per peer ([`PeerChannels`]); a
//! group's network only adds its group id to each message. Empty appends (heartbeats) are
//! coalesced per peer by the [`HeartbeatCoalescer`].

use super::coalescer::HeartbeatCoalescer;
use super::throttle::CatchUpThrottle;
use super::types::PartitionRaft;
use super::wire::{encode_append, split_append, APPEND_CHUNK_BYTES};
use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkV2};
use proto::raft_v1::raft_client::RaftClient;
use proto::raft_v1::{JsonRequest, SnapshotRequest};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

type Vote = <PartitionRaft as openraft::RaftTypeConfig>::Vote;
type PartitionSnapshot =
    openraft::Snapshot<openraft::impls::leader_id_adv::LeaderId<u64, u64>, u64, BasicNode, Cursor<Vec<u8>>>;

/// One lazily connected channel per peer address, shared by all Raft groups of a broker.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    heartbeats: HeartbeatCoalescer,
    /// Dial this address instead of that one (a per-broker "hosts file"): lets a test or an
    /// operator route one broker's links through a proxy without changing Raft membership.
    dial_overrides: Arc<HashMap<String, String>>,
    /// TLS to peers (trusting the cluster's CA, presenting this broker's certificate), when on.
    tls: Option<Arc<ClientTlsConfig>>,
}

impl PeerChannels {
    /// Channels that dial `overrides[address]` instead of `address` where given.
    pub fn with_dial_overrides(overrides: HashMap<String, String>) -> Self {
        PeerChannels {
            channels: Arc::default(),
            heartbeats: HeartbeatCoalescer::default(),
            dial_overrides: Arc::new(overrides),
            tls: None,
        }
    }

    /// The same, connecting over TLS with `tls`.
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(Arc::new(tls));
        self
    }

    /// The channel to `address` (`host:port`), created on first use.
    pub fn channel(&self, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("peer channel map");
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let dial = self.dial_overrides.get(address).map_or(address, String::as_str);
        let endpoint = match &self.tls {
            None => Endpoint::from_shared(format!("http://{dial}"))?,
            Some(tls) => Endpoint::from_shared(format!("https://{dial}"))?.tls_config(ClientTlsConfig::clone(tls))?,
        };
        let channel = endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .http2_max_local_error_reset_streams(super::MAX_RESET_STREAMS)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Shortest wait for a follower to take an `AppendStream` call (connection set-up included).
const STREAM_SETUP_MIN: Duration = Duration::from_millis(500);
/// The slowest a follower is expected to take in (receive, write, fsync) an append's entries:
/// an answer is awaited the RPC's TTL plus its message's size at this rate. A fixed wait fit
/// heartbeats and small appends; a catching-up learner's 8 MiB messages missed it, openraft
/// restarted the session and sent them all again (a moved partition copied at a sixth of its
/// throttle's rate, docs/benchmarks.md).
const SLOWEST_APPEND_BYTES_PER_SEC: f64 = 16.0 * 1024.0 * 1024.0;

/// The answers of one `AppendStream` session, with what it takes to time them.
struct AnswerStream {
    answers: tonic::Streaming<proto::raft_v1::JsonResponse>,
    /// Requests sent so far.
    sent: tokio::sync::watch::Receiver<u64>,
    received: u64,
    /// Longest wait for the answer to an outstanding request.
    wait: Duration,
    /// Dropped with the answers: ends the request side.
    _ends_requests: tokio::sync::oneshot::Sender<()>,
    /// How many wire messages each of openraft's requests was sent as, oldest first (a large
    /// request goes as several, see `wire::split_append`).
    chunks: Arc<Mutex<VecDeque<usize>>>,
    /// The entry bytes of each wire message not answered yet, oldest first: its answer may take
    /// longer the more it carries.
    sizes: Arc<Mutex<VecDeque<u64>>>,
}

impl AnswerStream {
    /// The answer to openraft's next request: the answer to its last wire message, or the first
    /// failure among them (which ends the session).
    async fn next_answer(&mut self) -> Option<Result<StreamAppendResult<PartitionRaft>, RPCError<PartitionRaft>>> {
        let mut answer = self.next_wire_answer().await?;
        let chunks = self.chunks.lock().expect("chunk counts").pop_front().unwrap_or(1);
        for _ in 1..chunks {
            if !matches!(answer, Ok(Ok(_))) {
                return Some(answer);
            }
            answer = self.next_wire_answer().await?;
        }
        Some(answer)
    }

    /// The next wire answer; `None` once the follower has answered everything and closed the
    /// stream. Waits without limit while no message is outstanding (the session is idle), and
    /// at most `wait` while one is.
    async fn next_wire_answer(&mut self) -> Option<Result<StreamAppendResult<PartitionRaft>, RPCError<PartitionRaft>>> {
        loop {
            let outstanding = *self.sent.borrow_and_update() > self.received;
            let answer = if outstanding {
                let size = self.sizes.lock().expect("message sizes").front().copied().unwrap_or(0);
                let wait = self.wait + Duration::from_secs_f64(size as f64 / SLOWEST_APPEND_BYTES_PER_SEC);
                match tokio::time::timeout(wait, self.answers.message()).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        let message = format!("no append answer within {wait:?} (a message of {size} entry bytes)");
                        return Some(Err(RPCError::Unreachable(Unreachable::from_string(message))));
                    }
                }
            } else {
                tokio::select! {
                    answer = self.answers.message() => answer,
                    // A request went out: from now on the answer is timed.
                    changed = self.sent.changed() => match changed {
                        Ok(()) => continue,
                        // The request side is done and everything is answered: what comes
                        // now is the close.
                        Err(_) => match tokio::time::timeout(self.wait, self.answers.message()).await {
                            Ok(answer) => answer,
                            Err(_) => return None,
                        },
                    },
                }
            };
            return match answer {
                Ok(Some(answer)) => {
                    self.received += 1;
                    self.sizes.lock().expect("message sizes").pop_front();
                    Some(decode::<StreamAppendResult<PartitionRaft>>(&answer.json))
                }
                Ok(None) => None,
                Err(status) => Some(Err(rpc_error(status))),
            };
        }
    }
}

/// Creates the per-peer networks of one Raft group.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    group: u64,
    peers: PeerChannels,
    throttle: CatchUpThrottle,
}

impl GroupNetworkFactory {
    /// The factory for Raft group `group`, sending over `peers`, appends to learners paced by
    /// `throttle`.
    pub fn new(group: u64, peers: PeerChannels, throttle: CatchUpThrottle) -> Self {
        GroupNetworkFactory { group, peers, throttle }
    }
}

/// One group's link to one peer.
pub struct GroupNetwork {
    peers: PeerChannels,
    group: u64,
    target: u64,
    client: Option<RaftClient<Channel>>,
    address: String,
    throttle: CatchUpThrottle,
}

impl RaftNetworkFactory<PartitionRaft> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GroupNetwork {
        let client = self.peers.channel(&node.addr).ok().map(RaftClient::new);
        GroupNetwork {
            peers: self.peers.clone(),
            group: self.group,
            target,
            client,
            address: node.addr.clone(),
            throttle: self.throttle.clone(),
        }
    }
}

impl GroupNetwork {
    /// The peer's client and `message` as this group's JSON request, with the RPC's deadline.
    fn json_request<T: serde::Serialize>(
        &self,
        message: &T,
        option: &RPCOption,
    ) -> Result<(RaftClient<Channel>, tonic::Request<JsonRequest>), RPCError<PartitionRaft>> {
        let json = serde_json::to_vec(message).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = JsonRequest {
            group: self.group,
            json: json.into(),
        };
        Ok((self.client()?, with_deadline(request, option)))
    }

    fn client(&self) -> Result<RaftClient<Channel>, Unreachable<PartitionRaft>> {
        self.client.clone().ok_or_else(|| {
            Unreachable::from_string(format!(
                "node {} has an invalid address {:?}",
                self.target, self.address
            ))
        })
    }
}

/// The bytes of entries an append carries.
fn append_bytes(request: &proto::raft_v1::AppendRequest) -> u64 {
    request.entries.iter().map(|entry| entry.body.len() as u64).sum()
}

/// Maps a transport failure: a refused or failed connection means the peer is unreachable
/// (openraft backs off), anything else is a network error.
fn rpc_error(status: tonic::Status) -> RPCError<PartitionRaft> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            RPCError::Unreachable(Unreachable::from_string(status.to_string()))
        }
        _ => RPCError::Network(NetworkError::from_string(status.to_string())),
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, RPCError<PartitionRaft>> {
    serde_json::from_slice(json).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

fn with_deadline<T>(request: T, option: &RPCOption) -> tonic::Request<T> {
    let mut request = tonic::Request::new(request);
    request.set_timeout(option.hard_ttl());
    request
}

impl RaftNetworkV2<PartitionRaft> for GroupNetwork {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        let heartbeat = rpc.entries.is_empty();
        let request = encode_append(self.group, rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if heartbeat {
            let answer = self
                .peers
                .heartbeats
                .send(&self.address, self.client()?, request)
                .await
                .map_err(rpc_error)?;
            if !answer.error.is_empty() {
                return Err(RPCError::Network(NetworkError::from_string(answer.error)));
            }
            return decode(&answer.json);
        }
        // A large request goes as consecutive appends (see `wire::split_append`); the first
        // that is not a success is the answer.
        let mut answer = None;
        for chunk in split_append(request, APPEND_CHUNK_BYTES) {
            let response = self
                .client()?
                .append(with_deadline(chunk, &option))
                .await
                .map_err(rpc_error)?;
            let decoded: AppendEntriesResponse<PartitionRaft> = decode(&response.into_inner().json)?;
            let success = matches!(decoded, AppendEntriesResponse::Success);
            answer = Some(decoded);
            if !success {
                break;
            }
        }
        answer.ok_or_else(|| RPCError::Network(NetworkError::from_string("an append with no message".to_string())))
    }

    /// A lone request (the heartbeat worker's) goes unary, so a heartbeat is coalesced per peer
    /// like any empty append; a replication session goes over one `AppendStream` call,
    /// pipelined, each outstanding answer awaited at most the RPC's hard TTL.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<PartitionRaft>, RPCError<PartitionRaft>>>,
            RPCError<PartitionRaft>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<PartitionRaft>> + Send + Unpin + 'static,
    {
        Box::pin(async move {
            let mut input = input;
            let Some(first) = input.next().await else {
                let nothing: BoxStream<'s, _> = Box::pin(futures_util::stream::empty());
                return Ok(nothing);
            };
            // The heartbeat worker sends a one-item stream (`stream::once`, which reports no
            // more items once taken); a replication session's stream never knows its end.
            // A learner's first append waits for the throttle here, before the session opens:
            // its receiver answers the session only once it has it, and a session not answered
            // within half a second counts as failed. (The later ones wait in the stream.)
            if self.throttle.applies_to(self.group, self.target) {
                if let Ok(encoded) = encode_append(self.group, first.clone()) {
                    self.throttle.admit(append_bytes(&encoded)).await;
                }
            }
            let lone_request = input.size_hint() == (0, Some(0));
            let session = futures_util::stream::iter(std::iter::once(first)).chain(input);
            if lone_request {
                return stream_append_sequential(self, session, option).await;
            }
            let group = self.group;
            // Requests sent so far: an answer is awaited (and timed) only while one is
            // outstanding — a session may sit idle between its requests.
            let (sent, sent_watch) = tokio::sync::watch::channel(0u64);
            // The request side ends when the answer side is dropped (openraft gave up on the
            // session): left running, it would keep taking appends from openraft's shared
            // session state and send them where no one reads the answers.
            let (answers_dropped, answers_gone) = tokio::sync::oneshot::channel::<()>();
            let chunks: Arc<Mutex<VecDeque<usize>>> = Arc::default();
            let counted = Arc::clone(&chunks);
            let sizes: Arc<Mutex<VecDeque<u64>>> = Arc::default();
            let sized = Arc::clone(&sizes);
            // An entry that cannot be encoded ends the session here; the answers received so
            // far stay in order, and openraft retries the rest.
            let (throttle, target) = (self.throttle.clone(), self.target);
            let requests = session
                .enumerate()
                .then(move |(n, request)| {
                    let throttle = throttle.clone();
                    async move {
                        let encoded = encode_append(group, request)
                            .inspect_err(
                                |error| tracing::error!(group, %error, "append not encodable; ending the stream"),
                            )
                            .ok()?;
                        // Before it counts as sent: a throttled append is not a slow answer.
                        if n > 0 && throttle.applies_to(group, target) {
                            throttle.admit(append_bytes(&encoded)).await;
                        }
                        Some(encoded)
                    }
                })
                .take_while(|encoded| futures_util::future::ready(encoded.is_some()))
                .filter_map(futures_util::future::ready)
                .map(move |request| {
                    let messages = split_append(request, APPEND_CHUNK_BYTES);
                    // Counted before they go out, so the answer side knows how many answers
                    // make up this request's.
                    counted.lock().expect("chunk counts").push_back(messages.len());
                    sized
                        .lock()
                        .expect("message sizes")
                        .extend(messages.iter().map(append_bytes));
                    sent.send_modify(|count| *count += messages.len() as u64);
                    messages
                })
                .flat_map(futures_util::stream::iter)
                .take_until(answers_gone);
            let wait = option.hard_ttl();
            let setup = wait.max(STREAM_SETUP_MIN);
            let mut client = self.client()?;
            let answers = match tokio::time::timeout(setup, client.append_stream(requests)).await {
                Ok(answers) => answers.map_err(rpc_error)?.into_inner(),
                Err(_) => {
                    let message = format!("append stream not answered within {setup:?}");
                    return Err(RPCError::Unreachable(Unreachable::from_string(message)));
                }
            };
            let session = AnswerStream {
                answers,
                sent: sent_watch,
                received: 0,
                wait,
                _ends_requests: answers_dropped,
                chunks,
                sizes,
            };
            let results = futures_util::stream::unfold(Some(session), |session| async move {
                let mut session = session?;
                let next = session.next_answer().await?;
                // After a failure, a conflict or a higher vote the session ends (dropping it
                // ends the request side too); openraft starts a new one.
                let keep = matches!(next, Ok(Ok(_))).then_some(session);
                Some((next, keep))
            });
            let results: BoxStream<'s, _> = Box::pin(results);
            Ok(results)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        let (mut client, request) = self.json_request(&rpc, &option)?;
        decode(&client.vote(request).await.map_err(rpc_error)?.into_inner().json)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        let (mut client, request) = self.json_request(&rpc, &option)?;
        decode(&client.pre_vote(request).await.map_err(rpc_error)?.into_inner().json)
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        let (mut client, request) = self.json_request(&request, &option)?;
        decode(
            &client
                .transfer_leader(request)
                .await
                .map_err(rpc_error)?
                .into_inner()
                .json,
        )
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: PartitionSnapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<PartitionRaft>, StreamingError<PartitionRaft>> {
        let network = |e: &dyn std::fmt::Display| StreamingError::Network(NetworkError::from_string(e.to_string()));
        let request = SnapshotRequest {
            group: self.group,
            vote_json: serde_json::to_vec(&vote).map_err(|e| network(&e))?.into(),
            meta_json: serde_json::to_vec(&snapshot.meta).map_err(|e| network(&e))?.into(),
            data: snapshot.snapshot.into_inner().into(),
        };
        let mut client = self.client().map_err(StreamingError::Unreachable)?;
        let response =
            client
                .install_snapshot(with_deadline(request, &option))
                .await
                .map_err(|status| match rpc_error(status) {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    other => network(&other),
                })?;
        serde_json::from_slice(&response.into_inner().json).map_err(|e| network(&e))
    }
}
