//! The read RPCs, Fetch and ListOffsets: both wait for the partition's local replica to be a
//! leader fit to answer (`ready_to_read`), then read committed data or offsets. A refusal from
//! readiness names the leader as this replica knows it.

use super::answer::Refusal;
use super::convert;
use super::metrics;
use super::service::BrokerApi;
use crate::replication::PartitionReplica;
use proto::v1::{
    ErrorCode, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetSpec, StoredBatch,
};
use std::time::Duration;
use tokio::time::Instant;

/// How long a read waits for a newly elected leader to apply an entry of its own term before
/// answering NOT_LEADER (retriable). Elections settle well within this.
const READ_READINESS_WAIT: Duration = Duration::from_secs(2);

/// Waits until `replica` may answer a read, or the refusal naming the leader.
async fn ready_to_read(replica: &PartitionReplica) -> Result<(), Refusal> {
    replica
        .ready_to_read(Instant::now() + READ_READINESS_WAIT)
        .await
        .map(|_term| ())
        .map_err(|error| Refusal::replication(&error).naming(replica.leader()))
}

/// Committed batches from the requested offset, long-polling for new ones if asked to.
pub(super) async fn fetch(api: &BrokerApi, request: FetchRequest) -> Result<FetchResponse, Refusal> {
    let replica = api.replica(&request.topic, request.partition)?;
    ready_to_read(&replica).await?;
    let read = convert::fetch(&request);
    if let Some(wait) = read.long_poll {
        if read.from >= replica.high_watermark() {
            replica.wait_for_high_watermark_above(read.from, wait).await;
        }
    }
    let committed = replica
        .read_committed(read.from, read.max_bytes)
        .map_err(|error| Refusal::replication(&error))?;
    metrics::fetched(
        &request.topic,
        committed.batches.iter().map(|b| b.body.len()).sum(),
        committed.batches.iter().map(|b| u64::from(b.record_count)).sum(),
    );
    Ok(FetchResponse {
        error: ErrorCode::None as i32,
        message: String::new(),
        high_watermark: committed.offsets.high_watermark.0,
        log_start_offset: committed.offsets.log_start_offset.0,
        batches: committed
            .batches
            .into_iter()
            .map(|b| StoredBatch {
                base_offset: b.base_offset.0,
                records: b.body,
            })
            .collect(),
        leader: None,
    })
}

/// The earliest, latest (high watermark) or first-at-a-timestamp offset.
pub(super) async fn list_offsets(api: &BrokerApi, request: ListOffsetsRequest) -> Result<ListOffsetsResponse, Refusal> {
    let replica = api.replica(&request.topic, request.partition)?;
    ready_to_read(&replica).await?;
    let offsets = replica
        .committed_offsets()
        .map_err(|error| Refusal::replication(&error))?;
    let offset = match convert::offset_spec(request.spec) {
        OffsetSpec::Earliest => Some(offsets.log_start_offset.0),
        OffsetSpec::Latest => Some(offsets.high_watermark.0),
        OffsetSpec::Timestamp => replica
            .offset_for_timestamp(request.timestamp)
            .map_err(|error| Refusal::replication(&error))?
            .map(|o| o.0),
    };
    Ok(ListOffsetsResponse {
        error: ErrorCode::None as i32,
        message: String::new(),
        offset,
        leader: None,
    })
}
