//! Access control lists: which principal may do what to which topic, group or the cluster.
//! Allow rules only: with authorisation on, whatever no rule allows is denied (super users
//! aside). Pure: the rules live in the controller's metadata, the checks in the API handlers
//! ([`Access`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
    /// The cluster itself (admin operations); its one resource is named `cluster`.
    Cluster,
}

/// How a rule's name matches a resource's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The same name (`*` matches every name).
    Literal,
    /// Every name that starts with it.
    Prefixed,
}

/// An operation on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Every operation.
    All,
    /// Fetch from a topic; consume as a group member, commit its offsets.
    Read,
    /// Produce to a topic.
    Write,
    /// Create a topic.
    Create,
    /// Delete a topic or a group.
    Delete,
    /// See that it exists: metadata, offsets, a group's state. Implied by every other
    /// operation on the same resource.
    Describe,
    /// Change a topic's configs or partition count.
    AlterConfigs,
    /// Cluster administration: moves, decommissioning, leadership, throttles, ACLs.
    Alter,
}

impl Operation {
    /// Its name on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "all",
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Describe => "describe",
            Operation::AlterConfigs => "alter-configs",
            Operation::Alter => "alter",
        }
    }

    /// From its name.
    pub fn from_name(name: &str) -> Option<Operation> {
        [
            Operation::All,
            Operation::Read,
            Operation::Write,
            Operation::Create,
            Operation::Delete,
            Operation::Describe,
            Operation::AlterConfigs,
            Operation::Alter,
        ]
        .into_iter()
        .find(|op| op.name() == name)
    }
}

/// One rule: `principal` may do `operation` on the resources `pattern` names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// Who (`*`: every authenticated principal).
    pub principal: String,
    /// What kind of resource.
    pub resource_type: ResourceType,
    /// Its name or prefix.
    pub resource_name: String,
    /// Literal or prefixed.
    pub pattern_type: PatternType,
    /// What it allows.
    pub operation: Operation,
}

impl AclBinding {
    /// Whether the rule is about `principal` (named, or `*`).
    pub fn applies_to(&self, principal: &str) -> bool {
        self.principal == "*" || self.principal == principal
    }

    fn names(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    fn allows(&self, operation: Operation) -> bool {
        self.operation == Operation::All || self.operation == operation || operation == Operation::Describe
    }

    /// Checks the rule's fields; the reason it cannot be stored.
    pub fn validate(&self) -> Result<(), String> {
        if self.principal.is_empty() {
            return Err("a rule names a principal (or `*`)".into());
        }
        if self.resource_name.is_empty() {
            return Err("a rule names a resource (or `*`)".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != "cluster" {
            return Err("the cluster resource is named `cluster`".into());
        }
        Ok(())
    }
}

/// Whether `acls` let `principal` do `operation` on the resource.
pub fn allowed(
    acls: &BTreeSet<AclBinding>,
    principal: &str,
    resource_type: ResourceType,
    name: &str,
    operation: Operation,
) -> bool {
    acls.iter()
        .any(|acl| acl.applies_to(principal) && acl.names(resource_type, name) && acl.allows(operation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(principal: &str, resource: ResourceType, name: &str, pattern: PatternType, op: Operation) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            resource_type: resource,
            resource_name: name.into(),
            pattern_type: pattern,
            operation: op,
        }
    }

    #[test]
    fn a_prefixed_read_rule_allows_reading_and_describing_matching_topics_only() {
        let acls: BTreeSet<AclBinding> = [rule(
            "alice",
            ResourceType::Topic,
            "orders-",
            PatternType::Prefixed,
            Operation::Read,
        )]
        .into();
        let may = |who, name, op| allowed(&acls, who, ResourceType::Topic, name, op);
        assert!(may("alice", "orders-eu", Operation::Read));
        assert!(may("alice", "orders-eu", Operation::Describe), "implied");
        assert!(!may("alice", "orders-eu", Operation::Write));
        assert!(!may("alice", "payments", Operation::Read));
        assert!(!may("alice", "orders", Operation::Read), "the prefix includes the dash");
        assert!(!may("bob", "orders-eu", Operation::Read));
        assert!(!allowed(
            &acls,
            "alice",
            ResourceType::Group,
            "orders-eu",
            Operation::Read
        ));
    }

    #[test]
    fn wildcards_and_all() {
        let acls: BTreeSet<AclBinding> = [
            rule(
                "*",
                ResourceType::Topic,
                "public",
                PatternType::Literal,
                Operation::Read,
            ),
            rule("ops", ResourceType::Topic, "*", PatternType::Literal, Operation::All),
        ]
        .into();
        assert!(allowed(&acls, "anyone", ResourceType::Topic, "public", Operation::Read));
        assert!(!allowed(
            &acls,
            "anyone",
            ResourceType::Topic,
            "private",
            Operation::Read
        ));
        assert!(allowed(&acls, "ops", ResourceType::Topic, "private", Operation::Delete));
        assert_eq!(Operation::from_name("alter-configs"), Some(Operation::AlterConfigs));
        assert!(
            rule("a", ResourceType::Cluster, "x", PatternType::Literal, Operation::Alter)
                .validate()
                .is_err()
        );
    }
}
