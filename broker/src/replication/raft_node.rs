//! The running openraft node of a partition ([`PartitionRaftNode`]) and the nodes hosted on this
//! broker ([`HostedGroups`]): by group id, with the groups whose votes are held.
//!
//! Shared by the Raft RPC router (`raft_service`), quiescence (`quiesce`) and the replicas; it
//! depends on none of them, so that they need not depend on each other.

use super::catch_up::CatchUpRule;
use super::state_machine::PartitionStateMachine;
use super::types::PartitionRaft;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A running partition Raft node.
pub type PartitionRaftNode = openraft::Raft<PartitionRaft, PartitionStateMachine>;

/// The Raft nodes hosted on this broker, by group id, and the groups whose local replica lost
/// entries it had acknowledged: until the replica has those entries back they grant votes only
/// to candidates their rule allows (see [`CatchUpRule`]). Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct HostedGroups {
    nodes: Arc<RwLock<HashMap<u64, PartitionRaftNode>>>,
    votes_held: Arc<RwLock<HashMap<u64, CatchUpRule>>>,
}

impl HostedGroups {
    /// Makes `raft` reachable as group `group`.
    pub fn insert(&self, group: u64, raft: PartitionRaftNode) {
        self.nodes.write().expect("raft group map").insert(group, raft);
    }

    /// Forgets group `group`'s node, returning it.
    pub fn remove(&self, group: u64) -> Option<PartitionRaftNode> {
        self.nodes.write().expect("raft group map").remove(&group)
    }

    /// The node of group `group`, if hosted here.
    pub fn get(&self, group: u64) -> Option<PartitionRaftNode> {
        self.nodes.read().expect("raft group map").get(&group).cloned()
    }

    /// The hosted groups `keep` accepts, with their nodes.
    pub(crate) fn all_where(&self, keep: impl Fn(u64) -> bool) -> Vec<(u64, PartitionRaftNode)> {
        let nodes = self.nodes.read().expect("raft group map");
        nodes
            .iter()
            .filter(|(id, _)| keep(**id))
            .map(|(id, raft)| (*id, raft.clone()))
            .collect()
    }

    /// Refuses the vote requests of `group` that `rule` does not allow, until
    /// [`release_votes`](Self::release_votes).
    pub(crate) fn hold_votes(&self, group: u64, rule: CatchUpRule) {
        self.votes_held.write().expect("held votes").insert(group, rule);
    }

    /// Lets `group` vote again.
    pub fn release_votes(&self, group: u64) {
        self.votes_held.write().expect("held votes").remove(&group);
    }

    /// Whether `group` refuses votes now.
    pub fn votes_held(&self, group: u64) -> bool {
        self.votes_held.read().expect("held votes").contains_key(&group)
    }

    /// The rule `group`'s votes are held under, if they are.
    pub(crate) fn held_votes_rule(&self, group: u64) -> Option<CatchUpRule> {
        self.votes_held.read().expect("held votes").get(&group).copied()
    }
}
