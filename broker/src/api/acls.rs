//! AddAcls, RemoveAcls, ListAcls: the access-control rules in the controller's metadata,
//! served by the controller leader, administered by super users (see `users`); and the one
//! place a denied request becomes a refusal ([`denied`]).

use super::answer::Refusal;
use super::service::BrokerApi;
use super::users::unauthorised;
use crate::controller::metadata::MetadataCommand;
use crate::security::access::Access;
use crate::security::acl::{AclBinding, Operation, PatternType, ResourceType};
use proto::v1::{
    AclPatternType, AclResourceType, AclsRequest, ErrorCode, ListAclsRequest, ListAclsResponse, UserResult,
};

/// `Ok` if `access` allows `operation` on the resource, else the refusal naming them.
pub(super) fn check(
    access: &Access,
    resource_type: ResourceType,
    name: &str,
    operation: Operation,
) -> Result<(), Refusal> {
    if access.may(resource_type, name, operation) {
        return Ok(());
    }
    let code = match resource_type {
        ResourceType::Topic => ErrorCode::TopicAuthorizationFailed,
        ResourceType::Group => ErrorCode::GroupAuthorizationFailed,
        ResourceType::Cluster => ErrorCode::ClusterAuthorizationFailed,
    };
    Err(Refusal::new(code, access.denial(resource_type, name, operation)))
}

fn from_wire(binding: proto::v1::AclBinding) -> Result<AclBinding, String> {
    let resource_type = match AclResourceType::try_from(binding.resource_type) {
        Ok(AclResourceType::Topic) => ResourceType::Topic,
        Ok(AclResourceType::Group) => ResourceType::Group,
        Ok(AclResourceType::Cluster) => ResourceType::Cluster,
        _ => return Err("a rule names a resource type: topic, group or cluster".into()),
    };
    let pattern_type = match AclPatternType::try_from(binding.pattern_type) {
        Ok(AclPatternType::Prefixed) => PatternType::Prefixed,
        // Unspecified is literal, as Kafka's default.
        _ => PatternType::Literal,
    };
    let operation = Operation::from_name(&binding.operation).ok_or_else(|| {
        format!(
            "unknown operation {:?} (all, read, write, create, delete, describe, alter-configs, alter)",
            binding.operation
        )
    })?;
    Ok(AclBinding {
        principal: binding.principal,
        resource_type,
        resource_name: binding.resource_name,
        pattern_type,
        operation,
    })
}

fn to_wire(binding: &AclBinding) -> proto::v1::AclBinding {
    proto::v1::AclBinding {
        principal: binding.principal.clone(),
        resource_type: match binding.resource_type {
            ResourceType::Topic => AclResourceType::Topic,
            ResourceType::Group => AclResourceType::Group,
            ResourceType::Cluster => AclResourceType::Cluster,
        } as i32,
        resource_name: binding.resource_name.clone(),
        pattern_type: match binding.pattern_type {
            PatternType::Literal => AclPatternType::Literal,
            PatternType::Prefixed => AclPatternType::Prefixed,
        } as i32,
        operation: binding.operation.name().to_string(),
    }
}

fn result(outcome: Result<(), Refusal>) -> UserResult {
    match outcome {
        Ok(()) => UserResult::default(),
        Err(refusal) => UserResult {
            error: refusal.code as i32,
            message: refusal.message,
            controller: refusal.leader,
        },
    }
}

/// Adds (`add`) or removes rules.
pub(super) async fn change(api: &BrokerApi, authorised: bool, request: AclsRequest, add: bool) -> UserResult {
    if !authorised {
        return result(Err(unauthorised()));
    }
    let bindings = match request
        .bindings
        .into_iter()
        .map(from_wire)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(bindings) => bindings,
        Err(message) => return result(Err(Refusal::new(ErrorCode::InvalidRequest, message))),
    };
    let command = match add {
        true => MetadataCommand::AddAcls { bindings },
        false => MetadataCommand::RemoveAcls { bindings },
    };
    let outcome = api
        .controller()
        .submit(command)
        .await
        .map_err(|error| Refusal::controller(&error, api.controller().leader()));
    result(outcome)
}

/// The rules (of one principal, if asked).
pub(super) fn list(api: &BrokerApi, authorised: bool, request: ListAclsRequest) -> ListAclsResponse {
    if !authorised {
        let refusal = unauthorised();
        return ListAclsResponse {
            bindings: Vec::new(),
            error: refusal.code as i32,
            message: refusal.message,
        };
    }
    let bindings = api
        .controller()
        .metadata()
        .acls
        .iter()
        .filter(|binding| request.principal.as_ref().is_none_or(|p| *p == binding.principal))
        .map(to_wire)
        .collect();
    ListAclsResponse {
        bindings,
        ..ListAclsResponse::default()
    }
}
