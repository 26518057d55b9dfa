//! The `broker.v1` gRPC service: decode, call the controller or a partition replica, encode.

use super::error_codes::{controller_error_code, replication_error_code};
use super::topic_config::{log_config_from_map, log_config_to_map};
use crate::controller::metadata::{ClusterMetadata, MetadataCommand, TopicMetadata};
use crate::controller::Controller;
use crate::partition::PartitionManager;
use crate::replication::producer_state::BatchIdentity;
use crate::replication::{self, AppendBatch, IsrBounds, PartitionReplica, ReplicationError};
use crate::storage::Offset;
use proto::record_batch::{verify_crc, BatchHeader, NO_PRODUCER_ID};
use proto::v1::broker_server::{Broker, BrokerServer};
use proto::v1::{
    Acks, BrokerDescription, CreateTopicsRequest, DeleteTopicsRequest, ErrorCode, FetchRequest, FetchResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetSpec, PartitionDescription, ProduceRequest, ProduceResponse, StoredBatch, TopicDescription,
    TopicResult, TopicResults, TransferLeadershipRequest, TransferLeadershipResponse,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest a produce waits for its acknowledgement when the request does not say.
const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a fetch long-poll may wait, whatever the request asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
/// How long a leadership transfer may take when the request does not say.
const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetch size when the request gives none.
const DEFAULT_FETCH_BYTES: usize = 1024 * 1024;
/// How long a read waits for a newly elected leader to apply an entry of its own term before
/// answering NOT_LEADER (retriable). Elections settle well within this.
const READ_READINESS_WAIT: Duration = Duration::from_secs(2);

/// What the API needs of the broker: the controller and the local partitions.
pub struct BrokerApi {
    controller: Arc<Controller>,
    partitions: Arc<PartitionManager>,
    isr_bounds: IsrBounds,
}

impl BrokerApi {
    /// The API over this broker's controller replica and partitions.
    pub fn new(controller: Arc<Controller>, partitions: Arc<PartitionManager>, isr_bounds: IsrBounds) -> Self {
        BrokerApi {
            controller,
            partitions,
            isr_bounds,
        }
    }

    /// The tonic service to mount.
    pub fn into_service(self) -> BrokerServer<BrokerApi> {
        BrokerServer::new(self)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }

    fn describe(&self, metadata: &ClusterMetadata, topics: &[String], detailed: bool) -> MetadataResponse {
        let names: Vec<String> = if topics.is_empty() {
            metadata.topics.keys().cloned().collect()
        } else {
            topics.to_vec()
        };
        let topics = names
            .into_iter()
            .map(|name| match metadata.topics.get(&name) {
                Some(topic) => self.describe_topic(topic, detailed),
                None => TopicDescription {
                    name: name.clone(),
                    error: ErrorCode::UnknownTopicOrPartition as i32,
                    message: format!("unknown topic {name:?}"),
                    ..TopicDescription::default()
                },
            })
            .collect();
        MetadataResponse {
            brokers: metadata
                .brokers
                .values()
                .map(|b| BrokerDescription {
                    id: b.id,
                    address: b.address.clone(),
                    rack: b.rack.clone(),
                })
                .collect(),
            controller: self.controller.leader(),
            topics,
        }
    }

    fn describe_topic(&self, topic: &TopicMetadata, detailed: bool) -> TopicDescription {
        let partitions = topic
            .partitions
            .iter()
            .map(|assignment| {
                let mut description = PartitionDescription {
                    partition: assignment.partition,
                    replicas: assignment.replicas.clone(),
                    ..PartitionDescription::default()
                };
                if let Some(replica) = self.partitions.get(&topic.name, assignment.partition) {
                    let status = replica.status(self.isr_bounds);
                    description.leader = status.leader;
                    description.isr = status.isr;
                    if detailed {
                        description.high_watermark = Some(status.high_watermark.0);
                        description.log_start_offset = Some(status.log_start_offset.0);
                        description.caught_up = status.caught_up;
                        description.held_from_elections = status.held_from_elections;
                        description.quiescent = status.quiescent;
                    }
                }
                description
            })
            .collect();
        TopicDescription {
            name: topic.name.clone(),
            error: ErrorCode::None as i32,
            message: String::new(),
            replication_factor: topic.replication_factor,
            partitions,
            configs: if detailed {
                log_config_to_map(&topic.config)
            } else {
                Default::default()
            },
        }
    }

    /// The local replica of a partition, or the error code to answer with.
    fn replica(&self, topic: &str, partition: u32) -> Result<Arc<PartitionReplica>, (ErrorCode, String)> {
        let metadata = self.controller.metadata();
        let known = metadata
            .topics
            .get(topic)
            .is_some_and(|t| (partition as usize) < t.partitions.len());
        if !known {
            return Err((
                ErrorCode::UnknownTopicOrPartition,
                format!("unknown topic or partition {topic}/{partition}"),
            ));
        }
        self.partitions.get(topic, partition).ok_or_else(|| {
            (
                ErrorCode::NotLeader,
                format!("this broker hosts no replica of {topic}/{partition}"),
            )
        })
    }

    async fn topic_command(&self, name: String, command: Result<MetadataCommand, String>) -> TopicResult {
        let command = match command {
            Ok(command) => command,
            Err(message) => {
                return TopicResult {
                    name,
                    error: ErrorCode::InvalidConfig as i32,
                    message,
                    controller: None,
                }
            }
        };
        match self.controller.submit(command).await {
            Ok(()) => TopicResult {
                name,
                error: ErrorCode::None as i32,
                message: String::new(),
                controller: None,
            },
            Err(error) => TopicResult {
                name,
                error: controller_error_code(&error) as i32,
                message: error.to_string(),
                controller: self.controller.leader(),
            },
        }
    }
}

fn produce_error(code: ErrorCode, message: String, leader: Option<u64>) -> Response<ProduceResponse> {
    Response::new(ProduceResponse {
        error: code as i32,
        message,
        base_offset: None,
        leader,
        duplicate: false,
    })
}

fn replication_failure(error: ReplicationError) -> ProduceResponse {
    ProduceResponse {
        error: replication_error_code(&error) as i32,
        message: error.to_string(),
        base_offset: None,
        leader: match error {
            ReplicationError::NotLeader { leader, .. } => leader,
            _ => None,
        },
        duplicate: false,
    }
}

#[tonic::async_trait]
impl Broker for BrokerApi {
    async fn metadata(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        let metadata = self.controller.metadata();
        Ok(Response::new(self.describe(
            &metadata,
            &request.into_inner().topics,
            false,
        )))
    }

    async fn describe_topics(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        let metadata = self.controller.metadata();
        Ok(Response::new(self.describe(
            &metadata,
            &request.into_inner().topics,
            true,
        )))
    }

    async fn create_topics(&self, request: Request<CreateTopicsRequest>) -> Result<Response<TopicResults>, Status> {
        let mut results = Vec::new();
        for spec in request.into_inner().topics {
            let command = log_config_from_map(&spec.configs).map(|config| MetadataCommand::CreateTopic {
                name: spec.name.clone(),
                partitions: spec.partitions,
                replication_factor: spec.replication_factor,
                config,
            });
            results.push(self.topic_command(spec.name, command).await);
        }
        Ok(Response::new(TopicResults { results }))
    }

    async fn delete_topics(&self, request: Request<DeleteTopicsRequest>) -> Result<Response<TopicResults>, Status> {
        let mut results = Vec::new();
        for name in request.into_inner().topics {
            let command = Ok(MetadataCommand::DeleteTopic { name: name.clone() });
            results.push(self.topic_command(name, command).await);
        }
        Ok(Response::new(TopicResults { results }))
    }

    async fn produce(&self, request: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        let request = request.into_inner();
        let replica = match self.replica(&request.topic, request.partition) {
            Ok(replica) => replica,
            Err((code, message)) => return Ok(produce_error(code, message, None)),
        };
        let max_bytes = self
            .controller
            .metadata()
            .topics
            .get(&request.topic)
            .map_or(u32::MAX, |t| t.config.max_message_bytes);
        if request.records.len() > max_bytes as usize {
            let message = format!(
                "record batch of {} bytes exceeds max_message_bytes {max_bytes}",
                request.records.len()
            );
            return Ok(produce_error(ErrorCode::RecordTooLarge, message, None));
        }
        let header = match BatchHeader::parse(&request.records).and_then(|h| verify_crc(&request.records).map(|()| h)) {
            Ok(header) => header,
            Err(error) => return Ok(produce_error(ErrorCode::InvalidRequest, error.to_string(), None)),
        };
        let timeout = match request.timeout_ms {
            0 => DEFAULT_PRODUCE_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let acks = match Acks::try_from(request.acks).unwrap_or(Acks::All) {
            Acks::None => replication::Acks::None,
            Acks::Leader => replication::Acks::Leader,
            Acks::All => replication::Acks::All,
        };
        let batch = if header.producer_id != NO_PRODUCER_ID {
            if acks != replication::Acks::All {
                let message = "idempotent batches need acks=all (as in Kafka)".to_string();
                return Ok(produce_error(ErrorCode::InvalidRequest, message, None));
            }
            if header.producer_id < 0 || header.producer_epoch < 0 || header.base_sequence < 0 {
                let message = format!(
                    "invalid producer stamp: id {}, epoch {}, sequence {}",
                    header.producer_id, header.producer_epoch, header.base_sequence
                );
                return Ok(produce_error(ErrorCode::InvalidRequest, message, None));
            }
            let identity = BatchIdentity::new(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.record_count,
            );
            AppendBatch::idempotent(request.records, identity)
        } else {
            AppendBatch::plain(request.records)
        };
        let deadline = tokio::time::Instant::now() + timeout;
        Ok(Response::new(match replica.append(batch, acks, deadline).await {
            Ok(outcome) => ProduceResponse {
                error: ErrorCode::None as i32,
                message: String::new(),
                base_offset: outcome.base_offset.map(|o| o.0),
                leader: None,
                duplicate: outcome.duplicate,
            },
            Err(error) => replication_failure(error),
        }))
    }

    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchResponse>, Status> {
        let request = request.into_inner();
        let error = |code: ErrorCode, message: String, leader: Option<u64>| {
            Response::new(FetchResponse {
                error: code as i32,
                message,
                leader,
                ..FetchResponse::default()
            })
        };
        let replica = match self.replica(&request.topic, request.partition) {
            Ok(replica) => replica,
            Err((code, message)) => return Ok(error(code, message, None)),
        };
        if let Err(e) = replica
            .ready_to_read(tokio::time::Instant::now() + READ_READINESS_WAIT)
            .await
        {
            return Ok(error(replication_error_code(&e), e.to_string(), replica.leader()));
        }
        let from = Offset(request.offset);
        let max_bytes = match request.max_bytes {
            0 => DEFAULT_FETCH_BYTES,
            n => n as usize,
        };
        if from >= replica.high_watermark() && request.max_wait_ms > 0 && request.min_bytes > 0 {
            let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_FETCH_WAIT);
            replica.wait_for_high_watermark_above(from, wait).await;
        }
        let read = match replica.read_committed(from, max_bytes) {
            Ok(read) => read,
            Err(e) => return Ok(error(replication_error_code(&e), e.to_string(), None)),
        };
        Ok(Response::new(FetchResponse {
            error: ErrorCode::None as i32,
            message: String::new(),
            high_watermark: read.offsets.high_watermark.0,
            log_start_offset: read.offsets.log_start_offset.0,
            batches: read
                .batches
                .into_iter()
                .map(|b| StoredBatch {
                    base_offset: b.base_offset.0,
                    records: b.body,
                })
                .collect(),
            leader: None,
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let answer = |code: ErrorCode, message: String, offset: Option<u64>, leader: Option<u64>| {
            Response::new(ListOffsetsResponse {
                error: code as i32,
                message,
                offset,
                leader,
            })
        };
        let replica = match self.replica(&request.topic, request.partition) {
            Ok(replica) => replica,
            Err((code, message)) => return Ok(answer(code, message, None, None)),
        };
        if let Err(e) = replica
            .ready_to_read(tokio::time::Instant::now() + READ_READINESS_WAIT)
            .await
        {
            return Ok(answer(
                replication_error_code(&e),
                e.to_string(),
                None,
                replica.leader(),
            ));
        }
        let offsets = match replica.committed_offsets() {
            Ok(offsets) => offsets,
            Err(e) => return Ok(answer(replication_error_code(&e), e.to_string(), None, None)),
        };
        let offset = match OffsetSpec::try_from(request.spec).unwrap_or(OffsetSpec::Latest) {
            OffsetSpec::Earliest => Some(offsets.log_start_offset.0),
            OffsetSpec::Latest => Some(offsets.high_watermark.0),
            OffsetSpec::Timestamp => match replica.offset_for_timestamp(request.timestamp) {
                Ok(offset) => offset.map(|o| o.0),
                Err(e) => return Ok(answer(replication_error_code(&e), e.to_string(), None, None)),
            },
        };
        Ok(answer(ErrorCode::None, String::new(), offset, None))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        let request = request.into_inner();
        let answer = |code: ErrorCode, message: String, leader: Option<u64>| {
            Response::new(TransferLeadershipResponse {
                error: code as i32,
                message,
                leader,
            })
        };
        let replica = match self.replica(&request.topic, request.partition) {
            Ok(replica) => replica,
            Err((code, message)) => return Ok(answer(code, message, None)),
        };
        let hosts_a_replica = self
            .controller
            .metadata()
            .topics
            .get(&request.topic)
            .and_then(|t| t.partitions.iter().find(|p| p.partition == request.partition))
            .is_some_and(|p| p.replicas.contains(&request.to));
        if !hosts_a_replica {
            let message = format!(
                "broker {} holds no replica of {}/{}",
                request.to, request.topic, request.partition
            );
            return Ok(answer(ErrorCode::InvalidRequest, message, None));
        }
        let timeout = match request.timeout_ms {
            0 => DEFAULT_TRANSFER_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        Ok(match replica.transfer_leadership(request.to, timeout).await {
            Ok(()) => answer(ErrorCode::None, String::new(), None),
            Err(e) => answer(replication_error_code(&e), e.to_string(), replica.leader()),
        })
    }

    async fn init_producer_id(
        &self,
        _request: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        Ok(Response::new(match self.controller.init_producer_id().await {
            Ok((producer_id, epoch)) => InitProducerIdResponse {
                error: ErrorCode::None as i32,
                message: String::new(),
                producer_id,
                producer_epoch: i32::from(epoch),
                controller: None,
            },
            Err(error) => InitProducerIdResponse {
                error: controller_error_code(&error) as i32,
                message: error.to_string(),
                producer_id: -1,
                producer_epoch: -1,
                controller: self.controller.leader(),
            },
        }))
    }
}
