//! The one way a handler answers a refusal: handlers return `Result<Response, Refusal>` (a
//! [`Refusal`]: wire code, message, and whom to retry at), and [`answer`] puts a refusal into the
//! RPC's response through [`Refused`]. The code always comes from
//! [`error_codes`](super::error_codes), the single wire mapping.

use super::error_codes::{controller_error_code, group_error_code, replication_error_code};
use crate::controller::ControllerError;
use crate::coordinator::GroupError;
use crate::replication::ReplicationError;
use proto::v1::{
    ConsumerGroupHeartbeatResponse, DeleteGroupResponse, DescribeGroupResponse, ErrorCode, FetchResponse,
    FindCoordinatorResponse, InitProducerIdResponse, ListOffsetsResponse, OffsetCommitResponse, OffsetFetchResponse,
    ProduceResponse, ReassignmentResult, TopicResult, TransferLeadershipResponse,
};

/// Why a request was refused, in wire terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The wire error code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// Where to retry: the partition's leader (or, for controller requests, the controller).
    pub leader: Option<u64>,
}

impl Refusal {
    /// A refusal the API decides itself (lookup, validation), naming no leader.
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            leader: None,
        }
    }

    /// A replication error, naming no leader (see [`Self::naming`]).
    pub(super) fn replication(error: &ReplicationError) -> Self {
        Refusal::new(replication_error_code(error), error.to_string())
    }

    /// A controller error; `controller` is the controller leader as this broker knows it.
    pub(super) fn controller(error: &ControllerError, controller: Option<u64>) -> Self {
        Refusal::new(controller_error_code(error), error.to_string()).naming(controller)
    }

    /// A refused group request; a `NotCoordinator` names the coordinator if known.
    pub(super) fn group(error: &GroupError) -> Self {
        let leader = match error {
            GroupError::NotCoordinator { leader, .. } => *leader,
            _ => None,
        };
        Refusal::new(group_error_code(error), error.to_string()).naming(leader)
    }

    /// The same refusal, naming `leader` as the one to retry at.
    pub(super) fn naming(self, leader: Option<u64>) -> Self {
        Refusal { leader, ..self }
    }
}

/// The response to send: the handler's, or its refusal (counted).
pub(super) fn answer<R: Refused>(result: Result<R, Refusal>) -> R {
    result.unwrap_or_else(|refusal| {
        count_refusal(R::API, refusal.code);
        R::refused(refusal)
    })
}

/// Counts a refused request: `broker_request_errors_total{api, code}`. Both labels are bounded
/// (the RPC families below and the wire codes of `ErrorCode`), so the series stay few.
fn count_refusal(api: &'static str, code: ErrorCode) {
    // The label is the code's name as docs/error-codes.md writes it (`NOT_LEADER`).
    let code = code.as_str_name().trim_start_matches("ERROR_CODE_");
    metrics::counter!("broker_request_errors_total", "api" => api, "code" => code).increment(1);
}

/// A response that can carry a [`Refusal`]: every other field is left empty.
pub(super) trait Refused {
    /// The RPC (family) whose response this is, as the `api` label of error counts.
    const API: &'static str;

    /// The response refusing the request.
    fn refused(refusal: Refusal) -> Self;
}

/// The partition RPCs' responses: a refusal is `error`, `message` and the `leader` to retry at,
/// every other field empty.
macro_rules! refused_naming_the_leader {
    ($($response:ty => $api:literal),*) => {$(
        impl Refused for $response {
            const API: &'static str = $api;

            // (Some of these responses have no other field.)
            #[allow(clippy::needless_update)]
            fn refused(refusal: Refusal) -> Self {
                Self {
                    error: refusal.code as i32,
                    message: refusal.message,
                    leader: refusal.leader,
                    ..Self::default()
                }
            }
        }
    )*};
}

refused_naming_the_leader!(
    ProduceResponse => "Produce",
    FetchResponse => "Fetch",
    ListOffsetsResponse => "ListOffsets",
    TransferLeadershipResponse => "TransferLeadership",
    ConsumerGroupHeartbeatResponse => "ConsumerGroupHeartbeat",
    OffsetCommitResponse => "OffsetCommit",
    OffsetFetchResponse => "OffsetFetch",
    DescribeGroupResponse => "DescribeGroup",
    DeleteGroupResponse => "DeleteGroup"
);

impl Refused for FindCoordinatorResponse {
    const API: &'static str = "FindCoordinator";

    fn refused(refusal: Refusal) -> Self {
        FindCoordinatorResponse {
            error: refusal.code as i32,
            message: refusal.message,
            coordinator: refusal.leader,
            ..FindCoordinatorResponse::default()
        }
    }
}

impl Refused for InitProducerIdResponse {
    const API: &'static str = "InitProducerId";

    fn refused(refusal: Refusal) -> Self {
        InitProducerIdResponse {
            error: refusal.code as i32,
            message: refusal.message,
            producer_id: -1,
            producer_epoch: -1,
            controller: refusal.leader,
        }
    }
}

impl Refused for ReassignmentResult {
    const API: &'static str = "Reassignments";

    fn refused(refusal: Refusal) -> Self {
        ReassignmentResult {
            error: refusal.code as i32,
            message: refusal.message,
            controller: refusal.leader,
        }
    }
}

impl Refused for TopicResult {
    /// CreateTopics, DeleteTopics and CreatePartitions answer with these.
    const API: &'static str = "TopicCommands";

    /// Without the topic's name: set it on the result.
    fn refused(refusal: Refusal) -> Self {
        TopicResult {
            name: String::new(),
            error: refusal.code as i32,
            message: refusal.message,
            controller: refusal.leader,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_fills_only_the_error_fields() {
        let refusal = Refusal::new(ErrorCode::NotLeader, "elsewhere").naming(Some(3));
        let produce = ProduceResponse::refused(refusal.clone());
        assert_eq!(
            produce,
            ProduceResponse {
                error: ErrorCode::NotLeader as i32,
                message: "elsewhere".into(),
                base_offset: None,
                leader: Some(3),
                duplicate: false,
            }
        );
        let init = InitProducerIdResponse::refused(refusal);
        assert_eq!(
            (init.producer_id, init.producer_epoch, init.controller),
            (-1, -1, Some(3))
        );
        let timeout = ReplicationError::Timeout {
            group: 4,
            what: "a leader".into(),
        };
        let refusal = Refusal::replication(&timeout);
        assert_eq!((refusal.code, refusal.leader), (ErrorCode::RequestTimedOut, None));
        assert!(refusal.message.contains("group 4"), "{}", refusal.message);
    }
}
