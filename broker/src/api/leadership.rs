//! The TransferLeadership RPC: hands a partition's leadership to another of its replicas
//! (operators moving leaders, the nemesis).

use super::answer::Refusal;
use super::convert;
use super::service::BrokerApi;
use proto::v1::{ErrorCode, TransferLeadershipRequest, TransferLeadershipResponse};

/// Transfers the leadership to `request.to`, which must hold a replica of the partition.
pub(super) async fn transfer(
    api: &BrokerApi,
    request: TransferLeadershipRequest,
) -> Result<TransferLeadershipResponse, Refusal> {
    let replica = api.replica(&request.topic, request.partition)?;
    let hosts_a_replica = api
        .controller()
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
        return Err(Refusal::new(ErrorCode::InvalidRequest, message));
    }
    let timeout = convert::transfer_timeout(request.timeout_ms);
    replica
        .transfer_leadership(request.to, timeout)
        .await
        .map_err(|error| Refusal::replication(&error).naming(replica.leader()))?;
    Ok(TransferLeadershipResponse {
        error: ErrorCode::None as i32,
        message: String::new(),
        leader: None,
    })
}
