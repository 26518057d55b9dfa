//! Start-up and shutdown of a replica, its log settings, group membership, and vote holding: a replica whose
//! storage lost entries it had acknowledged takes no part in elections until it holds them
//! again (see `CatchUpRule`).

use super::{PartitionReplica, ReplicaHost, ReplicationError};
use crate::replication::catch_up::CatchUpRule;
use crate::replication::idempotence::InFlightBatches;
use crate::replication::log_store::PartitionLogStore;
use crate::replication::network::GroupNetworkFactory;
use crate::replication::raft_node::{HostedGroups, PartitionRaftNode, Rebuild};
use crate::replication::snapshot::Compaction;
use crate::replication::state_machine::{AppliedState, BatchObserver, PartitionStateMachine};
use crate::storage::{LogConfig, SegmentLog};
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The observer's restore point, if the log still holds its last applied entry (same index, same
/// term and leader); otherwise the observer is told to start over from the whole log. A state
/// machine ahead of its log would make openraft purge the log up to it, so it is never used.
fn restore_point_held_by(log: &SegmentLog, observer: &dyn BatchObserver, group: u64) -> Option<AppliedState> {
    let point = observer.restore_point()?;
    let Some(last) = point.last_applied_entry() else {
        return Some(point);
    };
    if log.holds(last) {
        tracing::info!(
            group,
            index = last.index.0,
            "state machine resumes from its persisted state"
        );
        Some(point)
    } else {
        tracing::warn!(
            group,
            index = last.index.0,
            "the log does not hold the persisted state's last entry: rebuilding from the log"
        );
        observer.restore_rejected();
        None
    }
}

/// The openraft configuration of one group: the host's, with elections off from the very first
/// tick while the replica is held from them, timers stopped from the start while it awaits its
/// leader after a restart, and — for a group that compacts — the log purged behind each
/// snapshot. No group snapshots by openraft's policy (`SnapshotPolicy::Never`): a compacting
/// group's replica asks for snapshots when its log outgrows its state (`compaction.rs`),
/// retention asks for one at the log start, and an ordinary partition's data *is* its log.
fn raft_config_of(
    host: &Arc<openraft::Config>,
    held_from_elections: bool,
    awaiting_leader: bool,
    compaction: Option<Compaction>,
) -> Arc<openraft::Config> {
    if !held_from_elections && !awaiting_leader && compaction.is_none() {
        return Arc::clone(host);
    }
    let mut config = (**host).clone();
    if held_from_elections {
        config.enable_elect = false;
    }
    if awaiting_leader {
        config.enable_tick = false;
    }
    if let Some(compaction) = compaction {
        // (The host's policy stays `Never`: snapshots are due by size, which openraft's policy,
        // a count of entries, cannot express.)
        config.max_in_snapshot_log_to_keep = compaction.keep_behind_snapshot;
    }
    Arc::new(config)
}

/// The leader a restarting replica waits for instead of running its election timer, if it
/// should: when this broker runs quiescence, `eligible` (an ordinary partition whose votes are
/// not held) and its log holds a committed vote. With thousands of quiet groups a restarted
/// broker whose replicas all ran their timers from zero would pre-vote in every group before
/// their leaders' appends reached it, and those thousands of vote requests starved the appends
/// that would have calmed them (docs/architecture.md, "Quiescence"). A replica that led its
/// group waits too, for the leader its peers elected meanwhile, but less long: with the whole
/// cluster restarting, its group needs it to campaign (see [`Quiescence::await_leader`]).
///
/// [`Quiescence::await_leader`]: crate::replication::quiesce::Quiescence::await_leader
fn awaited_leader(host: &ReplicaHost, log: &SegmentLog, eligible: bool) -> Option<u64> {
    if !eligible || !host.groups.quiescence().restarts_await_leader() {
        return None;
    }
    log.vote().filter(|vote| vote.committed).map(|vote| vote.node)
}

/// Waits until `rule` is met, then lets the replica vote and campaign again.
async fn rejoin_elections_once_caught_up(raft: PartitionRaftNode, hosted: HostedGroups, group: u64, rule: CatchUpRule) {
    // (Held throughout: a node whose elections are off never sleeps, as it would wake with the
    // host's configuration.)
    let Ok(raft) = raft.live().await else {
        return;
    };
    if raft
        .wait(None)
        .metrics(|m| rule.is_met(m), "holds every entry it had acknowledged")
        .await
        .is_ok()
    {
        raft.runtime_config().elect(true);
        hosted.release_votes(group);
        tracing::info!(
            group,
            "caught up after losing acknowledged entries: takes part in elections again"
        );
    }
}

impl PartitionReplica {
    /// Opens the log in `dir` and starts the Raft node of `group` on `host`, reachable through
    /// the host's group router. An `observer` sees every committed batch (the controller uses
    /// it to build cluster metadata).
    pub async fn start(
        host: &ReplicaHost,
        group: u64,
        dir: &Path,
        log_config: LogConfig,
        observer: Option<Arc<dyn BatchObserver>>,
    ) -> Result<PartitionReplica, ReplicationError> {
        if let Some(delay) = crate::storage::faults::replica_open_delay() {
            tokio::time::sleep(delay).await;
        }
        let (log, report) = SegmentLog::open(dir, log_config, host.logs.clone(), proto::record_batch::now_ms())?;
        if report.truncated_bytes > 0 || report.rebuilt_indexes > 0 {
            tracing::warn!(group, ?report, "partition log recovered");
        }
        let caught_up = report
            .lost_acknowledged
            .map(|lost| CatchUpRule::after(lost, log.vote()));
        let compaction = observer.as_ref().and_then(|o| o.compaction());
        let observer_absent = observer.is_none();
        let awaited_leader = awaited_leader(host, &log, caught_up.is_none() && observer_absent);
        let raft_config = raft_config_of(
            &host.raft_config,
            caught_up.is_some(),
            awaited_leader.is_some(),
            compaction,
        );
        let state_machine = match observer {
            Some(observer) => {
                let start = restore_point_held_by(&log, observer.as_ref(), group);
                PartitionStateMachine::with_observer(observer, start)
            }
            None => PartitionStateMachine::new(),
        };
        let retention = observer_absent;
        // Every group persists its snapshots (a compacting group's, and retention's at the
        // log start): openraft installs the persisted one before anything else, since the
        // log behind it may be purged.
        let state_machine = state_machine.persisting_snapshots(dir)?;
        let log_start_marks = state_machine.log_start_marks();
        let snapshots_due = state_machine.snapshots_due();
        let store = PartitionLogStore::new(log).sharing_snapshots_of(&state_machine);
        let closing = store.closing_flag();
        let log = store.log();
        let appended = store.append_notifier();
        let applied_next_offset = state_machine.applied_next_offset();
        let producers = state_machine.producers();
        let network = GroupNetworkFactory::new(group, host.peers.clone(), host.groups.catch_up_throttle().clone());
        let ticking = raft_config.enable_tick;
        // Only an ordinary partition's node sleeps when quiet (see `raft_node`): one with an
        // observer (the controller) is few and never quiesces, and its configuration is its own.
        let rebuild = observer_absent.then(|| Rebuild {
            node_id: host.node_id,
            config: Arc::clone(&host.raft_config),
            network: network.clone(),
            store: store.clone(),
        });
        let raft = openraft::Raft::new(host.node_id, raft_config, network, store, state_machine)
            .await
            .map_err(|e| ReplicationError::Raft {
                group,
                message: e.to_string(),
            })?;
        let raft = PartitionRaftNode::new(group, raft, rebuild, ticking);
        let hosted = host.groups.hosted();
        // (A hold left by an earlier start of this group in this process would outlive it.)
        hosted.release_votes(group);
        if let Some(rule) = caught_up {
            hosted.hold_votes(group, rule);
            tracing::warn!(
                group,
                lost = ?report.lost_acknowledged,
                "storage lost entries this replica had acknowledged: it takes no part in elections until it has them back"
            );
            tokio::spawn(rejoin_elections_once_caught_up(
                raft.clone(),
                hosted.clone(),
                group,
                rule,
            ));
        }
        hosted.insert(group, raft.clone());
        if let Some(due) = snapshots_due {
            tokio::spawn(super::compaction::snapshot_when_due(
                group,
                raft.clone(),
                Arc::clone(&log),
                due,
            ));
        }
        // (After the insert: a wake must find the node to restart its timers.)
        if let Some(leader) = awaited_leader {
            // (From the core, once it has started: the metrics hold no membership until its
            // first report. A core that stopped already answers nothing: its timers are
            // turned on below, and it is reported like any stopped core.)
            let voters: Vec<u64> = match raft.live().await {
                Ok(live) => live
                    .with_raft_state(|state| state.membership_state.effective().voter_ids().collect())
                    .await
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if voters.iter().all(|voter| *voter == host.node_id) {
                // Its only voter (or no answer): nobody else would elect a leader or reach it.
                raft.set_ticking(true);
            } else {
                host.groups
                    .quiescence()
                    .await_leader(group, leader, voters, host.node_id);
            }
        }
        Ok(PartitionReplica {
            group,
            raft,
            log,
            applied_next_offset,
            appended,
            groups: host.groups.clone(),
            producers,
            in_flight: Arc::new(tokio::sync::Mutex::new(InFlightBatches::default())),
            proposals: watch::Sender::new(0),
            lease: Duration::from_millis(host.raft_config.election_timeout_max),
            renewing_since: std::sync::Mutex::new(None),
            retention,
            log_start_marks,
            closing,
        })
    }

    /// Adds `node` (reachable at `address`) as a non-voting learner; only the leader can.
    pub async fn add_learner(&self, node: u64, address: String) -> Result<(), ReplicationError> {
        self.live()
            .await?
            .add_learner(node, BasicNode { addr: address }, false)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => ReplicationError::NotLeader {
                    group: self.group,
                    leader: forward.leader_id,
                },
                other => ReplicationError::Raft {
                    group: self.group,
                    message: other.to_string(),
                },
            })
    }

    /// The Raft group id of this replica: unique in the cluster, never reused (a re-created
    /// topic's partitions get new groups).
    pub fn group(&self) -> u64 {
        self.group
    }

    /// The voters and learners of the group, by node id.
    pub fn members(&self) -> Vec<u64> {
        self.raft.with_metrics(|metrics| {
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        })
    }

    /// Forms the group with `members` (node id → Raft address) if it has never been formed;
    /// a no-op on a group that already has a membership.
    pub async fn bootstrap(&self, members: BTreeMap<u64, String>) -> Result<(), ReplicationError> {
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, address)| (id, BasicNode { addr: address }))
            .collect();
        match self.live().await?.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ReplicationError::Raft {
                group: self.group,
                message: e.to_string(),
            }),
        }
    }

    /// Gives the log these settings (a topic's configs changed): segment size and age, fsync
    /// policy, index interval and retention apply to what is written from now on. Whether
    /// they differed from the log's (the write lock is taken only then).
    pub fn set_log_config(&self, config: &LogConfig) -> Result<bool, ReplicationError> {
        if self.log.read().map_err(|_| self.poisoned())?.config() == config {
            return Ok(false);
        }
        let mut log = self.log.write().map_err(|_| self.poisoned())?;
        log.set_config(config.clone())?;
        Ok(true)
    }

    /// Stops the Raft node and closes the log durably.
    pub async fn shutdown(&self) -> Result<(), ReplicationError> {
        self.groups.remove(self.group);
        // An append waiting for disk space would hold the Raft core, and so the shutdown.
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        self.raft.shutdown().await.map_err(|e| ReplicationError::Raft {
            group: self.group,
            message: e.to_string(),
        })?;
        // Blocking file work (an fdatasync, maybe the state file) off the async workers, so a
        // broker stopping thousands of replicas closes their logs in parallel.
        let log = Arc::clone(&self.log);
        let poisoned = self.poisoned();
        tokio::task::spawn_blocking(move || -> Result<(), ReplicationError> {
            let mut log = log.write().map_err(|_| poisoned)?;
            Ok(log.close()?)
        })
        .await
        .map_err(|e| ReplicationError::Raft {
            group: self.group,
            message: format!("closing the log: {e}"),
        })?
    }
}
