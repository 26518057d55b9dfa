//! UpsertUser, DeleteUser, ListUsers: SCRAM users in the controller's metadata, served by the
//! controller leader. With authentication required only super users may call them
//! (`CLUSTER_AUTHORIZATION_FAILED` otherwise, naming nothing about the users).

use super::answer::Refusal;
use super::service::BrokerApi;
use crate::controller::metadata::{MetadataCommand, UserCredentials};
use proto::v1::{DeleteUserRequest, ErrorCode, ListUsersResponse, UpsertUserRequest, UserDescription, UserResult};

fn refused(refusal: Refusal) -> UserResult {
    UserResult {
        error: refusal.code as i32,
        message: refusal.message,
        controller: refusal.leader,
    }
}

/// The answer to a caller who may not administer users.
pub(super) fn unauthorised() -> Refusal {
    Refusal::new(
        ErrorCode::ClusterAuthorizationFailed,
        "only super users may administer users",
    )
}

async fn submit(api: &BrokerApi, command: MetadataCommand) -> UserResult {
    match api.controller().submit(command).await {
        Ok(()) => UserResult::default(),
        Err(error) => refused(Refusal::controller(&error, api.controller().leader())),
    }
}

pub(super) async fn upsert(api: &BrokerApi, authorised: bool, request: UpsertUserRequest) -> UserResult {
    if !authorised {
        return refused(unauthorised());
    }
    if request.mechanism != proto::scram::MECHANISM {
        return refused(Refusal::new(
            ErrorCode::InvalidRequest,
            format!(
                "mechanism {:?}: only {} is supported",
                request.mechanism,
                proto::scram::MECHANISM
            ),
        ));
    }
    let command = MetadataCommand::UpsertUser {
        name: request.name,
        credentials: UserCredentials {
            salt: request.salt.to_vec(),
            iterations: request.iterations,
            stored_key: request.stored_key.to_vec(),
            server_key: request.server_key.to_vec(),
        },
    };
    submit(api, command).await
}

pub(super) async fn delete(api: &BrokerApi, authorised: bool, request: DeleteUserRequest) -> UserResult {
    if !authorised {
        return refused(unauthorised());
    }
    submit(api, MetadataCommand::DeleteUser { name: request.name }).await
}

pub(super) fn list(api: &BrokerApi, authorised: bool) -> ListUsersResponse {
    if !authorised {
        let refusal = unauthorised();
        return ListUsersResponse {
            users: Vec::new(),
            error: refusal.code as i32,
            message: refusal.message,
        };
    }
    let users = api
        .controller()
        .metadata()
        .users
        .iter()
        .map(|(name, credentials)| UserDescription {
            name: name.clone(),
            mechanism: proto::scram::MECHANISM.to_string(),
            iterations: credentials.iterations,
        })
        .collect();
    ListUsersResponse {
        users,
        ..ListUsersResponse::default()
    }
}
