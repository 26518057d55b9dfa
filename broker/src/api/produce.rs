//! The produce RPC: validate the request into a batch and acks (`convert`), append it on the
//! partition's local replica (`PartitionReplica::append`), answer with its offset or the refusal.

use super::answer::{Refusal, Refused};
use super::convert;
use super::service::BrokerApi;
use proto::v1::{ErrorCode, ProduceRequest, ProduceResponse};
use tokio::time::Instant;

/// Appends the request's batch; a `NOT_LEADER` answer names the leader to retry at.
pub(super) async fn produce(api: &BrokerApi, request: ProduceRequest) -> ProduceResponse {
    let replica = match api.replica(&request.topic, request.partition) {
        Ok(replica) => replica,
        Err(refusal) => return ProduceResponse::refused(refusal),
    };
    let max_message_bytes = api
        .controller()
        .metadata()
        .topics
        .get(&request.topic)
        .map_or(u32::MAX, |t| t.config.max_message_bytes);
    let produce = match convert::produce(request, max_message_bytes) {
        Ok(produce) => produce,
        Err(refusal) => return ProduceResponse::refused(refusal),
    };
    let deadline = Instant::now() + produce.timeout;
    match replica.append(produce.batch, produce.acks, deadline).await {
        Ok(outcome) => ProduceResponse {
            error: ErrorCode::None as i32,
            message: String::new(),
            base_offset: outcome.base_offset.map(|offset| offset.0),
            leader: None,
            duplicate: outcome.duplicate,
        },
        Err(error) => ProduceResponse::refused(Refusal::replication(&error).naming(error.leader())),
    }
}
