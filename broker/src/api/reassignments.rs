//! The replica-move RPCs: ReassignPartitions, CancelReassignments, DecommissionBroker and
//! RecommissionBroker (controller commands), ListReassignments (from this broker's metadata).

use super::answer::{answer, Refusal};
use super::service::BrokerApi;
use crate::controller::metadata::{MetadataCommand, PartitionMove, PartitionRef};
use proto::v1::{
    BrokerRequest, CancelReassignmentsRequest, ErrorCode, ListReassignmentsResponse, ReassignPartitionsRequest,
    ReassignmentDescription, ReassignmentResult, SetReassignmentThrottleRequest,
};

/// Records a plan of moves (all or none).
pub(super) async fn reassign(api: &BrokerApi, request: ReassignPartitionsRequest) -> ReassignmentResult {
    if request.moves.is_empty() {
        return answer(Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "the plan moves no partition",
        )));
    }
    // `__consumer_offsets` moves like any other topic: its replicas are the brokers' to place,
    // and an operator draining a broker must be able to move them.
    let moves = request
        .moves
        .into_iter()
        .map(|m| PartitionMove {
            topic: m.topic,
            partition: m.partition,
            replicas: m.replicas,
        })
        .collect();
    submit(api, MetadataCommand::ReassignPartitions { moves }).await
}

/// Cancels moves in progress.
pub(super) async fn cancel(api: &BrokerApi, request: CancelReassignmentsRequest) -> ReassignmentResult {
    if request.partitions.is_empty() {
        return answer(Err(Refusal::new(ErrorCode::InvalidRequest, "no partition to cancel")));
    }
    let partitions = request
        .partitions
        .into_iter()
        .map(|p| PartitionRef {
            topic: p.topic,
            partition: p.partition,
        })
        .collect();
    submit(api, MetadataCommand::CancelReassignments { partitions }).await
}

/// Starts moving every replica off a broker.
pub(super) async fn decommission(api: &BrokerApi, request: BrokerRequest) -> ReassignmentResult {
    submit(api, MetadataCommand::DecommissionBroker { broker: request.broker }).await
}

/// Ends a broker's decommission.
pub(super) async fn recommission(api: &BrokerApi, request: BrokerRequest) -> ReassignmentResult {
    submit(api, MetadataCommand::RecommissionBroker { broker: request.broker }).await
}

/// Sets or lifts the throttle on moves' copy traffic.
pub(super) async fn set_throttle(api: &BrokerApi, request: SetReassignmentThrottleRequest) -> ReassignmentResult {
    submit(
        api,
        MetadataCommand::SetReassignmentThrottle {
            bytes_per_sec: request.bytes_per_sec,
        },
    )
    .await
}

/// The moves in progress.
pub(super) fn list(api: &BrokerApi) -> ListReassignmentsResponse {
    let metadata = api.controller().metadata();
    let reassignments = metadata
        .reassignments()
        .map(|(topic, assignment)| {
            let move_ = assignment.reassignment.as_ref().expect("only moves are listed");
            ReassignmentDescription {
                topic: topic.to_string(),
                partition: assignment.partition,
                replicas: assignment.replicas.clone(),
                target: move_.target.clone(),
                adding: assignment.adding(),
                removing: assignment.removing(),
                cancelled: move_.cancelled,
            }
        })
        .collect();
    ListReassignmentsResponse { reassignments }
}

async fn submit(api: &BrokerApi, command: MetadataCommand) -> ReassignmentResult {
    let outcome = api
        .controller()
        .submit(command)
        .await
        .map_err(|error| Refusal::controller(&error, api.controller().leader()));
    answer(outcome.map(|()| ReassignmentResult::default()))
}
