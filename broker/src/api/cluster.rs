//! The internal `cluster.v1.Cluster` service: another broker proposes a metadata command
//! through this one, which must lead the controller (`NOT_CONTROLLER` names the leader
//! otherwise). Brokers register themselves this way when they join, and partition leaders
//! report finished replica moves.

use super::error_codes::controller_error_code;
use crate::controller::metadata::MetadataCommand;
use crate::controller::{Controller, ControllerError};
use proto::cluster_v1::cluster_server::{Cluster, ClusterServer};
use proto::cluster_v1::{ProposeRequest, ProposeResponse};
use proto::v1::ErrorCode;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `cluster.v1.Cluster` service of this broker.
pub struct ClusterApi {
    controller: Arc<Controller>,
}

impl ClusterApi {
    /// The service over this broker's controller replica.
    pub fn new(controller: Arc<Controller>) -> Self {
        ClusterApi { controller }
    }

    /// The tonic service to mount.
    pub fn into_service(self) -> ClusterServer<ClusterApi> {
        ClusterServer::new(self)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn propose(&self, request: Request<ProposeRequest>) -> Result<Response<ProposeResponse>, Status> {
        let command: MetadataCommand = match serde_json::from_slice(&request.get_ref().command_json) {
            Ok(command) => command,
            Err(error) => {
                return Ok(Response::new(ProposeResponse {
                    error: ErrorCode::InvalidRequest as i32,
                    message: format!("undecodable metadata command: {error}"),
                    controller: None,
                }))
            }
        };
        let answer = match self.controller.submit(command).await {
            Ok(()) => ProposeResponse {
                error: ErrorCode::None as i32,
                message: String::new(),
                controller: None,
            },
            Err(error) => ProposeResponse {
                error: controller_error_code(&error) as i32,
                message: error.to_string(),
                controller: match error {
                    ControllerError::NotController { leader } => leader,
                    _ => self.controller.leader(),
                },
            },
        };
        Ok(Response::new(answer))
    }
}
