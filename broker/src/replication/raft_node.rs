//! The openraft node of a partition ([`PartitionRaftNode`]), running or dormant, and the nodes
//! hosted on this broker ([`HostedGroups`]): by group id, with the groups whose votes are held.
//!
//! Shared by the Raft RPC router (`raft_service`), quiescence (`quiesce`) and the replicas; it
//! depends on none of them, so that they need not depend on each other.
//!
//! **Dormancy.** An openraft instance costs ~140 KiB resident whether its group is busy or not
//! (its queues, channels, tasks and statistics: docs/benchmarks.md, "Where an idle replica's
//! memory goes"), ten times what a replica of ours costs. A quiet group needs none of it: its
//! timers are stopped and nothing reaches its core until a write, an append, a vote or a wake.
//! So quiescence puts a quiet group's node to sleep ([`PartitionRaftNode::go_dormant`]), leader
//! or follower: the instance shuts down, and the node keeps what openraft would read back at a
//! start — the log store (vote, log, committed id) and the state machine, taken out of the
//! instance first — with its last metrics. The first caller that needs the instance
//! ([`PartitionRaftNode::live`]: an RPC for the group, a wake, a write, a read's lease renewal)
//! builds it again from those, as a broker's start does, with its timers as quiescence last set
//! them; a leader leads again at once, in its term. Nothing is lost or replayed: the state
//! machine is the same object, and a quiet replica has applied its whole log.
//!
//! A sleeping follower answers its leader's heartbeats (lease renewals for reads) and probes
//! that change nothing on it itself, as openraft would, and then refuses candidates for a lease
//! as openraft would have. A sleeping leader reaches a restarted follower with the heartbeat its
//! instance would send ([`PartitionRaftNode::heartbeat_asleep`]): built again, its first appends
//! would be probes from the start of its log with no commit known, which do not settle a
//! follower awaiting it (tried at 10,000 partitions: the crash-restart stormed again).

use super::catch_up::CatchUpRule;
use super::log_store::PartitionLogStore;
use super::network::GroupNetworkFactory;
use super::state_machine::PartitionStateMachine;
use super::types::{LogId, PartitionRaft, Vote};
use openraft::async_runtime::watch::WatchReceiver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tokio::time::Instant;

/// A running openraft instance of a partition group.
pub type RaftInstance = openraft::Raft<PartitionRaft, PartitionStateMachine>;
/// What a group's openraft instance reports.
pub type RaftMetrics = openraft::RaftMetrics<PartitionRaft>;

/// What building a group's openraft instance again takes, besides its state machine: what
/// `openraft::Raft::new` was given at the start.
pub(crate) struct Rebuild {
    /// This broker's node id.
    pub node_id: u64,
    /// The group's openraft configuration. (Timers are set after the build, as quiescence last
    /// set them.)
    pub config: Arc<openraft::Config>,
    /// The group's network.
    pub network: GroupNetworkFactory,
    /// The group's log store (it shares the log with the replica).
    pub store: PartitionLogStore,
}

/// The openraft node of one partition group on this broker: running, or dormant (see the module
/// doc). Cheap to clone; clones share the node.
#[derive(Clone)]
pub struct PartitionRaftNode {
    cell: Arc<NodeCell>,
}

struct NodeCell {
    group: u64,
    state: Mutex<NodeState>,
    /// Held while the node goes to sleep or is built again, by a task of its own (a caller that
    /// gives up — an RPC past its deadline — must not drop a change half done, with the state
    /// machine in it): one change at a time.
    changing: tokio::sync::Mutex<()>,
    /// `None` for a node never put to sleep (a group with an observer: the controller).
    rebuild: Option<Rebuild>,
    /// Bumped each time the node goes to sleep: ends the replication streams opened on the
    /// instance that stops (see `raft_service`'s `append_stream`).
    sleeps: tokio::sync::watch::Sender<u64>,
}

struct NodeState {
    instance: Instance,
    /// When a caller last took the running instance ([`PartitionRaftNode::live`]): a node in
    /// use — a leader renewing its lease for every poll of a consumer — is not put to sleep.
    used_at: Instant,
    /// Whether the group's timers run, as quiescence last set them: applied to a rebuilt
    /// instance, and a node whose timers run is never put to sleep.
    ticking: bool,
    /// When this node, asleep, last answered its leader's heartbeat: openraft's follower
    /// refuses votes for a lease after each contact with its leader, and a rebuilt instance
    /// has no memory of contacts it did not see ([`PartitionRaftNode::leader_contact_within`]).
    leader_contact: Option<Instant>,
}

enum Instance {
    /// Running; `in_use` counts the [`LiveRaft`] handles out (the node sleeps only at none).
    /// `restored`: for an instance built again, the metrics it kept asleep, read instead of
    /// the instance's until its core first reports (they are blank until then: a group with no
    /// leader and no log, to whoever reads them — and waking it took no wait for the report).
    Running {
        raft: RaftInstance,
        in_use: usize,
        restored: Option<Box<RaftMetrics>>,
    },
    /// Asleep.
    Dormant(Box<Asleep>),
    /// Shut down for good (the replica stopped, or the instance could not be built again).
    Stopped { metrics: Box<RaftMetrics> },
}

/// What a sleeping node keeps.
struct Asleep {
    /// Its metrics when it went to sleep (nothing changes while it sleeps).
    metrics: RaftMetrics,
    /// Its state machine; `None` only while it is being put to sleep (under `changing`).
    state_machine: Option<PartitionStateMachine>,
}

impl Drop for NodeCell {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if matches!(state.instance, Instance::Dormant(_)) {
            super::metrics::dormant_group_dropped();
        }
    }
}

/// Whether `metrics` are a leader's whose vote is committed.
fn leads(metrics: &RaftMetrics) -> bool {
    metrics.state == openraft::ServerState::Leader && metrics.vote.committed
}

/// How long a sleeping leader's heartbeat waits for its answer.
const HEARTBEAT_ASLEEP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The node was shut down: the replica stopped, or its instance could not be built again.
#[derive(Debug, thiserror::Error)]
#[error("the Raft node of group {group} is shut down")]
pub struct NodeStopped {
    /// The group.
    pub group: u64,
}

/// A running instance, held: while any is out, the node is not put to sleep. Derefs to the
/// instance.
pub struct LiveRaft {
    raft: RaftInstance,
    cell: Arc<NodeCell>,
}

impl std::ops::Deref for LiveRaft {
    type Target = RaftInstance;

    fn deref(&self) -> &RaftInstance {
        &self.raft
    }
}

impl Drop for LiveRaft {
    fn drop(&mut self) {
        let mut state = self.cell.state.lock().expect("raft node");
        if let Instance::Running { in_use, .. } = &mut state.instance {
            *in_use = in_use.saturating_sub(1);
        }
    }
}

impl PartitionRaftNode {
    /// The node of `group`, running `raft`; `rebuild` lets it sleep (see the module doc).
    /// `ticking`: whether its timers run (as its configuration started them).
    pub(crate) fn new(group: u64, raft: RaftInstance, rebuild: Option<Rebuild>, ticking: bool) -> Self {
        PartitionRaftNode {
            cell: Arc::new(NodeCell {
                group,
                state: Mutex::new(NodeState {
                    instance: Instance::Running {
                        raft,
                        in_use: 0,
                        restored: None,
                    },
                    used_at: Instant::now(),
                    ticking,
                    leader_contact: None,
                }),
                changing: tokio::sync::Mutex::new(()),
                rebuild,
                sleeps: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// Runs `read` on the node's metrics: the running instance's, or those it had when it went
    /// to sleep (nothing changes while it sleeps).
    pub fn with_metrics<R>(&self, read: impl FnOnce(&RaftMetrics) -> R) -> R {
        let mut state = self.cell.state.lock().expect("raft node");
        match &mut state.instance {
            Instance::Running { raft, restored, .. } => {
                let metrics = raft.metrics();
                let metrics = metrics.borrow_watched();
                if let Some(kept) = restored {
                    // (The instance's receiver has seen no value but the initial one: a value
                    // "changed" is its core's first report, or a later one.)
                    if !metrics.has_changed() {
                        return read(kept);
                    }
                    *restored = None;
                }
                read(&metrics)
            }
            Instance::Dormant(asleep) => read(&asleep.metrics),
            Instance::Stopped { metrics } => read(metrics),
        }
    }

    /// Whether the node sleeps, or was built again and its core has not reported yet: a woken
    /// leader is then renewing its lease, not cut off.
    pub fn is_restoring(&self) -> bool {
        let state = self.cell.state.lock().expect("raft node");
        matches!(
            state.instance,
            Instance::Dormant(_) | Instance::Running { restored: Some(_), .. }
        )
    }

    /// Whether the node is asleep (or going to sleep).
    pub fn is_dormant(&self) -> bool {
        let state = self.cell.state.lock().expect("raft node");
        matches!(state.instance, Instance::Dormant(_))
    }

    /// If the node sleeps as a follower of `vote`'s leader, and an append from it whose last
    /// entry is `last_sent` (its previous entry's id if it carries none) changes nothing here,
    /// the matching entry openraft would answer `Success` with. Such an append is one whose
    /// last entry this node's log holds — a heartbeat at its last entry, or a leader built
    /// again probing it (by the Log Matching property everything before matches too) — or an
    /// empty one before the first entry. A sleeping node has applied its whole log, so the
    /// leader's commit adds nothing. Counts as a contact with the leader
    /// ([`Self::leader_contact_within`]) when it answers.
    pub(crate) fn answer_asleep(&self, vote: &Vote, last_sent: Option<LogId>) -> Option<Option<LogId>> {
        let in_step = {
            let state = self.cell.state.lock().expect("raft node");
            let Instance::Dormant(asleep) = &state.instance else {
                return None;
            };
            let metrics = &asleep.metrics;
            let last = metrics.last_applied;
            let asleep_under_vote = vote.committed
                && metrics.vote == *vote
                && metrics.state == openraft::ServerState::Follower
                && metrics.last_log_index == last.map(|l| l.index);
            if !asleep_under_vote {
                return None;
            }
            match (last_sent, last) {
                (None, _) => true,
                (Some(sent), Some(last)) if sent == last => true,
                (Some(sent), Some(last)) if sent.index < last.index => false,
                _ => return None,
            }
        };
        // (An entry before the last: the log says whether it holds it — read outside the
        // node's lock.)
        if !in_step && !self.log_holds(last_sent?) {
            return None;
        }
        let mut state = self.cell.state.lock().expect("raft node");
        if !matches!(state.instance, Instance::Dormant(_)) {
            return None; // (Woken meanwhile: openraft answers.)
        }
        state.leader_contact = Some(Instant::now());
        Some(last_sent)
    }

    /// Whether this node's log holds entry `id` (same index, same term and leader).
    fn log_holds(&self, id: LogId) -> bool {
        let Some(rebuild) = self.cell.rebuild.as_ref() else {
            return false;
        };
        let log = rebuild.store.log();
        let held = log.read().is_ok_and(|log| log.holds(super::types::entry_id_of(&id)));
        held
    }

    /// Whether this node, asleep, answered its leader within `lease`: a vote request is then
    /// refused, as openraft's follower refuses one within the lease of its leader's last
    /// contact (a leader serves reads on that lease).
    pub(crate) fn leader_contact_within(&self, lease: std::time::Duration) -> bool {
        let state = self.cell.state.lock().expect("raft node");
        state.leader_contact.is_some_and(|at| at.elapsed() < lease)
    }

    /// Resolves once the node goes to sleep after this call (or is dropped).
    pub(crate) fn asleep(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut sleeps = self.cell.sleeps.subscribe();
        async move {
            let _ = sleeps.changed().await;
        }
    }

    /// For a node asleep as its group's leader: sends `follower` the heartbeat its instance
    /// would — its vote, its last entry as the previous one and as the commit (a quiet leader
    /// has committed its whole log), no entries — without building the instance. How a
    /// sleeping leader reaches a restarted follower awaiting it: a heartbeat at its last entry
    /// settles it quiet. `None` if the node does not sleep as a leader of `follower`; otherwise
    /// whether the follower answered `Success`, or why the RPC failed.
    pub(crate) async fn heartbeat_asleep(&self, follower: u64) -> Option<Result<bool, String>> {
        let (rpc, node) = {
            let state = self.cell.state.lock().expect("raft node");
            let Instance::Dormant(asleep) = &state.instance else {
                return None;
            };
            let metrics = &asleep.metrics;
            if !leads(metrics) {
                return None;
            }
            let node = metrics.membership_config.membership().get_node(&follower)?.clone();
            let rpc = openraft::raft::AppendEntriesRequest::<PartitionRaft> {
                vote: metrics.vote,
                prev_log_id: metrics.last_applied,
                leader_commit: metrics.last_applied,
                entries: Vec::new(),
            };
            (rpc, node)
        };
        let (rpc_vote, rpc_prev) = (rpc.vote, rpc.prev_log_id);
        let mut network = self.cell.rebuild.as_ref()?.network.clone();
        let mut client = openraft::network::RaftNetworkFactory::new_client(&mut network, follower, &node).await;
        let option = openraft::network::RPCOption::new(HEARTBEAT_ASLEEP_WAIT);
        let answer = tokio::time::timeout(
            HEARTBEAT_ASLEEP_WAIT,
            openraft::RaftNetworkV2::append_entries(&mut client, rpc, option),
        )
        .await;
        Some(match answer {
            Ok(Ok(openraft::raft::AppendEntriesResponse::Success)) => {
                // What the instance would have learnt: the follower holds the last entry (one
                // built again while the follower was down, then asleep again, knew nothing of
                // it — and reported it out of the ISR).
                let mut state = self.cell.state.lock().expect("raft node");
                if let Instance::Dormant(asleep) = &mut state.instance {
                    if asleep.metrics.vote == rpc_vote {
                        if let Some(replication) = asleep.metrics.replication.as_mut() {
                            replication.insert(follower, rpc_prev);
                        }
                    }
                }
                Ok(true)
            }
            Ok(Ok(_)) => Ok(false),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("not answered within {HEARTBEAT_ASLEEP_WAIT:?}")),
        })
    }

    /// Starts or stops the group's election and heartbeat timers. A sleeping node whose timers
    /// are to run is built again (in a task of its own).
    pub fn set_ticking(&self, ticking: bool) {
        let mut state = self.cell.state.lock().expect("raft node");
        state.ticking = ticking;
        match &state.instance {
            Instance::Running { raft, .. } => raft.runtime_config().tick(ticking),
            Instance::Dormant(_) if ticking => {
                let node = self.clone();
                tokio::spawn(async move {
                    // (Built with its timers as last set: running, unless stopped meanwhile.)
                    let _ = node.live().await;
                });
            }
            Instance::Dormant(_) | Instance::Stopped { .. } => {}
        }
    }

    /// The running instance, built again first if the node sleeps.
    pub async fn live(&self) -> Result<LiveRaft, NodeStopped> {
        loop {
            if let Some(live) = self.hold_running()? {
                return Ok(live);
            }
            // (In a task of its own: see `changing`. Whatever its end, the loop sees it.)
            let node = self.clone();
            let _ = tokio::spawn(async move { node.wake().await }).await;
        }
    }

    /// The running instance, held; `None` if the node sleeps.
    fn hold_running(&self) -> Result<Option<LiveRaft>, NodeStopped> {
        let mut state = self.cell.state.lock().expect("raft node");
        state.used_at = Instant::now();
        match &mut state.instance {
            Instance::Running { raft, in_use, .. } => {
                *in_use += 1;
                Ok(Some(LiveRaft {
                    raft: raft.clone(),
                    cell: Arc::clone(&self.cell),
                }))
            }
            Instance::Dormant(_) => Ok(None),
            Instance::Stopped { .. } => Err(NodeStopped { group: self.cell.group }),
        }
    }

    /// Builds the sleeping node's instance again from what it kept, unless it was built or
    /// stopped meanwhile.
    async fn wake(&self) {
        let _changing = self.cell.changing.lock().await;
        let group = self.cell.group;
        let (state_machine, leader) = {
            let mut state = self.cell.state.lock().expect("raft node");
            let Instance::Dormant(asleep) = &mut state.instance else {
                return;
            };
            let Some(state_machine) = asleep.state_machine.take() else {
                // (Cannot be: it is `None` only under `changing`, held here.)
                tracing::error!(group, "a sleeping Raft node without its state machine: the replica is out of service until the broker restarts");
                let metrics = asleep.metrics.clone();
                state.instance = Instance::Stopped {
                    metrics: Box::new(metrics),
                };
                super::metrics::dormant_group_dropped();
                return;
            };
            (state_machine, leads(&asleep.metrics))
        };
        let Some(rebuild) = self.cell.rebuild.as_ref() else {
            return; // (Only a node with a rebuild sleeps.)
        };
        let mut config = (*rebuild.config).clone();
        // Off until the instance is in place; then as quiescence last set them.
        config.enable_tick = false;
        // A quiet leader leads again at once, in its term, as it went to sleep: nothing was
        // lost meanwhile (after a crash it may have been: there it must not, rule 7 of
        // docs/architecture.md's recovery rules). Its first request renews the lease with a
        // heartbeat round; should its group have elected another leader meanwhile, that
        // round's answers depose it before it serves anything.
        config.enable_leader_restore = Some(leader);
        let built = openraft::Raft::new(
            rebuild.node_id,
            Arc::new(config),
            rebuild.network.clone(),
            rebuild.store.clone(),
            state_machine,
        )
        .await;
        let mut state = self.cell.state.lock().expect("raft node");
        let Instance::Dormant(asleep) = &mut state.instance else {
            // (Stopped meanwhile cannot be — `shutdown` takes `changing` — but should it be,
            // the new instance goes with it.)
            if let Ok(raft) = built {
                tokio::spawn(async move { raft.shutdown().await });
            }
            return;
        };
        match built {
            Ok(raft) => {
                super::metrics::dormant_group_woke();
                let kept = std::mem::replace(&mut asleep.metrics, RaftMetrics::new_initial(rebuild.node_id));
                raft.runtime_config().tick(state.ticking);
                state.instance = Instance::Running {
                    raft,
                    in_use: 0,
                    restored: Some(Box::new(kept)),
                };
            }
            Err(e) => {
                tracing::error!(group, error = %e, "a sleeping Raft node could not be built again: the replica is out of service until the broker restarts");
                super::metrics::dormant_group_dropped();
                let metrics = std::mem::replace(&mut asleep.metrics, RaftMetrics::new_initial(rebuild.node_id));
                state.instance = Instance::Stopped {
                    metrics: Box::new(metrics),
                };
            }
        }
    }

    /// Puts the node to sleep if it can: it runs, nobody took it for `unused_for` and no
    /// [`LiveRaft`] is out, its timers are stopped, it leads or follows a known leader with its
    /// whole log applied, and it was built with a [`Rebuild`]. The caller (quiescence) has
    /// checked that its group is quiet here. Returns whether it sleeps now.
    pub(crate) async fn go_dormant(&self, unused_for: std::time::Duration) -> bool {
        // (In a task of its own: see `changing`.)
        let node = self.clone();
        tokio::spawn(async move { node.sleep(unused_for).await })
            .await
            .unwrap_or(false)
    }

    /// [`Self::go_dormant`], in its own task.
    async fn sleep(&self, unused_for: std::time::Duration) -> bool {
        if self.cell.rebuild.is_none() {
            return false;
        }
        let Ok(_changing) = self.cell.changing.try_lock() else {
            return false;
        };
        let raft = {
            let mut state = self.cell.state.lock().expect("raft node");
            let Instance::Running { raft, in_use: 0, .. } = &state.instance else {
                return false;
            };
            let metrics = raft.metrics().borrow_watched().clone();
            let follows = metrics.state == openraft::ServerState::Follower
                && metrics.current_leader.is_some_and(|leader| leader != metrics.id);
            let applied_all = metrics.last_applied.map(|applied| applied.index) == metrics.last_log_index;
            if state.ticking || state.used_at.elapsed() < unused_for || !applied_all || !(follows || leads(&metrics)) {
                return false;
            }
            let raft = raft.clone();
            // From here on callers wait for `changing`, then build it again; the replication
            // streams opened on this instance end.
            state.instance = Instance::Dormant(Box::new(Asleep {
                metrics,
                state_machine: None,
            }));
            state.leader_contact = None;
            self.cell.sleeps.send_modify(|sleeps| *sleeps += 1);
            raft
        };
        let taken = raft
            .with_state_machine(|state_machine| Box::pin(async move { std::mem::take(state_machine) }))
            .await;
        let slept = {
            let mut state = self.cell.state.lock().expect("raft node");
            let ticking = state.ticking;
            match (taken, &mut state.instance) {
                (Ok(taken), Instance::Dormant(asleep)) => {
                    // (As of the take: an entry applied since the first read is in them.)
                    asleep.metrics = raft.metrics().borrow_watched().clone();
                    asleep.state_machine = Some(taken);
                    super::metrics::dormant_group_slept();
                    true
                }
                _ => {
                    // Its core answered nothing (it stopped on a storage error, say): it stays
                    // as it was, reported as before, its timers as last set.
                    raft.runtime_config().tick(ticking);
                    state.instance = Instance::Running {
                        raft: raft.clone(),
                        in_use: 0,
                        restored: None,
                    };
                    false
                }
            }
        };
        if slept {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(group = self.cell.group, error = %e, "stopping a Raft node put to sleep");
            }
        }
        slept
    }

    /// Shuts the node down for good: the instance stops (a sleeping one has none).
    pub async fn shutdown(&self) -> Result<(), NodeStopped> {
        let _changing = self.cell.changing.lock().await;
        let running = {
            let mut state = self.cell.state.lock().expect("raft node");
            let stopped = |metrics| Instance::Stopped { metrics };
            match std::mem::replace(&mut state.instance, stopped(Box::new(RaftMetrics::new_initial(0)))) {
                Instance::Running { raft, .. } => {
                    state.instance = stopped(Box::new(raft.metrics().borrow_watched().clone()));
                    Some(raft)
                }
                Instance::Dormant(asleep) => {
                    super::metrics::dormant_group_dropped();
                    state.instance = stopped(Box::new(asleep.metrics));
                    None
                }
                Instance::Stopped { metrics } => {
                    state.instance = stopped(metrics);
                    None
                }
            }
        };
        if let Some(raft) = running {
            raft.shutdown()
                .await
                .map_err(|_| NodeStopped { group: self.cell.group })?;
        }
        Ok(())
    }
}

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
