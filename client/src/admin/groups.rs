//! Consumer-group administration: list (every broker answers for the groups it coordinates,
//! so all are asked and the answers merged), describe with lag, delete, and offset resets (an
//! administrative commit — member "" and epoch -1 — that the coordinator accepts only while
//! the group has no members).

use super::{Admin, AdminError};
use crate::cluster::Coordinator;
use crate::error::ClientError;
use proto::v1::{
    CommittedOffset, DeleteGroupRequest, DescribeGroupRequest, ErrorCode, GroupListing, GroupMember,
    OffsetCommitRequest, OffsetSpec, PartitionOffset, TopicPartition,
};
use std::collections::{BTreeMap, BTreeSet};

/// A group as `list_groups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// The group id.
    pub group_id: String,
    /// "empty", "stable" or "reconciling".
    pub state: String,
    /// Members now.
    pub members: u32,
    /// The broker that coordinates it.
    pub coordinator: u64,
}

/// Every group the reachable brokers coordinate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupList {
    /// The groups, sorted by id.
    pub groups: Vec<GroupSummary>,
    /// Brokers that did not answer (their groups are missing above), with why.
    pub unreachable: Vec<(u64, String)>,
}

/// A member as `describe_group` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static membership id, if any.
    pub group_instance_id: Option<String>,
    /// Its epoch.
    pub member_epoch: i32,
    /// Topics it subscribes to.
    pub subscribed_topics: Vec<String>,
    /// What it may consume now.
    pub assigned: Vec<(String, u32)>,
    /// Revoked from it, not yet confirmed released.
    pub pending_revocation: Vec<(String, u32)>,
    /// Its share of the group's target assignment.
    pub target: Vec<(String, u32)>,
    /// Its session timeout.
    pub session_timeout_ms: u32,
    /// A static member that left for a restart and has not come back yet.
    pub left_for_restart: bool,
}

/// One partition's committed offset and lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The group's committed offset (next offset to consume), if any.
    pub committed: Option<u64>,
    /// The partition's high watermark, if its leader answered.
    pub high_watermark: Option<u64>,
    /// `high_watermark - committed`, when both are known.
    pub lag: Option<u64>,
    /// The member it is assigned to, if any.
    pub member_id: Option<String>,
}

/// A group, its members and its offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// "empty", "stable" or "reconciling".
    pub state: String,
    /// The group epoch.
    pub group_epoch: i32,
    /// The epoch of the target assignment.
    pub assignment_epoch: i32,
    /// The assignor in use.
    pub assignor: String,
    /// The coordinating broker.
    pub coordinator: u64,
    /// Members, as the coordinator lists them.
    pub members: Vec<MemberDescription>,
    /// Every partition with a committed offset or an owner, sorted.
    pub partitions: Vec<PartitionLag>,
}

/// Where `reset_offsets` moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetResetTo {
    /// The log start of each partition.
    Earliest,
    /// The high watermark of each partition (skip everything).
    Latest,
    /// This offset in every partition, clamped to each partition's log.
    Offset(u64),
    /// The first record at or after this time (ms since the Unix epoch); the end if none.
    Datetime(i64),
}

impl Admin {
    /// Every consumer group, asking every broker for the groups it coordinates. Brokers that do
    /// not answer are listed in `unreachable` rather than failing the whole list.
    pub async fn list_groups(&self) -> Result<GroupList, ClientError> {
        let metadata = self.cluster.metadata(Vec::new()).await?;
        let mut answers = Vec::new();
        let mut unreachable = Vec::new();
        for broker in &metadata.brokers {
            match self.cluster.list_groups_on(broker).await {
                Ok(groups) => answers.push((broker.id, groups)),
                Err(error) => unreachable.push((broker.id, error.to_string())),
            }
        }
        Ok(GroupList {
            groups: merge_listings(answers),
            unreachable,
        })
    }

    /// Which broker coordinates `group_id`.
    pub async fn find_coordinator(&self, group_id: &str) -> Result<Coordinator, ClientError> {
        self.cluster.find_coordinator(group_id).await
    }

    /// A group's members, and per partition its committed offset, high watermark and lag.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription, AdminError> {
        let request = DescribeGroupRequest {
            group_id: group_id.to_string(),
        };
        let answer = self
            .cluster
            .on_coordinator(group_id, |mut client| {
                let request = request.clone();
                async move { client.describe_group(request).await }
            })
            .await
            .map_err(|error| group_error(group_id, error))?;
        let members: Vec<MemberDescription> = answer.members.into_iter().map(member).collect();
        let mut partitions = partition_rows(&answer.offsets, &members);
        for row in &mut partitions {
            // A partition whose leader does not answer shows no lag rather than failing all.
            row.high_watermark = self
                .cluster
                .list_offsets(&row.topic, row.partition, OffsetSpec::Latest, 0)
                .await
                .ok()
                .flatten();
            row.lag = lag(row.committed, row.high_watermark);
        }
        Ok(GroupDescription {
            group_id: answer.group_id,
            state: answer.state,
            group_epoch: answer.group_epoch,
            assignment_epoch: answer.assignment_epoch,
            assignor: answer.assignor,
            coordinator: answer.coordinator,
            members,
            partitions,
        })
    }

    /// Deletes an empty group and its committed offsets (NON_EMPTY_GROUP while it has
    /// members, GROUP_ID_NOT_FOUND if there is none).
    pub async fn delete_group(&self, group_id: &str) -> Result<(), AdminError> {
        let request = DeleteGroupRequest {
            group_id: group_id.to_string(),
        };
        self.cluster
            .on_coordinator(group_id, |mut client| {
                let request = request.clone();
                async move { client.delete_group(request).await }
            })
            .await
            .map_err(|error| group_error(group_id, error))?;
        Ok(())
    }

    /// Moves the group's committed offsets of every partition of `topic` to `to`; returns
    /// `(partition, offset)` as committed. The group must be empty (else NON_EMPTY_GROUP:
    /// stop its consumers first).
    pub async fn reset_offsets(
        &self,
        group_id: &str,
        topic: &str,
        to: OffsetResetTo,
    ) -> Result<Vec<(u32, u64)>, AdminError> {
        let metadata = self.cluster.metadata(vec![topic.to_string()]).await?;
        let description = metadata
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| AdminError::Topic {
                topic: topic.to_string(),
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("no topic {topic:?}"),
            })?;
        ClientError::check(description.error, &description.message).map_err(|error| AdminError::Topic {
            topic: topic.to_string(),
            code: error.code().unwrap_or(ErrorCode::UnknownTopicOrPartition),
            message: description.message.clone(),
        })?;
        let mut offsets = Vec::new();
        for partition in description.partitions.iter().map(|p| p.partition) {
            offsets.push((partition, self.reset_target(topic, partition, to).await?));
        }
        let request = OffsetCommitRequest {
            group_id: group_id.to_string(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: offsets
                .iter()
                .map(|(partition, offset)| PartitionOffset {
                    topic: topic.to_string(),
                    partition: *partition,
                    offset: *offset,
                    metadata: String::new(),
                })
                .collect(),
        };
        self.cluster
            .on_coordinator(group_id, |mut client| {
                let request = request.clone();
                async move { client.offset_commit(request).await }
            })
            .await
            .map_err(|error| group_error(group_id, error))?;
        Ok(offsets)
    }

    async fn reset_target(&self, topic: &str, partition: u32, to: OffsetResetTo) -> Result<u64, ClientError> {
        let offset = |spec, timestamp| self.cluster.list_offsets(topic, partition, spec, timestamp);
        Ok(match to {
            OffsetResetTo::Earliest => offset(OffsetSpec::Earliest, 0).await?.unwrap_or(0),
            OffsetResetTo::Latest => offset(OffsetSpec::Latest, 0).await?.unwrap_or(0),
            OffsetResetTo::Offset(wanted) => {
                let earliest = offset(OffsetSpec::Earliest, 0).await?.unwrap_or(0);
                let latest = offset(OffsetSpec::Latest, 0).await?.unwrap_or(0);
                wanted.clamp(earliest, latest.max(earliest))
            }
            OffsetResetTo::Datetime(ms) => match offset(OffsetSpec::Timestamp, ms).await? {
                Some(found) => found,
                None => offset(OffsetSpec::Latest, 0).await?.unwrap_or(0),
            },
        })
    }
}

/// A group call's refusal as an admin error naming the group.
fn group_error(group_id: &str, error: ClientError) -> AdminError {
    match (&error, error.code()) {
        (ClientError::Broker { message, .. }, Some(code)) => AdminError::Group {
            group: group_id.to_string(),
            code,
            message: message.clone(),
        },
        _ => AdminError::Client(error),
    }
}

/// The answers of every broker as one list, sorted by id. A group two brokers both claim (a
/// coordinator moved between the answers) is listed once, as the first broker asked saw it.
fn merge_listings(answers: Vec<(u64, Vec<GroupListing>)>) -> Vec<GroupSummary> {
    let mut groups: BTreeMap<String, GroupSummary> = BTreeMap::new();
    for (broker, listings) in answers {
        for listing in listings {
            groups.entry(listing.group_id.clone()).or_insert(GroupSummary {
                group_id: listing.group_id,
                state: listing.state,
                members: listing.members,
                coordinator: broker,
            });
        }
    }
    groups.into_values().collect()
}

/// How far the group is behind: `high_watermark - committed`, when both are known.
fn lag(committed: Option<u64>, high_watermark: Option<u64>) -> Option<u64> {
    Some(high_watermark?.saturating_sub(committed?))
}

/// One row per partition with a committed offset or an owner, sorted; high watermark and lag
/// are filled in later.
fn partition_rows(offsets: &[CommittedOffset], members: &[MemberDescription]) -> Vec<PartitionLag> {
    let committed: BTreeMap<(String, u32), u64> = offsets
        .iter()
        .map(|c| ((c.topic.clone(), c.partition), c.offset))
        .collect();
    let owners: BTreeMap<(String, u32), String> = members
        .iter()
        .flat_map(|m| m.assigned.iter().map(|tp| (tp.clone(), m.member_id.clone())))
        .collect();
    let partitions: BTreeSet<(String, u32)> = committed.keys().chain(owners.keys()).cloned().collect();
    partitions
        .into_iter()
        .map(|tp| PartitionLag {
            committed: committed.get(&tp).copied(),
            member_id: owners.get(&tp).cloned(),
            topic: tp.0,
            partition: tp.1,
            high_watermark: None,
            lag: None,
        })
        .collect()
}

fn member(member: GroupMember) -> MemberDescription {
    let pairs = |tps: Vec<TopicPartition>| tps.into_iter().map(|tp| (tp.topic, tp.partition)).collect();
    MemberDescription {
        member_id: member.member_id,
        group_instance_id: member.group_instance_id,
        member_epoch: member.member_epoch,
        subscribed_topics: member.subscribed_topics,
        assigned: pairs(member.assigned),
        pending_revocation: pairs(member.pending_revocation),
        target: pairs(member.target),
        session_timeout_ms: member.session_timeout_ms,
        left_for_restart: member.left_for_restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(id: &str, state: &str, members: u32) -> GroupListing {
        GroupListing {
            group_id: id.into(),
            state: state.into(),
            members,
        }
    }

    #[test]
    fn listings_of_every_broker_are_merged_once_per_group() {
        let merged = merge_listings(vec![
            (2, vec![listing("b", "stable", 2), listing("a", "empty", 0)]),
            (1, vec![listing("c", "reconciling", 3), listing("b", "empty", 0)]),
        ]);
        let ids: Vec<(&str, u64, u32)> = merged
            .iter()
            .map(|g| (g.group_id.as_str(), g.coordinator, g.members))
            .collect();
        assert_eq!(ids, [("a", 2, 0), ("b", 2, 2), ("c", 1, 3)]);
    }

    #[test]
    fn lag_needs_both_offsets_and_never_underflows() {
        assert_eq!(lag(Some(10), Some(25)), Some(15));
        assert_eq!(lag(None, Some(25)), None);
        assert_eq!(lag(Some(10), None), None);
        // A committed offset past the high watermark (truncated log) is no lag, not a wrap.
        assert_eq!(lag(Some(30), Some(25)), Some(0));
    }

    #[test]
    fn rows_cover_committed_and_owned_partitions() {
        let offsets = vec![CommittedOffset {
            topic: "t".into(),
            partition: 1,
            offset: 5,
            ..CommittedOffset::default()
        }];
        let members = vec![member(GroupMember {
            member_id: "m".into(),
            assigned: vec![
                TopicPartition {
                    topic: "t".into(),
                    partition: 0,
                },
                TopicPartition {
                    topic: "t".into(),
                    partition: 1,
                },
            ],
            ..GroupMember::default()
        })];
        let rows = partition_rows(&offsets, &members);
        let view: Vec<(u32, Option<u64>, Option<&str>)> = rows
            .iter()
            .map(|r| (r.partition, r.committed, r.member_id.as_deref()))
            .collect();
        assert_eq!(view, [(0, None, Some("m")), (1, Some(5), Some("m"))]);
    }

    #[test]
    fn a_refusal_names_the_group_and_keeps_the_code() {
        let refused = ClientError::Broker {
            code: ErrorCode::NonEmptyGroup,
            message: "group has 2 members".into(),
        };
        let error = group_error("reports", refused);
        assert_eq!(error.code(), Some(ErrorCode::NonEmptyGroup));
        assert!(error.to_string().contains("reports"), "{error}");
        let unreachable = ClientError::Unreachable {
            address: "x".into(),
            message: "down".into(),
        };
        assert!(matches!(group_error("g", unreachable), AdminError::Client(_)));
    }
}
