//! One request's access: who calls (the [`Principal`] the identity interceptor found) and what
//! the ACLs in the metadata let them do. With authorisation off everything is allowed; with it on
//! super users may do anything and everyone else what a rule allows — nothing for anonymous
//! callers.

use super::acl::{allowed, Operation, ResourceType};
use super::identity::{AuthSettings, Principal};
use crate::controller::metadata::ClusterMetadata;
use std::sync::Arc;
use tonic::Request;

/// What the caller of one request may do.
pub struct Access {
    principal: Option<String>,
    /// Everything is allowed: authorisation is off, or the caller is a super user.
    unrestricted: bool,
    metadata: Arc<ClusterMetadata>,
}

impl Access {
    /// The access of `request`'s caller under `auth`, with the ACLs of `metadata`.
    pub fn of<T>(request: &Request<T>, auth: &AuthSettings, metadata: Arc<ClusterMetadata>) -> Access {
        // Every produce and fetch asks: with authorisation off, nothing to look up.
        if !auth.authorization {
            return Access {
                principal: None,
                unrestricted: true,
                metadata,
            };
        }
        let principal = request.extensions().get::<Principal>().map(|p| p.0.clone());
        let super_user = principal.as_ref().is_some_and(|p| auth.super_users.contains(p));
        Access {
            principal,
            unrestricted: !auth.authorization || super_user,
            metadata,
        }
    }

    /// Whether the caller may do `operation` on the resource.
    pub fn may(&self, resource_type: ResourceType, name: &str, operation: Operation) -> bool {
        self.unrestricted
            || self
                .principal
                .as_deref()
                .is_some_and(|principal| allowed(&self.metadata.acls, principal, resource_type, name, operation))
    }

    /// Whether the caller may write to some topic (Kafka lets such a caller initialise an
    /// idempotent producer).
    pub fn may_write_somewhere(&self) -> bool {
        self.unrestricted
            || self.principal.as_deref().is_some_and(|principal| {
                self.metadata.acls.iter().any(|acl| {
                    acl.applies_to(principal)
                        && acl.resource_type == ResourceType::Topic
                        && matches!(acl.operation, Operation::Write | Operation::All)
                })
            })
    }

    /// Why the caller may not do `operation` on the resource (naming only what they named).
    pub fn denial(&self, resource_type: ResourceType, name: &str, operation: Operation) -> String {
        let who = self
            .principal
            .as_deref()
            .map_or_else(|| "an anonymous client".to_string(), |p| format!("principal {p:?}"));
        let what = match resource_type {
            ResourceType::Topic => format!("topic {name:?}"),
            ResourceType::Group => format!("group {name:?}"),
            ResourceType::Cluster => "the cluster".to_string(),
        };
        format!("{who} may not {} {what}", operation.name())
    }
}
