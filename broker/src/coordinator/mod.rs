//! # Coordinator: consumer groups
//!
//! **One job:** decide which member of a consumer group owns which partition, fence members
//! that fell behind, and remember each group's committed offsets — replicated like everything
//! else.
//!
//! **Owns:** the internal topic `__consumer_offsets` (created by the controller on the first
//! group request, `offsets_topic_partitions` partitions, RF up to 3), whose partition
//! `group_partition(group_id, N)` holds a group; the leader of that partition is the group's
//! **coordinator**. Every replica materialises its partitions' groups from their committed
//! records ([`offsets_partition`], through the same `BatchObserver` seam the controller
//! uses), so a new coordinator holds every group before it answers: it first writes a barrier
//! record in its own term, and answers once it has applied it.
//!
//! - [`model`]: the materialised state and the records that change it (pure).
//! - [`membership`]: the KIP-848 group state machine — heartbeats, revoke-first reconciliation,
//!   fencing, static members, commit checks (pure, `now` passed in).
//! - [`assignor`]: the server-side assignors, `uniform` (sticky, default) and `range` (pure).
//! - [`metrics`]: members, lag and rebalances of the groups coordinated here, under a capped
//!   `group` label.
//! - this file: the shell — leadership and loading, one write at a time per offsets
//!   partition (each change is computed from the applied state and answered once replicated,
//!   acks=all), session deadlines, offset expiry.
//!
//! **Invariants:** the group state changes only by applying committed records, in log order, on
//! every replica alike; a change is answered only once it is committed; a partition is handed to
//! a member only when no other member holds it.
//!
//! **Must not depend on:** the API layer.

pub mod assignor;
pub mod error;
pub mod membership;
pub mod metrics;
pub mod model;
pub mod offsets_partition;

use crate::controller::forward::ControllerLink;
use crate::controller::metadata::MetadataCommand;
use crate::controller::Controller;
use crate::partition::{PartitionManager, TopicPartition};
use crate::replication::{Acks, PartitionReplica, PeerChannels, ReplicationError};
use crate::storage::LogConfig;
use bytes::Bytes;
pub use error::GroupError;
use membership::{Heartbeat, HeartbeatAnswer, SessionLimits, LEAVE_EPOCH, LEAVE_FOR_RESTART_EPOCH};
use metrics::{GroupFigures, GroupLabels};
use model::{Committed, Group, GroupPhase, GroupRecord};
use offsets_partition::{OffsetsPartition, OffsetsPartitions};
use proto::record_batch::{encode_batch, now_ms, ProducerStamp, Record};
use proto::OFFSETS_TOPIC;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a write to an offsets partition may wait for its commit.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for this broker's leadership of the offsets partition to be
/// confirmed (a quiet partition renews its lease with one heartbeat round).
const LEADER_WAIT: Duration = Duration::from_secs(2);
/// How often sessions are checked.
const EXPIRY_TICK: Duration = Duration::from_millis(200);
/// The longest wait between checks of empty groups' offsets for expiry; a short retention (a
/// test's, a staging cluster's) is checked every quarter of it instead of overshot by a minute
/// (`offsets_check_interval`).
const OFFSETS_EXPIRY_TICK: Duration = Duration::from_secs(60);
/// How often a broker asks the controller to create the offsets topic while it is missing.
const CREATE_RETRY: Duration = Duration::from_secs(1);

/// Consumer-group settings of a broker (`[groups]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// Partitions of `__consumer_offsets` (Kafka's `offsets.topic.num.partitions`); fixed once
    /// the topic exists.
    pub offsets_topic_partitions: u32,
    /// Its replication factor (capped at the number of brokers when it is created).
    pub offsets_topic_replication_factor: u32,
    /// How long the committed offsets of an empty group are kept (Kafka's
    /// `offsets.retention.minutes`, 7 days).
    pub offsets_retention_ms: u64,
    /// Session timeout of members that ask for none (45 s).
    pub default_session_timeout_ms: u32,
    /// The shortest session timeout a member may ask for.
    pub min_session_timeout_ms: u32,
    /// The longest session timeout a member may ask for.
    pub max_session_timeout_ms: u32,
    /// Heartbeat interval of members that ask for none (3 s).
    pub default_heartbeat_interval_ms: u32,
    /// How long a member may take to release revoked partitions when it asks for no limit of
    /// its own (Kafka's `max.poll.interval.ms`, 5 min); then it is removed.
    pub default_rebalance_timeout_ms: u32,
}

impl Default for GroupSettings {
    fn default() -> Self {
        let limits = SessionLimits::default();
        GroupSettings {
            offsets_topic_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            default_session_timeout_ms: limits.default_session_timeout_ms,
            min_session_timeout_ms: limits.min_session_timeout_ms,
            max_session_timeout_ms: limits.max_session_timeout_ms,
            default_heartbeat_interval_ms: limits.default_heartbeat_interval_ms,
            default_rebalance_timeout_ms: limits.default_rebalance_timeout_ms,
        }
    }
}

impl GroupSettings {
    fn limits(&self) -> SessionLimits {
        SessionLimits {
            default_session_timeout_ms: self.default_session_timeout_ms,
            min_session_timeout_ms: self.min_session_timeout_ms,
            max_session_timeout_ms: self.max_session_timeout_ms,
            default_heartbeat_interval_ms: self.default_heartbeat_interval_ms,
            default_rebalance_timeout_ms: self.default_rebalance_timeout_ms,
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.offsets_topic_partitions) {
            return Err("groups.offsets_topic_partitions must be 1..=1000".into());
        }
        if self.offsets_topic_replication_factor == 0 {
            return Err("groups.offsets_topic_replication_factor must be at least 1".into());
        }
        let limits = self.limits();
        if limits.min_session_timeout_ms > limits.max_session_timeout_ms
            || !(limits.min_session_timeout_ms..=limits.max_session_timeout_ms)
                .contains(&limits.default_session_timeout_ms)
        {
            return Err("groups: default_session_timeout_ms must lie in min..=max".into());
        }
        Ok(())
    }
}

/// A group as `ListGroups` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// Empty, stable or reconciling.
    pub phase: GroupPhase,
    /// How many members it has.
    pub members: usize,
}

/// A group as `DescribeGroup` reports it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Membership (a group with only committed offsets has an empty one).
    pub group: Group,
    /// Committed offsets.
    pub offsets: BTreeMap<TopicPartition, Committed>,
    /// The coordinator (this broker).
    pub coordinator: u64,
}

/// This broker's side of every consumer group whose offsets partition it leads.
pub struct GroupCoordinator {
    node_id: u64,
    settings: GroupSettings,
    controller: Arc<Controller>,
    partitions: Arc<PartitionManager>,
    offsets: Arc<OffsetsPartitions>,
    /// Channels to other brokers (proposing the offsets topic to the controller leader).
    peers: PeerChannels,
    /// When this broker last asked for the offsets topic to be created.
    asked_to_create: Mutex<Option<Instant>>,
    /// Which groups have a metrics label of their own.
    labels: GroupLabels,
}

/// The offsets partition of a group, led here and loaded.
struct Led {
    replica: Arc<PartitionReplica>,
    offsets: Arc<OffsetsPartition>,
}

impl GroupCoordinator {
    /// The coordinator of broker `node_id`; `offsets` must be the observer source its partition
    /// manager was built with.
    pub fn new(
        node_id: u64,
        settings: GroupSettings,
        controller: Arc<Controller>,
        partitions: Arc<PartitionManager>,
        offsets: Arc<OffsetsPartitions>,
        peers: PeerChannels,
    ) -> GroupCoordinator {
        GroupCoordinator {
            peers,
            node_id,
            settings,
            controller,
            partitions,
            offsets,
            asked_to_create: Mutex::new(None),
            labels: GroupLabels::default(),
        }
    }

    /// The cluster metadata as this broker knows it.
    pub fn metadata(&self) -> Arc<crate::controller::metadata::ClusterMetadata> {
        self.controller.metadata()
    }

    /// Every topic and its partition count, from the metadata.
    fn topic_counts(&self) -> BTreeMap<String, u32> {
        self.controller
            .metadata()
            .topics
            .iter()
            .map(|(name, topic)| (name.clone(), topic.partitions.len() as u32))
            .collect()
    }

    /// The group's partition of `__consumer_offsets`, or `CoordinatorNotAvailable` (and a
    /// request to create the topic) while it does not exist.
    fn partition_of(&self, group_id: &str) -> Result<u32, GroupError> {
        membership::check_group_id(group_id)?;
        let count = self
            .controller
            .metadata()
            .topics
            .get(OFFSETS_TOPIC)
            .map(|t| t.partitions.len() as u32);
        match count {
            Some(count) if count > 0 => Ok(proto::group_partition(group_id, count)),
            _ => {
                self.ask_to_create_offsets_topic();
                Err(GroupError::CoordinatorNotAvailable(format!(
                    "{OFFSETS_TOPIC} is being created"
                )))
            }
        }
    }

    /// Kafka creates the offsets topic on the first group request; so do we: this broker
    /// proposes it to the controller (at most once a second).
    fn ask_to_create_offsets_topic(&self) {
        {
            let mut last = self.asked_to_create.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < CREATE_RETRY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let brokers = self.controller.metadata().brokers.len() as u32;
        let command = MetadataCommand::CreateTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: self.settings.offsets_topic_partitions,
            replication_factor: self.settings.offsets_topic_replication_factor.min(brokers).max(1),
            config: offsets_log_config(),
        };
        // At home on the controller leader, else forwarded to it over the internal listener
        // (`cluster.v1`), where this broker is admitted as a broker whatever the clients'
        // authentication and ACLs say.
        let link = ControllerLink::new(Arc::clone(&self.controller), self.peers.clone(), Vec::new());
        tokio::spawn(async move {
            match link.propose(command).await {
                Ok(()) => tracing::info!("created {OFFSETS_TOPIC}"),
                Err(error) => {
                    tracing::debug!(%error, "creating {OFFSETS_TOPIC} failed; a later group request retries")
                }
            }
        });
    }

    /// The coordinator of `group_id`, as this broker knows it: the offsets partition, and its
    /// leader with that broker's address.
    pub fn find_coordinator(&self, group_id: &str) -> Result<(u32, Option<(u64, String)>), GroupError> {
        let partition = self.partition_of(group_id)?;
        let leader = self
            .partitions
            .get(OFFSETS_TOPIC, partition)
            .and_then(|replica| replica.leader())
            .and_then(|leader| {
                let metadata = self.controller.metadata();
                let address = metadata.brokers.get(&leader)?.client_address.clone()?;
                Some((leader, address))
            });
        Ok((partition, leader))
    }

    /// The group's offsets partition if this broker leads it, after making sure everything
    /// earlier leaders committed is applied here (the barrier of this term).
    async fn led(&self, group_id: &str) -> Result<Led, GroupError> {
        let partition = self.partition_of(group_id)?;
        let not_coordinator = |leader| GroupError::NotCoordinator {
            group: group_id.to_string(),
            partition,
            leader,
        };
        let replica = self
            .partitions
            .get(OFFSETS_TOPIC, partition)
            .ok_or_else(|| not_coordinator(None))?;
        // Not `is_leader`: an offsets partition with no writes for a while is quiet and its
        // lease lapsed; a ready check renews it with one heartbeat round (the benchmark found
        // a quiet coordinator refusing every request as NOT_COORDINATOR, naming itself).
        let term = replica
            .ready_to_read(Instant::now() + LEADER_WAIT)
            .await
            .map_err(|error| match error {
                ReplicationError::NotLeader { leader, .. } => {
                    not_coordinator(leader.filter(|leader| *leader != self.node_id))
                }
                other => GroupError::CoordinatorNotAvailable(other.to_string()),
            })?;
        let offsets = self.offsets.get(partition).ok_or_else(|| not_coordinator(None))?;
        if offsets.loaded_in_term() != Some(term) {
            let _writes = offsets.writes.lock().await;
            if offsets.loaded_in_term() != Some(term) {
                append(&replica, &offsets, &[GroupRecord::Barrier]).await?;
                let mut sessions = offsets.sessions();
                sessions.clear();
                give_sessions(&offsets, &mut sessions, Instant::now());
                drop(sessions);
                offsets.set_loaded_in_term(Some(term));
                tracing::info!(partition, term, "coordinating the groups of {OFFSETS_TOPIC} partition");
            }
        }
        Ok(Led { replica, offsets })
    }

    /// A member's heartbeat: join, stay, leave.
    pub async fn heartbeat(&self, request: Heartbeat) -> Result<HeartbeatAnswer, GroupError> {
        let led = self.led(&request.group_id).await?;
        let _writes = led.offsets.writes.lock().await;
        let current = led.offsets.state().group(&request.group_id).cloned();
        let outcome = membership::heartbeat(
            current.as_ref(),
            &request,
            &self.topic_counts(),
            self.settings.limits(),
            now_ms(),
        )?;
        if current.as_ref() != Some(&outcome.group) {
            let bumps = epoch_bumps(current.as_ref(), &outcome.group);
            append(
                &led.replica,
                &led.offsets,
                &[GroupRecord::Group { group: outcome.group }],
            )
            .await?;
            if bumps > 0 {
                metrics::rebalanced(&self.labels, &request.group_id, bumps);
            }
        }
        let mut sessions = led.offsets.sessions();
        let key = (request.group_id.clone(), request.member_id.clone());
        if let Some(removed) = outcome.removed {
            sessions.remove(&(request.group_id.clone(), removed));
        }
        match &outcome.answer {
            Ok(answer) if answer.member_epoch == LEAVE_EPOCH => {
                sessions.remove(&key);
            }
            // A static member that left keeps its partitions until its session ends.
            Ok(answer) if answer.member_epoch == LEAVE_FOR_RESTART_EPOCH => {}
            Ok(answer) => {
                let timeout = Duration::from_millis(u64::from(answer.session_timeout_ms));
                sessions.insert(key, Instant::now() + timeout);
            }
            Err(_) => {
                sessions.remove(&key);
            }
        }
        outcome.answer
    }

    /// Commits offsets for a member (or, with no member id, for an empty group); answered once
    /// replicated.
    pub async fn commit(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<(TopicPartition, u64, String)>,
    ) -> Result<(), GroupError> {
        let led = self.led(group_id).await?;
        let _writes = led.offsets.writes.lock().await;
        let partitions: Vec<TopicPartition> = offsets.iter().map(|(p, _, _)| p.clone()).collect();
        membership::check_commit(
            group_id,
            led.offsets.state().group(group_id),
            member_id,
            member_epoch,
            &partitions,
            &self.topic_counts(),
        )?;
        if offsets.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let record = GroupRecord::Commit {
            group_id: group_id.to_string(),
            offsets: offsets
                .into_iter()
                .map(|(partition, offset, metadata)| {
                    let committed = Committed {
                        offset,
                        metadata,
                        commit_timestamp_ms: now,
                    };
                    (partition, committed)
                })
                .collect(),
        };
        append(&led.replica, &led.offsets, &[record]).await
    }

    /// The group's committed offsets (of `partitions`, or all).
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, Committed>, GroupError> {
        let led = self.led(group_id).await?;
        let state = led.offsets.state();
        let all = state.offsets(group_id).cloned().unwrap_or_default();
        if partitions.is_empty() {
            return Ok(all);
        }
        Ok(all.into_iter().filter(|(p, _)| partitions.contains(p)).collect())
    }

    /// The group's members, assignment and committed offsets.
    pub async fn describe(&self, group_id: &str) -> Result<GroupDescription, GroupError> {
        let led = self.led(group_id).await?;
        let state = led.offsets.state();
        if !state.exists(group_id) {
            return Err(GroupError::GroupNotFound(group_id.to_string()));
        }
        Ok(GroupDescription {
            group: state.group(group_id).cloned().unwrap_or_else(|| Group::new(group_id)),
            offsets: state.offsets(group_id).cloned().unwrap_or_default(),
            coordinator: self.node_id,
        })
    }

    /// Deletes an empty group and its offsets.
    pub async fn delete(&self, group_id: &str) -> Result<(), GroupError> {
        let led = self.led(group_id).await?;
        let _writes = led.offsets.writes.lock().await;
        {
            let state = led.offsets.state();
            if !state.exists(group_id) {
                return Err(GroupError::GroupNotFound(group_id.to_string()));
            }
            let members = state.group(group_id).map_or(0, |g| g.members.len());
            if members > 0 {
                return Err(GroupError::NonEmpty {
                    group: group_id.to_string(),
                    members,
                    operation: "deleting the group",
                });
            }
        }
        let record = GroupRecord::Delete {
            group_id: group_id.to_string(),
        };
        append(&led.replica, &led.offsets, &[record]).await
    }

    /// Whether this broker coordinates the groups of offsets partition `partition` now: the
    /// cheap view of leadership, as `broker group list` shows it.
    fn coordinates(&self, partition: u32) -> bool {
        self.partitions
            .get(OFFSETS_TOPIC, partition)
            .is_some_and(|replica| replica.leader() == Some(self.node_id))
    }

    /// The groups this broker coordinates now.
    pub fn list(&self) -> Vec<GroupListing> {
        let mut listings = Vec::new();
        for (partition, offsets) in self.offsets.all() {
            if !self.coordinates(partition) {
                continue;
            }
            let state = offsets.state();
            for group_id in state.group_ids() {
                let group = state.group(&group_id);
                listings.push(GroupListing {
                    phase: group.map_or(GroupPhase::Empty, Group::phase),
                    members: group.map_or(0, |g| g.members.len()),
                    group_id,
                });
            }
        }
        listings.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listings
    }

    /// Sets the group gauges (members, lag) from the groups coordinated here; called before a
    /// metrics scrape.
    pub fn record_metrics(&self) {
        metrics::record(&self.labels, &self.group_figures());
    }

    /// Members and committed-offset lag of every group coordinated here, sorted by group id.
    ///
    /// The lag of a partition is its high watermark less the group's committed offset (0 if
    /// the commit is ahead), over the partitions the group has committed offsets for *and* this
    /// broker hosts a replica of, against that replica's own high watermark: exact where it
    /// leads, a little behind the leader's where it follows (by a replication round trip, more
    /// while it catches up), so the lag is never overstated. Partitions without a replica here
    /// are left out: asking their leaders at every scrape would make a scrape depend on other
    /// brokers. `broker group describe` reads every partition's exact lag.
    fn group_figures(&self) -> Vec<GroupFigures> {
        let mut figures = Vec::new();
        for (partition, offsets) in self.offsets.all() {
            if !self.coordinates(partition) {
                continue;
            }
            // Copied out so the partitions' watermarks are read without the groups' lock.
            let groups: Vec<(GroupFigures, Vec<(TopicPartition, u64)>)> = {
                let state = offsets.state();
                state
                    .group_ids()
                    .into_iter()
                    .map(|group_id| {
                        let members = state.group(&group_id).map_or(0, |g| g.members.len() as u64);
                        let committed = state
                            .offsets(&group_id)
                            .map(|o| o.iter().map(|(p, c)| (p.clone(), c.offset)).collect())
                            .unwrap_or_default();
                        (
                            GroupFigures {
                                group_id,
                                members,
                                lag: 0,
                            },
                            committed,
                        )
                    })
                    .collect()
            };
            for (mut group, committed) in groups {
                group.lag = committed
                    .iter()
                    .filter_map(|(p, offset)| {
                        let replica = self.partitions.get(&p.topic, p.partition)?;
                        Some(replica.high_watermark().0.saturating_sub(*offset))
                    })
                    .sum();
                figures.push(group);
            }
        }
        figures.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        figures
    }

    /// Removes members whose session ended and expires the offsets of long-empty groups, on
    /// the offsets partitions this broker leads, until the task is dropped.
    pub async fn expire_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut offsets_checked = Instant::now();
        let offsets_every = offsets_check_interval(self.settings.offsets_retention_ms);
        loop {
            tick.tick().await;
            let check_offsets = offsets_checked.elapsed() >= offsets_every;
            if check_offsets {
                offsets_checked = Instant::now();
            }
            for (partition, offsets) in self.offsets.all() {
                if let Err(error) = self.expire_in(partition, &offsets, check_offsets).await {
                    tracing::debug!(%error, partition, "expiring group members failed; retried next tick");
                }
            }
        }
    }

    async fn expire_in(
        &self,
        partition: u32,
        offsets: &Arc<OffsetsPartition>,
        check_offsets: bool,
    ) -> Result<(), GroupError> {
        let Some(replica) = self.partitions.get(OFFSETS_TOPIC, partition) else {
            return Ok(());
        };
        // The cheap view of leadership: a quiet partition's lease may have lapsed, and the
        // removal's write renews it (or fails, and the next tick retries).
        if replica.leader() != Some(self.node_id) || offsets.loaded_in_term() != Some(replica.current_term()) {
            return Ok(());
        }
        let now = Instant::now();
        let expired: Vec<(String, String)> = {
            let mut sessions = offsets.sessions();
            give_sessions(offsets, &mut sessions, now);
            let state = offsets.state();
            let wall_clock = now_ms();
            let overdue = state.group_ids().into_iter().flat_map(|group_id| {
                let members = state
                    .group(&group_id)
                    .map(|g| membership::overdue_revocations(g, wall_clock))
                    .unwrap_or_default();
                members.into_iter().map(move |member| (group_id.clone(), member))
            });
            sessions
                .iter()
                .filter(|(_, deadline)| **deadline <= now)
                .map(|(key, _)| key.clone())
                .chain(overdue)
                .collect()
        };
        for (group_id, member_id) in expired {
            let _writes = offsets.writes.lock().await;
            let current = offsets.state().group(&group_id).cloned();
            let changed = current
                .as_ref()
                .and_then(|group| membership::expire(group, &member_id, &self.topic_counts(), now_ms()));
            if let Some(group) = changed {
                tracing::info!(group = %group_id, member = %member_id, "session expired or revocation overdue; member removed");
                let bumps = epoch_bumps(current.as_ref(), &group);
                append(&replica, offsets, &[GroupRecord::Group { group }]).await?;
                if bumps > 0 {
                    metrics::rebalanced(&self.labels, &group_id, bumps);
                }
            }
            offsets.sessions().remove(&(group_id, member_id));
        }
        if check_offsets {
            let retention = i64::try_from(self.settings.offsets_retention_ms).unwrap_or(i64::MAX);
            let _writes = offsets.writes.lock().await;
            let gone = offsets.state().expired(now_ms(), retention);
            if !gone.is_empty() {
                tracing::info!(groups = ?gone, "offsets of long-empty groups expired");
                let records: Vec<GroupRecord> = gone
                    .into_iter()
                    .map(|group_id| GroupRecord::Delete { group_id })
                    .collect();
                append(&replica, offsets, &records).await?;
            }
        }
        Ok(())
    }
}

/// How often the offsets of empty groups are checked against `retention_ms`.
fn offsets_check_interval(retention_ms: u64) -> Duration {
    Duration::from_millis(retention_ms / 4).clamp(EXPIRY_TICK, OFFSETS_EXPIRY_TICK)
}

/// The offsets topic's log settings: no retention (its records are the groups' state; only
/// deletes and expiry remove a group) with fsync on every write, like the controller's log.
/// The log is purged behind snapshots of the groups instead (`OFFSETS_COMPACTION`); a purge
/// frees whole segments only, so the active segment is sealed before each snapshot and is
/// rarely near this size.
fn offsets_log_config() -> LogConfig {
    LogConfig {
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: 1024 * 1024,
        ..LogConfig::default()
    }
}

/// How many times a change from `before` (`None`: no membership yet) to `after` bumps the
/// group epoch: the rebalances it starts.
fn epoch_bumps(before: Option<&Group>, after: &Group) -> u64 {
    u64::try_from(after.epoch - before.map_or(0, |g| g.epoch)).unwrap_or(0)
}

/// Every member of the partition's groups without a session deadline gets a full session from
/// `now`: all of them when a new coordinator loads (it does not know when they last
/// heartbeated), and later a member whose join answered late (its write timed out, then
/// committed).
fn give_sessions(offsets: &OffsetsPartition, sessions: &mut HashMap<(String, String), Instant>, now: Instant) {
    let state = offsets.state();
    for group_id in state.group_ids() {
        for member in state.group(&group_id).iter().flat_map(|g| g.members.values()) {
            let timeout = Duration::from_millis(u64::from(member.session_timeout_ms));
            sessions
                .entry((group_id.clone(), member.member_id.clone()))
                .or_insert(now + timeout);
        }
    }
}

/// Appends `records` to the offsets partition and waits until they are committed and applied
/// here. Any failure makes the next request write a new barrier first: a write that timed out
/// may still commit, and the next change must be computed with it.
async fn append(
    replica: &PartitionReplica,
    offsets: &OffsetsPartition,
    records: &[GroupRecord],
) -> Result<(), GroupError> {
    let timestamp = now_ms();
    let batch: Vec<Record> = records
        .iter()
        .map(|record| Record {
            timestamp,
            key: record_key(record).map(|k| Bytes::from(k.as_bytes().to_vec())),
            value: Some(Bytes::from(
                serde_json::to_vec(record).expect("group records serialize"),
            )),
            ..Record::default()
        })
        .collect();
    let encoded = encode_batch(&batch, ProducerStamp::NONE);
    let deadline = Instant::now() + WRITE_TIMEOUT;
    match replica.append(encoded.into(), Acks::All, deadline).await {
        Ok(_) => Ok(()),
        Err(error) => {
            offsets.set_loaded_in_term(None);
            Err(match error {
                ReplicationError::NotLeader { leader, .. } => {
                    GroupError::CoordinatorNotAvailable(format!("leadership moved to {leader:?} during the write"))
                }
                ReplicationError::Timeout { .. } => GroupError::Timeout(error.to_string()),
                other => GroupError::Replication(other.to_string()),
            })
        }
    }
}

/// The record key: the group id, so a compaction by key keeps the latest state of each group.
fn record_key(record: &GroupRecord) -> Option<&str> {
    match record {
        GroupRecord::Group { group } => Some(&group.group_id),
        GroupRecord::Commit { group_id, .. } | GroupRecord::Delete { group_id } => Some(group_id),
        GroupRecord::Barrier => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{offsets_check_interval, EXPIRY_TICK, OFFSETS_EXPIRY_TICK};
    use std::time::Duration;

    #[test]
    fn offsets_are_checked_every_quarter_of_the_retention_within_bounds() {
        assert_eq!(offsets_check_interval(20_000), Duration::from_secs(5));
        assert_eq!(offsets_check_interval(7 * 24 * 3600 * 1000), OFFSETS_EXPIRY_TICK);
        assert_eq!(offsets_check_interval(0), EXPIRY_TICK);
    }
}
