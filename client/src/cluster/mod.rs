//! Connection management and request routing.
//!
//! A [`Cluster`] learns brokers, leaders and the controller from metadata answers, keeps one
//! lazy channel per broker, and sends each call where it belongs, retrying retriable errors by
//! the client's one rule ([`crate::retry::Backoff`]).
//!
//! Routing is by partition leader: a partition call goes to the leader of its partition, and a
//! consumer-group call ([`groups`]) to the leader of the group's partition of
//! `__consumer_offsets` (its coordinator). Both follow the same hints: NOT_LEADER and
//! NOT_COORDINATOR name the new leader if known, and a transport failure forgets the leader.

mod groups;
mod session;

pub use groups::Coordinator;

use crate::error::ClientError;
use crate::retry::RetryPolicy;
use crate::security::Security;
use bytes::Bytes;
use proto::v1::broker_client::BrokerClient;
use proto::v1::{
    Acks, AlterTopicConfigRequest, BrokerRequest, CancelReassignmentsRequest, ControllerVotersRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, ErrorCode, FetchRequest, InitProducerIdRequest,
    ListOffsetsRequest, ListReassignmentsRequest, MetadataRequest, MetadataResponse, OffsetSpec, PartitionReplicas,
    ProduceRequest, ReassignPartitionsRequest, ReassignmentDescription, ReassignmentResult,
    SetReassignmentThrottleRequest, TopicDescription, TopicResult, TopicSpec,
};
use session::{Session, SessionChannel};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// HTTP/2 receive window of a connection to a broker, and of each stream on it: several
/// partitions' fetches of up to `max_partition_fetch_bytes` each (4 MiB in the benchmarks)
/// share one connection, and with hyper's defaults (5 MiB per connection) a fetch waited for
/// window updates mid-response.
const RECEIVE_WINDOW_BYTES: u32 = 32 * 1024 * 1024;
/// Largest HTTP/2 frame a broker may send this client: a 4 MiB fetch response in 16 KiB frames
/// (the protocol's default) was 256 frames to parse and wake on.
const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// How long a broker that failed a metadata request is asked last.
const FAILED_BROKER_PENALTY: Duration = Duration::from_secs(30);
/// How long one broker may take to answer a metadata request before the next one is asked.
const METADATA_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What a leader may take beyond the wait a request asks of it (a fetch's long poll, a
/// produce's commit timeout) before it counts as unreachable: its readiness wait after an
/// election (2 s) and then some.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// How long a leadership transfer may take to answer (the broker waits for the new leader).
const TRANSFER_ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A batch read from a partition.
#[derive(Debug, Clone)]
pub struct FetchedBatch {
    /// Offset of its first record.
    pub base_offset: u64,
    /// A Kafka v2 record batch (decode with `proto::record_batch::decode_records`).
    pub records: Bytes,
}

/// What one produce attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the batch's first record (`None` for `acks=none`).
    pub base_offset: Option<u64>,
    /// The batch was an idempotent retry of one already in the log.
    pub duplicate: bool,
}

/// A handle on a cluster, reached through its brokers.
pub struct Cluster {
    bootstrap: Vec<String>,
    retry: RetryPolicy,
    channels: Mutex<HashMap<String, Channel>>,
    addresses: Mutex<HashMap<u64, String>>,
    leaders: Mutex<HashMap<(String, u32), u64>>,
    /// Each consumer group's partition of `__consumer_offsets`, once a FindCoordinator told it.
    group_partitions: Mutex<HashMap<String, u32>>,
    dial_overrides: HashMap<String, String>,
    /// Brokers that failed a metadata request, and when: asked last for a while.
    failed_recently: Mutex<HashMap<String, Instant>>,
    /// Plaintext or TLS.
    security: Security,
    /// The SCRAM session all channels share, when the client authenticates with a password.
    session: Option<Arc<Session>>,
}

impl Cluster {
    /// A client that bootstraps from `bootstrap` (one or more `host:port`).
    pub fn new(bootstrap: Vec<String>, retry: RetryPolicy) -> Cluster {
        Cluster {
            bootstrap,
            retry,
            channels: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            group_partitions: Mutex::new(HashMap::new()),
            dial_overrides: HashMap::new(),
            failed_recently: Mutex::new(HashMap::new()),
            security: Security::plaintext(),
            session: None,
        }
    }

    /// Connects with `security` (TLS, a client certificate) instead of plaintext.
    pub fn with_security(mut self, security: Security) -> Cluster {
        self.session = security
            .scram()
            .map(|(user, password)| Arc::new(Session::new(user.to_string(), password.to_string())));
        self.security = security;
        self
    }

    /// Connects to `to` whenever a broker's address is `from` (both `host:port`): for brokers
    /// reached through a tunnel or proxy whose advertised addresses are not reachable as is.
    pub fn with_dial_overrides(mut self, overrides: HashMap<String, String>) -> Cluster {
        self.dial_overrides = overrides;
        self
    }

    /// The lazy channel to a broker: shared by every service client of that broker (and
    /// carrying the session's token, when the client authenticates with SCRAM).
    fn channel(&self, address: &str) -> Result<SessionChannel, ClientError> {
        let mut channels = self.channels.lock().expect("channel map");
        let channel = match channels.get(address) {
            Some(channel) => channel.clone(),
            None => {
                let dialed = self.dial_overrides.get(address).map_or(address, String::as_str);
                let channel = self
                    .security
                    .endpoint(dialed)
                    .map_err(|message| ClientError::Unreachable {
                        address: address.to_string(),
                        message,
                    })?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .initial_connection_window_size(RECEIVE_WINDOW_BYTES)
                    .initial_stream_window_size(RECEIVE_WINDOW_BYTES)
                    .max_frame_size(MAX_FRAME_BYTES)
                    .connect_lazy();
                channels.insert(address.to_string(), channel.clone());
                channel
            }
        };
        Ok(SessionChannel::new(channel, self.session.clone()))
    }

    fn client(&self, address: &str) -> Result<BrokerClient<SessionChannel>, ClientError> {
        Ok(broker_client(self.channel(address)?))
    }

    fn unreachable(address: &str, status: tonic::Status) -> ClientError {
        ClientError::from_transport(address, &status)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the deadline passes.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let started = Instant::now();
        let backoff = self.retry.backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let error = match attempt().await {
                Ok(value) => return Ok(value),
                Err(error) if !error.is_retriable() => return Err(error),
                Err(error) => error,
            };
            match backoff.retry_after(attempts, started.elapsed(), self.retry.deadline) {
                Some(wait) => {
                    tracing::debug!(%error, attempts, "retrying");
                    tokio::time::sleep(wait).await;
                }
                None => {
                    return Err(ClientError::RetriesExhausted {
                        attempts,
                        last: Box::new(error),
                    })
                }
            }
        }
    }

    /// Cluster metadata from the first bootstrap broker that answers.
    pub async fn metadata(&self, topics: Vec<String>) -> Result<MetadataResponse, ClientError> {
        self.retrying(|| self.metadata_once(topics.clone(), false)).await
    }

    /// Like [`metadata`](Self::metadata), plus configs and offsets per partition. ISR and
    /// offsets are only known to a partition's leader, so every broker is asked and each
    /// partition is described as its leader sees it (brokers that cannot be reached are skipped).
    pub async fn describe_topics(&self, topics: Vec<String>) -> Result<MetadataResponse, ClientError> {
        let mut merged = self.retrying(|| self.metadata_once(topics.clone(), true)).await?;
        for broker in merged.brokers.clone() {
            let Ok(mut client) = self.client(&broker.address) else {
                continue;
            };
            let request = MetadataRequest { topics: topics.clone() };
            let Ok(Ok(response)) =
                tokio::time::timeout(METADATA_REQUEST_TIMEOUT, client.describe_topics(request)).await
            else {
                continue;
            };
            for theirs in response.into_inner().topics {
                let Some(ours) = merged.topics.iter_mut().find(|t| t.name == theirs.name) else {
                    continue;
                };
                for partition in theirs.partitions {
                    if partition.leader != Some(broker.id) {
                        continue;
                    }
                    if let Some(slot) = ours.partitions.iter_mut().find(|p| p.partition == partition.partition) {
                        *slot = partition;
                    }
                }
            }
        }
        self.learn(&merged);
        Ok(merged)
    }

    async fn metadata_once(&self, topics: Vec<String>, detailed: bool) -> Result<MetadataResponse, ClientError> {
        let mut candidates: Vec<String> = self.addresses.lock().expect("addresses").values().cloned().collect();
        candidates.extend(self.bootstrap.iter().cloned());
        candidates.dedup();
        // Brokers that failed lately go last: a frozen one costs a timeout per request.
        {
            let mut failed = self.failed_recently.lock().expect("failed brokers");
            failed.retain(|_, at| at.elapsed() < FAILED_BROKER_PENALTY);
            candidates.sort_by_key(|address| failed.contains_key(address));
        }
        let mut last = None;
        for address in candidates {
            let mut client = self.client(&address)?;
            let request = MetadataRequest { topics: topics.clone() };
            let response = async {
                if detailed {
                    client.describe_topics(request).await
                } else {
                    client.metadata(request).await
                }
            };
            // A broker that accepts connections but never answers (frozen, overloaded) must not
            // hold the caller: the next one is asked.
            let response = tokio::time::timeout(METADATA_REQUEST_TIMEOUT, response)
                .await
                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer to a metadata request")));
            match response {
                Ok(response) => {
                    let mut metadata = response.into_inner();
                    // Only for named topics: a request for all of them is a listing or a
                    // controller lookup, which need no leaders (and would ask every broker).
                    if !detailed && !topics.is_empty() {
                        self.leaders_from_replicas(&mut metadata, &address).await;
                    }
                    self.learn(&metadata);
                    return Ok(metadata);
                }
                Err(status) => {
                    self.failed_recently
                        .lock()
                        .expect("failed brokers")
                        .insert(address.clone(), Instant::now());
                    last = Some(Self::unreachable(&address, status));
                }
            }
        }
        Err(last.unwrap_or(ClientError::Unreachable {
            address: "(no bootstrap address)".into(),
            message: "nothing to connect to".into(),
        }))
    }

    /// A broker knows the leader only of the partitions it holds a replica of; with more
    /// brokers than a partition has replicas, the one asked (`asked`) may hold none. Each
    /// partition it names no leader for is asked of one of its replicas (one request per broker
    /// asked, at most one round), and described as that replica sees it.
    async fn leaders_from_replicas(&self, metadata: &mut MetadataResponse, asked: &str) {
        let addresses: HashMap<u64, String> = metadata
            .brokers
            .iter()
            .filter(|b| !b.address.is_empty())
            .map(|b| (b.id, b.address.clone()))
            .collect();
        let failed: Vec<String> = self
            .failed_recently
            .lock()
            .expect("failed brokers")
            .keys()
            .cloned()
            .collect();
        // Broker → the topics to ask it about.
        let mut ask: std::collections::BTreeMap<u64, std::collections::BTreeSet<String>> = Default::default();
        for topic in &metadata.topics {
            for partition in topic.partitions.iter().filter(|p| p.leader.is_none()) {
                let usable = |id: &&u64| addresses.get(*id).is_some_and(|a| a != asked);
                let replica = partition
                    .replicas
                    .iter()
                    .filter(usable)
                    .find(|id| !failed.contains(&addresses[*id]))
                    .or_else(|| partition.replicas.iter().find(usable));
                if let Some(replica) = replica {
                    ask.entry(*replica).or_default().insert(topic.name.clone());
                }
            }
        }
        for (broker, topics) in ask {
            let Ok(mut client) = self.client(&addresses[&broker]) else {
                continue;
            };
            let request = MetadataRequest {
                topics: topics.into_iter().collect(),
            };
            let Ok(Ok(answer)) = tokio::time::timeout(METADATA_REQUEST_TIMEOUT, client.metadata(request)).await else {
                // Asked last for a while, like any broker that did not answer.
                self.failed_recently
                    .lock()
                    .expect("failed brokers")
                    .insert(addresses[&broker].clone(), Instant::now());
                continue;
            };
            for theirs in answer.into_inner().topics {
                let Some(ours) = metadata.topics.iter_mut().find(|t| t.name == theirs.name) else {
                    continue;
                };
                for partition in theirs.partitions {
                    // Only what it knows first hand: the partitions it holds a replica of.
                    if partition.leader.is_none() || !partition.replicas.contains(&broker) {
                        continue;
                    }
                    if let Some(slot) = ours
                        .partitions
                        .iter_mut()
                        .find(|p| p.partition == partition.partition && p.leader.is_none())
                    {
                        *slot = partition;
                    }
                }
            }
        }
    }

    fn learn(&self, metadata: &MetadataResponse) {
        let mut addresses = self.addresses.lock().expect("addresses");
        // An empty address: the broker has not registered where clients reach it yet.
        for broker in metadata.brokers.iter().filter(|b| !b.address.is_empty()) {
            addresses.insert(broker.id, broker.address.clone());
        }
        let mut leaders = self.leaders.lock().expect("leaders");
        for topic in &metadata.topics {
            for partition in &topic.partitions {
                if let Some(leader) = partition.leader {
                    leaders.insert((topic.name.clone(), partition.partition), leader);
                }
            }
        }
    }

    fn address_of(&self, node: u64) -> Option<String> {
        self.addresses.lock().expect("addresses").get(&node).cloned()
    }

    async fn controller_client(&self) -> Result<BrokerClient<SessionChannel>, ClientError> {
        let metadata = self.metadata_once(Vec::new(), false).await?;
        let controller = metadata.controller.ok_or(ClientError::Broker {
            code: ErrorCode::NotController,
            message: "no controller elected yet".into(),
        })?;
        let address = self.address_of(controller).ok_or(ClientError::Broker {
            code: ErrorCode::NotController,
            message: format!("controller {controller} is not registered yet"),
        })?;
        self.client(&address)
    }

    async fn topic_results<F, Fut>(&self, call: F) -> Result<Vec<TopicResult>, ClientError>
    where
        F: Fn(BrokerClient<SessionChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<proto::v1::TopicResults>, tonic::Status>>,
    {
        self.retrying(|| async {
            let client = self.controller_client().await?;
            let results = call(client)
                .await
                .map_err(|s| Self::unreachable("controller", s))?
                .into_inner()
                .results;
            // A NOT_CONTROLLER answer means the whole call went to the wrong broker: retry it.
            if let Some(moved) = results.iter().find(|r| r.error == ErrorCode::NotController as i32) {
                return Err(ClientError::Broker {
                    code: ErrorCode::NotController,
                    message: moved.message.clone(),
                });
            }
            Ok(results)
        })
        .await
    }

    /// Creates topics; one result per topic (check each `error`).
    pub async fn create_topics(&self, topics: Vec<TopicSpec>) -> Result<Vec<TopicResult>, ClientError> {
        self.topic_results(|mut client| {
            let topics = topics.clone();
            async move { client.create_topics(CreateTopicsRequest { topics }).await }
        })
        .await
    }

    /// Grows `topic` to `total` partitions (served by the controller); one result.
    pub async fn create_partitions(&self, topic: &str, total: u32) -> Result<Vec<TopicResult>, ClientError> {
        self.topic_results(|mut client| {
            let topic = topic.to_string();
            async move { client.create_partitions(CreatePartitionsRequest { topic, total }).await }
        })
        .await
    }

    /// Changes `topic`'s configs: `set` overrides keys, `reset` restores their defaults (served
    /// by the controller); one result.
    pub async fn alter_topic_config(
        &self,
        topic: &str,
        set: HashMap<String, String>,
        reset: Vec<String>,
    ) -> Result<Vec<TopicResult>, ClientError> {
        self.topic_results(|mut client| {
            let (topic, set, reset) = (topic.to_string(), set.clone(), reset.clone());
            async move {
                client
                    .alter_topic_config(AlterTopicConfigRequest { topic, set, reset })
                    .await
            }
        })
        .await
    }

    /// Deletes topics; one result per topic.
    pub async fn delete_topics(&self, topics: Vec<String>) -> Result<Vec<TopicResult>, ClientError> {
        self.topic_results(|mut client| {
            let topics = topics.clone();
            async move { client.delete_topics(DeleteTopicsRequest { topics }).await }
        })
        .await
    }

    /// The client of the partition's leader as last known (refreshing metadata if unknown).
    async fn leader_client(&self, topic: &str, partition: u32) -> Result<BrokerClient<SessionChannel>, ClientError> {
        Ok(broker_client(self.leader_channel(topic, partition).await?))
    }

    /// The channel to the partition's leader as last known (refreshing metadata if unknown).
    async fn leader_channel(&self, topic: &str, partition: u32) -> Result<SessionChannel, ClientError> {
        let key = (topic.to_string(), partition);
        let known = self.leaders.lock().expect("leaders").get(&key).copied();
        let leader = match known {
            Some(leader) => leader,
            None => {
                let metadata = self.metadata_once(vec![topic.to_string()], false).await?;
                if let Some(t) = metadata.topics.iter().find(|t| t.name == topic) {
                    ClientError::check(t.error, &t.message)?;
                }
                // (An unknown topic is retried: the broker asked may have stale metadata.)
                self.leaders
                    .lock()
                    .expect("leaders")
                    .get(&key)
                    .copied()
                    .ok_or(ClientError::Broker {
                        code: ErrorCode::NotLeader,
                        message: format!("{topic}/{partition} has no leader yet"),
                    })?
            }
        };
        let address = self.address_of(leader).ok_or(ClientError::Broker {
            code: ErrorCode::NotLeader,
            message: format!("leader {leader} has no known address"),
        })?;
        self.channel(&address)
    }

    /// A call to the partition's leader failed in transport: the leader may be gone, so forget
    /// it and let the next attempt ask again.
    fn leader_unreachable(&self, topic: &str, partition: u32, status: tonic::Status) -> ClientError {
        self.leaders
            .lock()
            .expect("leaders")
            .remove(&(topic.to_string(), partition));
        Self::unreachable(topic, status)
    }

    /// Remembers a leader hint from a NOT_LEADER or NOT_COORDINATOR answer (a coordinator is the
    /// leader of its `__consumer_offsets` partition), or forgets the stale leader.
    fn follow_hint(&self, topic: &str, partition: u32, code: i32, hint: Option<u64>) {
        if moves_leadership(code) {
            let key = (topic.to_string(), partition);
            let mut leaders = self.leaders.lock().expect("leaders");
            match hint {
                Some(leader) => leaders.insert(key, leader),
                None => leaders.remove(&key),
            };
        }
    }

    /// Sends a request to the partition's leader, following NOT_LEADER hints and retrying
    /// retriable errors; returns the leader's successful answer.
    /// A leader that has not answered within `answer_within` counts as unreachable like one
    /// that refused the connection: forgotten, and the call goes to whichever leader the
    /// metadata names next. (A frozen leader — stopped, swapping, its disk hung — holds the
    /// connection open; without the bound a consumer's fetch waited until it thawed, long after
    /// another replica had taken over.)
    async fn on_leader<R, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        answer_within: Duration,
        call: F,
    ) -> Result<R, ClientError>
    where
        R: LeaderAnswer,
        F: Fn(BrokerClient<SessionChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        self.retrying(|| async {
            let client = self.leader_client(topic, partition).await?;
            let response = tokio::time::timeout(answer_within, call(client))
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(format!(
                        "the leader did not answer within {answer_within:?}"
                    )))
                })
                .map_err(|status| self.leader_unreachable(topic, partition, status))?
                .into_inner();
            self.follow_hint(topic, partition, response.error(), response.leader());
            ClientError::check(response.error(), response.message())?;
            Ok(response)
        })
        .await
    }

    /// Appends one record batch; returns the offset of its first record (`None` for
    /// `acks=none`). Retries retriable errors — so without idempotence a retried batch may be
    /// written twice.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batch: Bytes,
    ) -> Result<Option<u64>, ClientError> {
        let request = ProduceRequest {
            topic: topic.to_string(),
            partition,
            acks: acks as i32,
            records: batch,
            timeout_ms: 10_000,
        };
        let answer_within = Duration::from_millis(u64::from(request.timeout_ms)) + ANSWER_MARGIN;
        let response = self
            .on_leader(topic, partition, answer_within, |mut client| {
                let request = request.clone();
                async move { client.produce(request).await }
            })
            .await?;
        Ok(response.base_offset)
    }

    /// One produce attempt at the partition's leader as last known (following a NOT_LEADER hint
    /// for the next attempt): no retries, so the caller — the batching producer — decides
    /// what to do with each error.
    pub async fn produce_attempt(
        &self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batch: Bytes,
        timeout: Duration,
    ) -> Result<ProduceAck, ClientError> {
        let mut client = self.leader_client(topic, partition).await?;
        let request = ProduceRequest {
            topic: topic.to_string(),
            partition,
            acks: acks as i32,
            records: batch,
            timeout_ms: timeout.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
        };
        let mut call = tonic::Request::new(request);
        // The server answers a timed-out commit itself; this bounds a hung connection.
        call.set_timeout(timeout + Duration::from_secs(1));
        let response = client
            .produce(call)
            .await
            .map_err(|status| self.leader_unreachable(topic, partition, status))?
            .into_inner();
        self.follow_hint(topic, partition, response.error, response.leader);
        ClientError::check(response.error, &response.message)?;
        Ok(ProduceAck {
            base_offset: response.base_offset,
            duplicate: response.duplicate,
        })
    }

    /// A fresh idempotent producer id and epoch from the controller.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        self.retrying(|| async {
            let mut client = self.controller_client().await?;
            let response = client
                .init_producer_id(InitProducerIdRequest {})
                .await
                .map_err(|s| Self::unreachable("controller", s))?
                .into_inner();
            ClientError::check(response.error, &response.message)?;
            Ok((response.producer_id, response.producer_epoch as i16))
        })
        .await
    }

    /// One replica-move command on the controller leader (retried where it moved or could
    /// not be reached). The controller answers from the metadata it writes, so an unknown
    /// topic or partition is final here, not retried as elsewhere.
    async fn reassignment_command<F, Fut>(&self, call: F) -> Result<(), ClientError>
    where
        F: Fn(BrokerClient<SessionChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<ReassignmentResult>, tonic::Status>>,
    {
        self.retrying(|| async {
            let client = self.controller_client().await?;
            let response = call(client)
                .await
                .map_err(|s| Self::unreachable("controller", s))?
                .into_inner();
            match ClientError::check(response.error, &response.message) {
                Err(error) if error.code() == Some(ErrorCode::UnknownTopicOrPartition) => Ok(Err(error)),
                other => other.map(Ok),
            }
        })
        .await?
    }

    /// Records a plan of replica moves (served by the controller); refused whole or taken whole.
    pub async fn reassign_partitions(&self, moves: Vec<PartitionReplicas>) -> Result<(), ClientError> {
        self.reassignment_command(|mut client| {
            let moves = moves.clone();
            async move { client.reassign_partitions(ReassignPartitionsRequest { moves }).await }
        })
        .await
    }

    /// Cancels replica moves in progress (served by the controller).
    pub async fn cancel_reassignments(&self, partitions: Vec<proto::v1::TopicPartition>) -> Result<(), ClientError> {
        self.reassignment_command(|mut client| {
            let partitions = partitions.clone();
            async move {
                client
                    .cancel_reassignments(CancelReassignmentsRequest { partitions })
                    .await
            }
        })
        .await
    }

    /// Starts (`decommission`) or ends (`!decommission`) the decommission of `broker`
    /// (served by the controller).
    pub async fn decommission_broker(&self, broker: u64, decommission: bool) -> Result<(), ClientError> {
        self.reassignment_command(|mut client| async move {
            let request = BrokerRequest { broker };
            if decommission {
                client.decommission_broker(request).await
            } else {
                client.recommission_broker(request).await
            }
        })
        .await
    }

    /// Makes `voters` the controller's voters (served by the controller leader).
    pub async fn set_controller_voters(&self, voters: Vec<u64>) -> Result<(), ClientError> {
        self.reassignment_command(|mut client| {
            let voters = voters.clone();
            async move { client.set_controller_voters(ControllerVotersRequest { voters }).await }
        })
        .await
    }

    /// Sets (`Some`) or lifts (`None`) the per-broker throttle on moves' copy traffic.
    pub async fn set_reassignment_throttle(&self, bytes_per_sec: Option<u64>) -> Result<(), ClientError> {
        self.reassignment_command(|mut client| async move {
            client
                .set_reassignment_throttle(SetReassignmentThrottleRequest { bytes_per_sec })
                .await
        })
        .await
    }

    /// Creates SCRAM-SHA-256 user `name` or replaces its password (served by the controller).
    /// The keys are derived here, with a fresh salt: the password never leaves this process.
    pub async fn upsert_user(&self, name: &str, password: &str, iterations: u32) -> Result<(), ClientError> {
        let credentials = proto::scram::Credentials::new(password, iterations)
            .map_err(|error| ClientError::Config(error.to_string()))?;
        self.user_command(|mut client| {
            let request = proto::v1::UpsertUserRequest {
                name: name.to_string(),
                mechanism: proto::scram::MECHANISM.to_string(),
                salt: credentials.salt.clone().into(),
                iterations: credentials.iterations,
                stored_key: credentials.stored_key.clone().into(),
                server_key: credentials.server_key.clone().into(),
            };
            async move { client.upsert_user(request).await }
        })
        .await
    }

    /// Deletes user `name` (served by the controller).
    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        self.user_command(|mut client| {
            let request = proto::v1::DeleteUserRequest { name: name.to_string() };
            async move { client.delete_user(request).await }
        })
        .await
    }

    /// The users, names and iteration counts (served by the controller).
    pub async fn list_users(&self) -> Result<Vec<proto::v1::UserDescription>, ClientError> {
        self.retrying(|| async {
            let mut client = self.controller_client().await?;
            let response = client
                .list_users(proto::v1::ListUsersRequest {})
                .await
                .map_err(|s| Self::unreachable("controller", s))?
                .into_inner();
            ClientError::check(response.error, &response.message)?;
            Ok(response.users)
        })
        .await
    }

    /// Adds access-control rules (served by the controller).
    pub async fn add_acls(&self, bindings: Vec<proto::v1::AclBinding>) -> Result<(), ClientError> {
        self.user_command(|mut client| {
            let request = proto::v1::AclsRequest {
                bindings: bindings.clone(),
            };
            async move { client.add_acls(request).await }
        })
        .await
    }

    /// Removes access-control rules (served by the controller; absent ones are ignored).
    pub async fn remove_acls(&self, bindings: Vec<proto::v1::AclBinding>) -> Result<(), ClientError> {
        self.user_command(|mut client| {
            let request = proto::v1::AclsRequest {
                bindings: bindings.clone(),
            };
            async move { client.remove_acls(request).await }
        })
        .await
    }

    /// The access-control rules, of one principal if given (served by the controller).
    pub async fn list_acls(&self, principal: Option<String>) -> Result<Vec<proto::v1::AclBinding>, ClientError> {
        self.retrying(|| async {
            let mut client = self.controller_client().await?;
            let response = client
                .list_acls(proto::v1::ListAclsRequest {
                    principal: principal.clone(),
                })
                .await
                .map_err(|s| Self::unreachable("controller", s))?
                .into_inner();
            ClientError::check(response.error, &response.message)?;
            Ok(response.bindings)
        })
        .await
    }

    async fn user_command<F, Fut>(&self, call: F) -> Result<(), ClientError>
    where
        F: Fn(BrokerClient<SessionChannel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<proto::v1::UserResult>, tonic::Status>>,
    {
        self.retrying(|| async {
            let client = self.controller_client().await?;
            let response = call(client)
                .await
                .map_err(|s| Self::unreachable("controller", s))?
                .into_inner();
            ClientError::check(response.error, &response.message)
        })
        .await
    }

    /// The replica moves in progress, as the controller leader's metadata has them.
    pub async fn list_reassignments(&self) -> Result<Vec<ReassignmentDescription>, ClientError> {
        self.retrying(|| async {
            let mut client = self.controller_client().await?;
            let response = client
                .list_reassignments(ListReassignmentsRequest {})
                .await
                .map_err(|s| Self::unreachable("controller", s))?
                .into_inner();
            Ok(response.reassignments)
        })
        .await
    }

    /// One topic's partitions and configs, as any broker knows them (one request, no retries
    /// beyond reaching a broker). `Ok(None)`: the broker asked does not know the topic.
    pub async fn topic_description(&self, topic: &str) -> Result<Option<TopicDescription>, ClientError> {
        let metadata = self.metadata_once(vec![topic.to_string()], true).await?;
        Ok(metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic && t.error == ErrorCode::None as i32))
    }

    /// Committed batches from `offset` on (waiting up to `max_wait` for data), with the
    /// partition's high watermark.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<(Vec<FetchedBatch>, u64), ClientError> {
        let request = FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes,
            min_bytes: 1,
            max_wait_ms: max_wait.as_millis() as u32,
        };
        // The broker answers within its readiness wait (2 s) plus the long poll.
        let response = self
            .on_leader(topic, partition, max_wait + ANSWER_MARGIN, |mut client| {
                let request = request.clone();
                async move { client.fetch(request).await }
            })
            .await?;
        let batches = response
            .batches
            .into_iter()
            .map(|b| FetchedBatch {
                base_offset: b.base_offset,
                records: b.records,
            })
            .collect();
        Ok((batches, response.high_watermark))
    }

    /// The earliest or latest offset, or the first offset at or after a timestamp.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
        timestamp: i64,
    ) -> Result<Option<u64>, ClientError> {
        let request = ListOffsetsRequest {
            topic: topic.to_string(),
            partition,
            spec: spec as i32,
            timestamp,
        };
        let response = self
            .on_leader(topic, partition, ANSWER_MARGIN, |mut client| {
                let request = request.clone();
                async move { client.list_offsets(request).await }
            })
            .await?;
        Ok(response.offset)
    }
}

impl Cluster {
    /// Asks the partition's leader to hand its leadership to broker `to` (a replica of it);
    /// returns once `to` leads. Retries NOT_LEADER and timeouts like any leader request.
    pub async fn transfer_leadership(&self, topic: &str, partition: u32, to: u64) -> Result<(), ClientError> {
        let request = proto::v1::TransferLeadershipRequest {
            topic: topic.to_string(),
            partition,
            to,
            timeout_ms: 0,
        };
        self.on_leader(topic, partition, TRANSFER_ANSWER_WITHIN, |mut client| {
            let request = request.clone();
            async move { client.transfer_leadership(request).await }
        })
        .await?;
        self.leaders
            .lock()
            .expect("leaders")
            .insert((topic.to_string(), partition), to);
        Ok(())
    }
}

/// Whether an answer with this code means the leader (or coordinator) asked is not the one to
/// ask: its hint, if any, replaces the known leader, else the known leader is forgotten.
fn moves_leadership(code: i32) -> bool {
    [
        ErrorCode::NotLeader,
        ErrorCode::UnknownTopicOrPartition,
        ErrorCode::NotCoordinator,
        ErrorCode::CoordinatorNotAvailable,
    ]
    .iter()
    .any(|moved| *moved as i32 == code)
}

fn broker_client(channel: SessionChannel) -> BrokerClient<SessionChannel> {
    BrokerClient::new(channel)
        .max_decoding_message_size(proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(proto::MAX_MESSAGE_BYTES)
}

/// The common shape of answers from a partition leader (or a group coordinator).
pub(crate) trait LeaderAnswer {
    fn error(&self) -> i32;
    fn message(&self) -> &str;
    fn leader(&self) -> Option<u64>;
}

macro_rules! leader_answer {
    ($($response:ty),*) => {$(
        impl LeaderAnswer for $response {
            fn error(&self) -> i32 {
                self.error
            }
            fn message(&self) -> &str {
                &self.message
            }
            fn leader(&self) -> Option<u64> {
                self.leader
            }
        }
    )*};
}

leader_answer!(
    proto::v1::ProduceResponse,
    proto::v1::FetchResponse,
    proto::v1::ListOffsetsResponse,
    proto::v1::TransferLeadershipResponse,
    proto::v1::ConsumerGroupHeartbeatResponse,
    proto::v1::OffsetCommitResponse,
    proto::v1::OffsetFetchResponse,
    proto::v1::DescribeGroupResponse,
    proto::v1::DeleteGroupResponse
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_coordinator_moves_leadership_like_not_leader() {
        for code in [
            ErrorCode::NotLeader,
            ErrorCode::UnknownTopicOrPartition,
            ErrorCode::NotCoordinator,
            ErrorCode::CoordinatorNotAvailable,
        ] {
            assert!(moves_leadership(code as i32), "{code:?}");
        }
        for code in [ErrorCode::None, ErrorCode::RequestTimedOut, ErrorCode::UnknownMemberId] {
            assert!(!moves_leadership(code as i32), "{code:?}");
        }
    }

    #[test]
    fn a_not_coordinator_hint_replaces_the_known_coordinator_and_no_hint_forgets_it() {
        let cluster = Cluster::new(vec!["127.0.0.1:1".into()], RetryPolicy::default());
        let key = (proto::OFFSETS_TOPIC.to_string(), 3);
        cluster.leaders.lock().unwrap().insert(key.clone(), 1);
        cluster.follow_hint(proto::OFFSETS_TOPIC, 3, ErrorCode::NotCoordinator as i32, Some(2));
        assert_eq!(cluster.leaders.lock().unwrap().get(&key), Some(&2));
        cluster.follow_hint(proto::OFFSETS_TOPIC, 3, ErrorCode::None as i32, None);
        assert_eq!(
            cluster.leaders.lock().unwrap().get(&key),
            Some(&2),
            "a success keeps it"
        );
        cluster.follow_hint(proto::OFFSETS_TOPIC, 3, ErrorCode::CoordinatorNotAvailable as i32, None);
        assert_eq!(cluster.leaders.lock().unwrap().get(&key), None);
    }
}
