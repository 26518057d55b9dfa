//! What one `__consumer_offsets` partition holds, and the records that change it.
//!
//! Every replica of the partition materialises the same [`GroupsState`] by applying the
//! partition's committed records in log order ([`GroupsState::apply`]), so a new coordinator
//! already holds every group when it takes over. Records carry whole values (a group's metadata
//! as of a change, a set of committed offsets), never deltas: applying is a replacement, the
//! same record applied twice changes nothing, and a later compaction by key (group, or group +
//! partition) keeps exactly what the state needs. Pure: no clock, no IO.

use super::assignor::Assignor;
use crate::partition::TopicPartition;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One member of a group, as the coordinator tracks it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Chosen by the client, kept across its rejoins.
    pub member_id: String,
    /// Static membership: the instance id a restarted member comes back with.
    pub instance_id: Option<String>,
    /// The member's epoch: the target-assignment epoch it has reconciled to.
    pub epoch: i32,
    /// The epoch before the last change, accepted once more from a member whose answer was lost.
    pub previous_epoch: i32,
    /// Topics the member subscribes to.
    pub subscribed: BTreeSet<String>,
    /// The partitions the member may consume now.
    pub assigned: BTreeSet<TopicPartition>,
    /// Partitions taken from the member that it has not yet confirmed released; nobody else
    /// gets them until it does.
    pub pending_revocation: BTreeSet<TopicPartition>,
    /// How long the member may go without a heartbeat.
    pub session_timeout_ms: u32,
    /// How often the member heartbeats.
    pub heartbeat_interval_ms: u32,
    /// A static member that left for a restart (epoch −2): it keeps its partitions until its
    /// session times out or its instance id comes back.
    pub left_for_restart: bool,
    /// Since when (ms since the epoch) the member has had partitions to release; a member that
    /// does not release them within its rebalance timeout is removed.
    #[serde(default)]
    pub revoking_since_ms: Option<i64>,
    /// How long the member may take to release revoked partitions (Kafka's
    /// `max.poll.interval.ms`).
    #[serde(default)]
    pub rebalance_timeout_ms: u32,
}

impl Member {
    /// Every partition the member holds: assigned or still being revoked.
    pub fn holds(&self, partition: &TopicPartition) -> bool {
        self.assigned.contains(partition) || self.pending_revocation.contains(partition)
    }
}

/// A consumer group's membership and assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group id.
    pub group_id: String,
    /// Bumped whenever membership or subscriptions change.
    pub epoch: i32,
    /// The server-side assignor (the first member's choice while the group was empty).
    pub assignor: Assignor,
    /// Members by member id.
    pub members: BTreeMap<String, Member>,
    /// The group epoch the target assignment was computed for.
    pub target_epoch: i32,
    /// Where each member's partitions should end up.
    pub target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// The partition count of each subscribed topic the target was computed with: a topic
    /// growing or going away means a new target.
    pub target_topics: BTreeMap<String, u32>,
    /// When the last member left (ms since the epoch); `None` while it has members.
    pub empty_since_ms: Option<i64>,
}

/// What a group reports as its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPhase {
    /// No members.
    Empty,
    /// Every member consumes exactly its target.
    Stable,
    /// Partitions are moving: some member is revoking, waiting for partitions or behind the
    /// target epoch.
    Reconciling,
}

impl GroupPhase {
    /// The name the wire and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            GroupPhase::Empty => "empty",
            GroupPhase::Stable => "stable",
            GroupPhase::Reconciling => "reconciling",
        }
    }
}

impl Group {
    /// A group with no members.
    pub fn new(group_id: &str) -> Group {
        Group {
            group_id: group_id.to_string(),
            ..Group::default()
        }
    }

    /// The member's share of the target assignment.
    pub fn target_of(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        self.target.get(member_id).cloned().unwrap_or_default()
    }

    /// Empty, stable or reconciling.
    pub fn phase(&self) -> GroupPhase {
        if self.members.is_empty() {
            return GroupPhase::Empty;
        }
        let settled = self.target_epoch == self.epoch
            && self.members.values().all(|m| {
                m.epoch == self.target_epoch
                    && m.pending_revocation.is_empty()
                    && m.assigned == self.target_of(&m.member_id)
            });
        if settled {
            GroupPhase::Stable
        } else {
            GroupPhase::Reconciling
        }
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: u64,
    /// The application's note with the commit.
    pub metadata: String,
    /// When it was committed (ms since the epoch, the coordinator's clock).
    pub commit_timestamp_ms: i64,
}

/// A change to a partition's groups: the body of one record in `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GroupRecord {
    /// A group's metadata as of a change (replaces what was there).
    Group {
        /// The whole group.
        group: Group,
    },
    /// Offsets committed together (replace earlier commits of the same partitions).
    Commit {
        /// The group.
        group_id: String,
        /// Partition → commit.
        offsets: Vec<(TopicPartition, Committed)>,
    },
    /// The group and its offsets are gone (deleted, or its offsets expired).
    Delete {
        /// The group.
        group_id: String,
    },
    /// No change: a new coordinator's first write, after which it has applied everything its
    /// predecessors committed.
    Barrier,
}

/// The groups of one `__consumer_offsets` partition. Serializable whole: it is what a snapshot
/// of the partition holds, so the log behind the snapshot can be purged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupsState {
    groups: BTreeMap<String, Group>,
    #[serde(with = "offsets_as_pairs")]
    offsets: BTreeMap<String, BTreeMap<TopicPartition, Committed>>,
}

/// Committed offsets as (partition, commit) pairs per group: JSON map keys must be strings.
mod offsets_as_pairs {
    use super::{Committed, TopicPartition};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    type Offsets = BTreeMap<String, BTreeMap<TopicPartition, Committed>>;

    pub fn serialize<S: Serializer>(offsets: &Offsets, serializer: S) -> Result<S::Ok, S::Error> {
        let pairs: BTreeMap<&String, Vec<(&TopicPartition, &Committed)>> = offsets
            .iter()
            .map(|(group, commits)| (group, commits.iter().collect()))
            .collect();
        pairs.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Offsets, D::Error> {
        let pairs = BTreeMap::<String, Vec<(TopicPartition, Committed)>>::deserialize(deserializer)?;
        Ok(pairs
            .into_iter()
            .map(|(group, commits)| (group, commits.into_iter().collect()))
            .collect())
    }
}

impl GroupsState {
    /// Applies one committed record.
    pub fn apply(&mut self, record: GroupRecord) {
        match record {
            GroupRecord::Group { group } => {
                self.groups.insert(group.group_id.clone(), group);
            }
            GroupRecord::Commit { group_id, offsets } => {
                self.offsets.entry(group_id).or_default().extend(offsets);
            }
            GroupRecord::Delete { group_id } => {
                self.groups.remove(&group_id);
                self.offsets.remove(&group_id);
            }
            GroupRecord::Barrier => {}
        }
    }

    /// The group's membership, if it ever had members and was not deleted since.
    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    /// The group's committed offsets (empty if none).
    pub fn offsets(&self, group_id: &str) -> Option<&BTreeMap<TopicPartition, Committed>> {
        self.offsets.get(group_id)
    }

    /// Whether the group exists: it has membership state or committed offsets.
    pub fn exists(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id) || self.offsets.contains_key(group_id)
    }

    /// Every group id known here, with membership or only offsets.
    pub fn group_ids(&self) -> BTreeSet<String> {
        self.groups.keys().chain(self.offsets.keys()).cloned().collect()
    }

    /// Groups that have had no members for `retention_ms` and no commit in that time: their
    /// offsets expire (Kafka's `offsets.retention.minutes` for an empty group).
    pub fn expired(&self, now_ms: i64, retention_ms: i64) -> Vec<String> {
        self.group_ids()
            .into_iter()
            .filter(|id| {
                let group = self.groups.get(id);
                if group.is_some_and(|g| !g.members.is_empty()) {
                    return false;
                }
                let empty_since = group.and_then(|g| g.empty_since_ms).unwrap_or(i64::MIN);
                let last_commit = self
                    .offsets
                    .get(id)
                    .and_then(|o| o.values().map(|c| c.commit_timestamp_ms).max())
                    .unwrap_or(i64::MIN);
                empty_since.max(last_commit).saturating_add(retention_ms) < now_ms
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    fn commit(offset: u64, at: i64) -> Committed {
        Committed {
            offset,
            metadata: String::new(),
            commit_timestamp_ms: at,
        }
    }

    #[test]
    fn records_replace_values_and_they_and_the_state_survive_a_json_round_trip() {
        let mut group = Group::new("g");
        group.epoch = 3;
        group.members.insert(
            "m".into(),
            Member {
                member_id: "m".into(),
                assigned: [tp("t", 0)].into(),
                ..Member::default()
            },
        );
        let records = vec![
            GroupRecord::Group { group: group.clone() },
            GroupRecord::Commit {
                group_id: "g".into(),
                offsets: vec![(tp("t", 0), commit(5, 1)), (tp("t", 1), commit(7, 1))],
            },
            GroupRecord::Commit {
                group_id: "g".into(),
                offsets: vec![(tp("t", 0), commit(9, 2))],
            },
            GroupRecord::Barrier,
        ];
        let mut state = GroupsState::default();
        for record in records {
            let bytes = serde_json::to_vec(&record).unwrap();
            let decoded: GroupRecord = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(decoded, record);
            state.apply(decoded.clone());
            state.apply(decoded); // applying twice changes nothing
        }
        assert_eq!(state.group("g"), Some(&group));
        let offsets = state.offsets("g").unwrap();
        assert_eq!(offsets[&tp("t", 0)].offset, 9);
        assert_eq!(offsets[&tp("t", 1)].offset, 7);
        let snapshot = serde_json::to_vec(&state).unwrap();
        assert_eq!(serde_json::from_slice::<GroupsState>(&snapshot).unwrap(), state);
        state.apply(GroupRecord::Delete { group_id: "g".into() });
        assert!(!state.exists("g"));
    }

    #[test]
    fn only_groups_empty_and_uncommitted_for_the_retention_expire() {
        let mut state = GroupsState::default();
        let mut busy = Group::new("busy");
        busy.members.insert("m".into(), Member::default());
        state.apply(GroupRecord::Group { group: busy });
        let mut empty = Group::new("empty");
        empty.empty_since_ms = Some(100);
        state.apply(GroupRecord::Group { group: empty });
        state.apply(GroupRecord::Commit {
            group_id: "committed-late".into(),
            offsets: vec![(tp("t", 0), commit(1, 500))],
        });
        assert_eq!(
            state.expired(1_000, 100),
            vec!["committed-late".to_string(), "empty".into()]
        );
        assert_eq!(state.expired(550, 100), vec!["empty".to_string()]);
        assert!(state.expired(150, 100).is_empty());
    }
}
