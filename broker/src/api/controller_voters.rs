//! SetControllerVoters: changing the controller's quorum (a dead controller voter replaced, the
//! quorum grown or moved), served by the controller leader.

use super::answer::{answer, Refusal};
use super::service::BrokerApi;
use proto::v1::{ControllerVotersRequest, ErrorCode, ReassignmentResult};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest the change may take before the caller is told to ask again (it resumes where it
/// stopped).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the requested brokers the controller's voters.
pub(super) async fn set(api: &BrokerApi, request: ControllerVotersRequest) -> ReassignmentResult {
    answer(
        change(api, request.voters)
            .await
            .map(|()| ReassignmentResult::default()),
    )
}

async fn change(api: &BrokerApi, requested: Vec<u64>) -> Result<(), Refusal> {
    let controller = api.controller();
    if requested.is_empty() {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "the controller needs at least one voter",
        ));
    }
    let metadata = controller.metadata();
    let mut voters = BTreeMap::new();
    for id in requested {
        let Some(broker) = metadata.brokers.get(&id) else {
            return Err(Refusal::new(
                ErrorCode::UnknownBroker,
                format!("broker {id} is not registered"),
            ));
        };
        if voters.insert(id, broker.address.clone()).is_some() {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!("broker {id} is named twice"),
            ));
        }
    }
    controller
        .change_voters(voters, CHANGE_TIMEOUT)
        .await
        .map_err(|error| Refusal::controller(&error, controller.leader()))
}
