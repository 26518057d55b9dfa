//! Proposing a metadata command from any broker ([`ControllerLink`]): at home when this broker
//! leads the controller, else through the leader's internal `cluster.v1` service — found from
//! the metadata, or, by a broker that has just joined and does not follow the controller group
//! yet, from its bootstrap addresses, following the `NOT_CONTROLLER` hint they answer with.

use super::metadata::MetadataCommand;
use super::{Controller, ControllerError};
use crate::replication::PeerChannels;
use proto::cluster_v1::cluster_client::ClusterClient;
use proto::cluster_v1::ProposeRequest;
use proto::v1::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// How long one forwarded proposal may take.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a proposal did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The controller refused the command (it is invalid against the metadata now).
    #[error("the controller refused it ({code:?}): {message}")]
    Refused {
        /// The wire code of the refusal.
        code: ErrorCode,
        /// The controller's reason.
        message: String,
    },
    /// No controller leader answered; worth trying again later.
    #[error("no controller leader reached: {0}")]
    Unreachable(String),
}

/// A broker's way to the controller leader, wherever it is.
#[derive(Clone)]
pub struct ControllerLink {
    controller: Arc<Controller>,
    channels: PeerChannels,
    bootstrap: Vec<String>,
}

impl ControllerLink {
    /// Proposes through `controller` when it leads, else over `channels` to the leader, asking
    /// the `bootstrap` addresses who that is when the metadata does not say.
    pub fn new(controller: Arc<Controller>, channels: PeerChannels, bootstrap: Vec<String>) -> Self {
        ControllerLink {
            controller,
            channels,
            bootstrap,
        }
    }

    /// The controller replica of this broker.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Proposes `command` to the controller leader; returns once it is applied there.
    pub async fn propose(&self, command: MetadataCommand) -> Result<(), ProposeError> {
        let leader = match self.controller.submit(command.clone()).await {
            Ok(()) => return Ok(()),
            Err(ControllerError::NotController { leader }) => leader,
            Err(ControllerError::Invalid(invalid)) => {
                return Err(ProposeError::Refused {
                    code: ErrorCode::InvalidRequest,
                    message: invalid.to_string(),
                })
            }
            Err(other) => return Err(ProposeError::Unreachable(other.to_string())),
        };
        let json = serde_json::to_vec(&command).expect("commands serialize");
        let metadata = self.controller.metadata();
        let address_of = |id: u64| metadata.brokers.get(&id).map(|b| b.address.clone());
        let mut candidates: Vec<String> = leader.and_then(address_of).into_iter().collect();
        candidates.extend(self.bootstrap.iter().cloned());
        let mut last_error = String::from("no address to try");
        let mut tried = 0;
        while let Some(address) = candidates.first().cloned() {
            candidates.remove(0);
            tried += 1;
            if tried > self.bootstrap.len() + 3 {
                break;
            }
            match self.propose_at(&address, json.clone()).await {
                Ok(()) => return Ok(()),
                Err(Hop::Elsewhere(hint)) => {
                    last_error = format!("{address} does not lead the controller");
                    if let Some(next) = hint.and_then(address_of) {
                        candidates.insert(0, next);
                    }
                }
                Err(Hop::Failed(error)) => last_error = format!("{address}: {error}"),
                Err(Hop::Refused(refused)) => return Err(refused),
            }
        }
        Err(ProposeError::Unreachable(last_error))
    }

    async fn propose_at(&self, address: &str, command_json: Vec<u8>) -> Result<(), Hop> {
        let channel = self.channels.channel(address).map_err(|e| Hop::Failed(e.to_string()))?;
        let mut request = tonic::Request::new(ProposeRequest {
            command_json: command_json.into(),
        });
        request.set_timeout(PROPOSE_TIMEOUT);
        let answer = ClusterClient::new(channel)
            .propose(request)
            .await
            .map_err(|status| Hop::Failed(status.message().to_string()))?
            .into_inner();
        match ErrorCode::try_from(answer.error).unwrap_or(ErrorCode::InvalidRequest) {
            ErrorCode::None => Ok(()),
            ErrorCode::NotController => Err(Hop::Elsewhere(answer.controller)),
            code if code.is_retriable() => Err(Hop::Failed(answer.message)),
            code => Err(Hop::Refused(ProposeError::Refused {
                code,
                message: answer.message,
            })),
        }
    }
}

/// How one forwarded attempt ended, short of success.
enum Hop {
    /// Not the leader; it may know who is.
    Elsewhere(Option<u64>),
    /// Unreachable or a passing error.
    Failed(String),
    /// A final refusal.
    Refused(ProposeError),
}
