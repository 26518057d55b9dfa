//! The group state machine: what a heartbeat, a session expiry or a commit does to a group.
//! Pure: values in, the new group and the answer out; `now` is passed in.
//!
//! The protocol is Kafka's incremental one (KIP-848):
//! - A membership or subscription change bumps the **group epoch**; the target assignment is
//!   recomputed for it by the group's assignor (the **target epoch** follows).
//! - Each member **reconciles** towards its share of the target at its own heartbeats:
//!   partitions it must give up are revoked first (removed from what it may consume, held as
//!   *pending revocation* until a heartbeat no longer lists them as owned); only then does it
//!   move to the target epoch and receive new partitions — and only partitions no other member
//!   still holds. So a partition never has two owners, and members keep consuming everything
//!   they keep while the group rebalances: there is no group-wide barrier.
//! - A member whose epoch does not match is **fenced** (removed; it must rejoin with epoch 0);
//!   the previous epoch is accepted once more from a member whose answer was lost.

use super::assignor::{self, Assignor, MemberSpec};
use super::error::GroupError;
use super::model::{Group, Member};
use crate::partition::TopicPartition;
use std::collections::{BTreeMap, BTreeSet};

/// Member epoch of a join.
pub const JOIN_EPOCH: i32 = 0;
/// Member epoch of a leave.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member leaving for a restart.
pub const LEAVE_FOR_RESTART_EPOCH: i32 = -2;
/// The longest group and member id accepted.
const MAX_ID_BYTES: usize = 255;

/// Session-timeout and heartbeat bounds and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Used when a member asks for none (Kafka's 45 s).
    pub default_session_timeout_ms: u32,
    /// The shortest session a member may ask for.
    pub min_session_timeout_ms: u32,
    /// The longest session a member may ask for.
    pub max_session_timeout_ms: u32,
    /// Used when a member asks for none (Kafka's 3 s).
    pub default_heartbeat_interval_ms: u32,
    /// Used when a member asks for none (Kafka's `max.poll.interval.ms`, 5 min).
    pub default_rebalance_timeout_ms: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            default_session_timeout_ms: 45_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 1_800_000,
            default_heartbeat_interval_ms: 3_000,
            default_rebalance_timeout_ms: 300_000,
        }
    }
}

/// A heartbeat, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Heartbeat {
    /// The group.
    pub group_id: String,
    /// The member (chosen by the client).
    pub member_id: String,
    /// 0 join, −1 leave, −2 leave for a restart, else the member's epoch.
    pub member_epoch: i32,
    /// Static membership.
    pub instance_id: Option<String>,
    /// Subscribed topics.
    pub subscribed: BTreeSet<String>,
    /// What the member consumes now.
    pub owned: BTreeSet<TopicPartition>,
    /// Requested session timeout (0 = default).
    pub session_timeout_ms: u32,
    /// Requested heartbeat interval (0 = default).
    pub heartbeat_interval_ms: u32,
    /// Requested assignor ("" = uniform).
    pub assignor: String,
    /// Requested rebalance timeout (0 = default).
    pub rebalance_timeout_ms: u32,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    /// The member's epoch now (−1 / −2 after a leave).
    pub member_epoch: i32,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Exactly what the member may consume now.
    pub assignment: BTreeSet<TopicPartition>,
    /// The session timeout the member got.
    pub session_timeout_ms: u32,
}

/// What a heartbeat did: the group after it (persisted if it differs from before), the answer,
/// and a member it replaced (a static member's predecessor), whose session ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    /// The group after the heartbeat.
    pub group: Group,
    /// The answer, or the refusal (a fenced member is removed *and* refused).
    pub answer: Result<HeartbeatAnswer, GroupError>,
    /// A member removed by this heartbeat (replaced or fenced).
    pub removed: Option<String>,
}

/// Checks a group id: 1 to 255 bytes.
pub fn check_group_id(group_id: &str) -> Result<(), GroupError> {
    if group_id.is_empty() || group_id.len() > MAX_ID_BYTES {
        return Err(GroupError::InvalidGroupId(group_id.to_string()));
    }
    Ok(())
}

fn check_topics_exist<'a>(
    topics: impl IntoIterator<Item = &'a String>,
    known: &BTreeMap<String, u32>,
) -> Result<(), GroupError> {
    match topics.into_iter().find(|t| !known.contains_key(*t)) {
        Some(missing) => Err(GroupError::UnknownTopic(missing.clone())),
        None => Ok(()),
    }
}

/// Applies a heartbeat to `current` (the group as stored, `None` if it has no membership
/// state). `topics` maps every existing topic to its partition count.
pub fn heartbeat(
    current: Option<&Group>,
    request: &Heartbeat,
    topics: &BTreeMap<String, u32>,
    limits: SessionLimits,
    now_ms: i64,
) -> Result<HeartbeatOutcome, GroupError> {
    check_group_id(&request.group_id)?;
    if request.member_id.is_empty() || request.member_id.len() > MAX_ID_BYTES {
        return Err(GroupError::InvalidRequest("member_id must be 1 to 255 bytes".into()));
    }
    let assignor =
        Assignor::parse(&request.assignor).ok_or_else(|| GroupError::UnsupportedAssignor(request.assignor.clone()))?;
    let session_timeout_ms = match request.session_timeout_ms {
        0 => limits.default_session_timeout_ms,
        asked if (limits.min_session_timeout_ms..=limits.max_session_timeout_ms).contains(&asked) => asked,
        asked => {
            return Err(GroupError::InvalidRequest(format!(
                "session_timeout_ms {asked} is outside {}..={}",
                limits.min_session_timeout_ms, limits.max_session_timeout_ms
            )))
        }
    };
    let heartbeat_interval_ms = match request.heartbeat_interval_ms {
        0 => limits.default_heartbeat_interval_ms,
        asked => asked,
    }
    .clamp(50, session_timeout_ms);
    let rebalance_timeout_ms = match request.rebalance_timeout_ms {
        0 => limits.default_rebalance_timeout_ms,
        asked => asked,
    };

    let mut group = current.cloned().unwrap_or_else(|| Group::new(&request.group_id));
    let mut removed = None;
    let member_id = request.member_id.as_str();
    match request.member_epoch {
        LEAVE_EPOCH => {
            if group.members.remove(member_id).is_some() {
                group.epoch += 1;
            }
            return Ok(settle(group, topics, now_ms, None, Ok(left(LEAVE_EPOCH))));
        }
        LEAVE_FOR_RESTART_EPOCH => {
            let static_member = group.members.get(member_id).is_some_and(|m| m.instance_id.is_some());
            if static_member {
                if let Some(member) = group.members.get_mut(member_id) {
                    member.left_for_restart = true;
                }
            } else if group.members.remove(member_id).is_some() {
                group.epoch += 1;
            }
            return Ok(settle(group, topics, now_ms, None, Ok(left(LEAVE_FOR_RESTART_EPOCH))));
        }
        JOIN_EPOCH => {
            check_topics_exist(&request.subscribed, topics)?;
            if group.members.is_empty() {
                group.assignor = assignor;
            }
            let predecessor = request.instance_id.as_ref().and_then(|instance| {
                group
                    .members
                    .values()
                    .find(|m| m.instance_id.as_ref() == Some(instance) && m.member_id != member_id)
                    .map(|m| m.member_id.clone())
            });
            let mut member = match predecessor {
                // A static member back from a restart takes over its predecessor's partitions and
                // epoch: no rebalance. The predecessor's process is gone, so nothing it was still
                // revoking needs waiting for.
                Some(old_id) => {
                    let mut taken_over = group.members.remove(&old_id).expect("found above");
                    if let Some(target) = group.target.remove(&old_id) {
                        group.target.insert(member_id.to_string(), target);
                    }
                    taken_over.member_id = member_id.to_string();
                    taken_over.pending_revocation.clear();
                    taken_over.left_for_restart = false;
                    removed = Some(old_id);
                    taken_over
                }
                None => match group.members.remove(member_id) {
                    // A known member rejoining (after a fence it noticed, or a retried join):
                    // it owns nothing now, and receives its target again.
                    Some(mut known) => {
                        known.assigned.clear();
                        known.pending_revocation.clear();
                        known.epoch = JOIN_EPOCH;
                        known.left_for_restart = false;
                        known
                    }
                    None => {
                        group.epoch += 1;
                        Member {
                            member_id: member_id.to_string(),
                            ..Member::default()
                        }
                    }
                },
            };
            if member.subscribed != request.subscribed && !member.subscribed.is_empty() {
                group.epoch += 1;
            }
            member.subscribed = request.subscribed.clone();
            member.instance_id = request.instance_id.clone();
            member.session_timeout_ms = session_timeout_ms;
            member.heartbeat_interval_ms = heartbeat_interval_ms;
            member.rebalance_timeout_ms = rebalance_timeout_ms;
            group.members.insert(member_id.to_string(), member);
        }
        epoch if epoch > 0 => {
            let Some(member) = group.members.get_mut(member_id) else {
                return Err(GroupError::UnknownMember {
                    group: request.group_id.clone(),
                    member: member_id.to_string(),
                });
            };
            let lost_answer =
                epoch == member.previous_epoch && request.owned.iter().all(|p| member.holds(p)) && epoch < member.epoch;
            if epoch != member.epoch && !lost_answer {
                let fenced = GroupError::FencedEpoch {
                    member: member_id.to_string(),
                    sent: epoch,
                    current: member.epoch,
                };
                group.members.remove(member_id);
                group.epoch += 1;
                return Ok(settle(group, topics, now_ms, Some(member_id.to_string()), Err(fenced)));
            }
            if member.subscribed != request.subscribed {
                check_topics_exist(&request.subscribed, topics)?;
                member.subscribed = request.subscribed.clone();
                group.epoch += 1;
            }
            member.session_timeout_ms = session_timeout_ms;
            member.heartbeat_interval_ms = heartbeat_interval_ms;
            member.rebalance_timeout_ms = rebalance_timeout_ms;
            member.left_for_restart = false;
        }
        other => {
            return Err(GroupError::InvalidRequest(format!(
                "member_epoch {other}: use 0 to join, -1 or -2 to leave, or the current epoch"
            )))
        }
    }
    group.empty_since_ms = None;
    update_target(&mut group, topics);
    let answer = reconcile(&mut group, member_id, &request.owned, now_ms);
    Ok(HeartbeatOutcome {
        group,
        answer: Ok(answer),
        removed,
    })
}

fn left(epoch: i32) -> HeartbeatAnswer {
    HeartbeatAnswer {
        member_epoch: epoch,
        ..HeartbeatAnswer::default()
    }
}

/// After a member left or was removed: the group's empty time and a new target.
fn settle(
    mut group: Group,
    topics: &BTreeMap<String, u32>,
    now_ms: i64,
    removed: Option<String>,
    answer: Result<HeartbeatAnswer, GroupError>,
) -> HeartbeatOutcome {
    if group.members.is_empty() {
        group.empty_since_ms.get_or_insert(now_ms);
    }
    update_target(&mut group, topics);
    HeartbeatOutcome { group, answer, removed }
}

/// Removes a member whose session expired (no-op if it is gone already): its partitions go to
/// the others at their next heartbeats.
pub fn expire(current: &Group, member_id: &str, topics: &BTreeMap<String, u32>, now_ms: i64) -> Option<Group> {
    let mut group = current.clone();
    group.members.remove(member_id)?;
    group.epoch += 1;
    Some(settle(group, topics, now_ms, None, Ok(HeartbeatAnswer::default())).group)
}

/// Members that have had partitions to release for longer than their rebalance timeout: they
/// are removed like expired ones, so a member that stopped polling cannot hold partitions
/// forever (Kafka's `max.poll.interval.ms`).
pub fn overdue_revocations(group: &Group, now_ms: i64) -> Vec<String> {
    group
        .members
        .values()
        .filter(|m| {
            m.revoking_since_ms
                .is_some_and(|since| since.saturating_add(i64::from(m.rebalance_timeout_ms)) < now_ms)
        })
        .map(|m| m.member_id.clone())
        .collect()
}

/// Recomputes the target assignment when the group epoch moved past it, or when a subscribed
/// topic grew or went away (which bumps the group epoch).
pub fn update_target(group: &mut Group, topics: &BTreeMap<String, u32>) {
    let subscribed: BTreeMap<String, u32> = group
        .members
        .values()
        .flat_map(|m| m.subscribed.iter())
        .filter_map(|t| topics.get(t).map(|count| (t.clone(), *count)))
        .collect();
    if subscribed != group.target_topics && group.target_epoch == group.epoch && !group.members.is_empty() {
        group.epoch += 1;
    }
    if group.target_epoch == group.epoch && subscribed == group.target_topics {
        return;
    }
    let empty = BTreeSet::new();
    let specs: Vec<MemberSpec<'_>> = group
        .members
        .values()
        .map(|m| MemberSpec {
            member_id: &m.member_id,
            subscribed: &m.subscribed,
            previous: group.target.get(&m.member_id).unwrap_or(&empty),
        })
        .collect();
    let target = assignor::assign(group.assignor, &specs, &subscribed);
    group.target = target;
    group.target_epoch = group.epoch;
    group.target_topics = subscribed;
}

/// Moves `member_id` towards its target: revoke first, assign what nobody else holds once the
/// member has released everything it was asked to.
fn reconcile(group: &mut Group, member_id: &str, owned: &BTreeSet<TopicPartition>, now_ms: i64) -> HeartbeatAnswer {
    let target = group.target_of(member_id);
    let held_by_others: BTreeSet<TopicPartition> = group
        .members
        .values()
        .filter(|m| m.member_id != member_id)
        .flat_map(|m| m.assigned.iter().chain(m.pending_revocation.iter()))
        .cloned()
        .collect();
    let target_epoch = group.target_epoch;
    let member = group
        .members
        .get_mut(member_id)
        .expect("the member was just added or checked");
    // Released: a revoked partition the member no longer lists.
    member.pending_revocation.retain(|p| owned.contains(p));
    // Back in the target before it was released: the member simply keeps it.
    let kept: Vec<TopicPartition> = member.pending_revocation.intersection(&target).cloned().collect();
    for partition in kept {
        member.pending_revocation.remove(&partition);
        member.assigned.insert(partition);
    }
    let revoke: Vec<TopicPartition> = member.assigned.difference(&target).cloned().collect();
    for partition in revoke {
        member.assigned.remove(&partition);
        member.pending_revocation.insert(partition);
    }
    if member.pending_revocation.is_empty() {
        member.revoking_since_ms = None;
    } else {
        member.revoking_since_ms.get_or_insert(now_ms);
    }
    if member.pending_revocation.is_empty() {
        let free: Vec<TopicPartition> = target
            .difference(&member.assigned)
            .filter(|p| !held_by_others.contains(*p))
            .cloned()
            .collect();
        member.assigned.extend(free);
        if member.epoch != target_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = target_epoch;
        }
    }
    HeartbeatAnswer {
        member_epoch: member.epoch,
        heartbeat_interval_ms: member.heartbeat_interval_ms,
        assignment: member.assigned.clone(),
        session_timeout_ms: member.session_timeout_ms,
    }
}

/// Checks an offset commit against the group: a member's commit needs its current epoch and
/// partitions it holds; an administrative commit (no member id) needs an empty group.
pub fn check_commit(
    group_id: &str,
    group: Option<&Group>,
    member_id: &str,
    member_epoch: i32,
    partitions: &[TopicPartition],
    topics: &BTreeMap<String, u32>,
) -> Result<(), GroupError> {
    check_group_id(group_id)?;
    if let Some(unknown) = partitions
        .iter()
        .find(|p| topics.get(&p.topic).is_none_or(|count| p.partition >= *count))
    {
        return Err(GroupError::UnknownTopic(format!(
            "{}/{}",
            unknown.topic, unknown.partition
        )));
    }
    if member_id.is_empty() {
        let members = group.map_or(0, |g| g.members.len());
        if members > 0 {
            return Err(GroupError::NonEmpty {
                group: group_id.to_string(),
                members,
                operation: "committing offsets without a member (a reset)",
            });
        }
        return Ok(());
    }
    let Some(member) = group.and_then(|g| g.members.get(member_id)) else {
        return Err(GroupError::UnknownMember {
            group: group_id.to_string(),
            member: member_id.to_string(),
        });
    };
    if member_epoch > member.epoch {
        return Err(GroupError::FencedEpoch {
            member: member_id.to_string(),
            sent: member_epoch,
            current: member.epoch,
        });
    }
    if member_epoch < member.epoch {
        return Err(GroupError::StaleEpoch {
            member: member_id.to_string(),
            sent: member_epoch,
            current: member.epoch,
        });
    }
    if let Some(partition) = partitions.iter().find(|p| !member.holds(p)) {
        return Err(GroupError::NotAssigned {
            member: member_id.to_string(),
            partition: partition.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
