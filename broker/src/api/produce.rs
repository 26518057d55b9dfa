//! The produce RPC: validate the request into a batch and acks (`convert`), append it on the
//! partition's local replica (`PartitionReplica::append`), answer with its offset or the refusal.

use super::answer::Refusal;
use super::convert;
use super::metrics;
use super::service::BrokerApi;
use proto::v1::{ErrorCode, ProduceRequest, ProduceResponse};
use tokio::time::Instant;

/// Appends the request's batch; a `NOT_LEADER` refusal names the leader to retry at.
pub(super) async fn produce(api: &BrokerApi, request: ProduceRequest) -> Result<ProduceResponse, Refusal> {
    if super::topics::is_internal(&request.topic) {
        return Err(super::topics::internal_topic_refusal(&request.topic));
    }
    let replica = api.replica(&request.topic, request.partition)?;
    // A leader on a full disk refuses (retriable); a follower answers NOT_LEADER as always.
    if replica.is_leader() {
        if let Err(full) = api.check_writable() {
            crate::storage::metrics::write_refused_low_space();
            return Err(Refusal::new(
                super::error_codes::storage_error_code(&full),
                full.to_string(),
            ));
        }
    }
    let max_message_bytes = api
        .controller()
        .metadata()
        .topics
        .get(&request.topic)
        .map_or(u32::MAX, |t| t.config.max_message_bytes);
    let request_topic = request.topic.clone();
    let produce = convert::produce(request, max_message_bytes)?;
    let deadline = Instant::now() + produce.timeout;
    let (bytes, records) = (produce.batch.records.len(), produce.record_count);
    let topic = request_topic;
    let outcome = replica
        .append(produce.batch, produce.acks, deadline)
        .await
        .map_err(|error| Refusal::replication(&error).naming(error.leader()))?;
    if !outcome.duplicate {
        metrics::produced(&topic, bytes, records);
    }
    Ok(ProduceResponse {
        error: ErrorCode::None as i32,
        message: String::new(),
        base_offset: outcome.base_offset.map(|offset| offset.0),
        leader: None,
        duplicate: outcome.duplicate,
    })
}
