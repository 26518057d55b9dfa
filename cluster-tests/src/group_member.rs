//! A consumer-group member that records what it does into a history ([`crate::history`]), for
//! the nemesis: it joins, polls, commits after every poll and, if asked, leaves and rejoins as a
//! new member from time to time, so the group rebalances in an orderly way as well as after
//! faults.
//!
//! What it records: `group_subscribe` (invoke, then ok or fail), every rebalance callback as an
//! `assignment` (from inside the callback, so revocations are ordered against the other members'
//! assignments as they happened), every poll that returned records as a `group_poll`, and every
//! commit (invoke, then ok, fail with the coordinator's code, or info when nobody answered).
//!
//! Commits are explicit (`enable_auto_commit` off), of exactly the offsets recorded: the
//! position of every owned partition that moved since this member last committed it. With
//! auto-commit on, the consumer would also commit in the background and on revocation,
//! offsets the history would not show.

use crate::history::{AssignmentChange, Operation, Outcome, Recorder, Seen};
use client::{Cluster, GroupConfig, GroupConsumer, GroupError, OffsetReset, RebalanceListener};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Offsets every member of a group returned so far, per partition: what a test waits on
/// before it stops the members.
pub type GroupSeen = Arc<Mutex<BTreeMap<u32, BTreeSet<u64>>>>;

/// One recorded member.
#[derive(Debug, Clone)]
pub struct MemberPlan {
    /// Its process in the history (kept across rejoins).
    pub process: u32,
    /// The group.
    pub group: String,
    /// The one topic it subscribes to.
    pub topic: String,
    /// Leave (`close`) and rejoin as a new member this often; `None`: stay.
    pub rejoin_every: Option<Duration>,
}

/// The settings of a nemesis member: a short session, so a member cut off by a fault is
/// fenced and its partitions move within the run; manual commits (see the module doc).
pub fn member_config(group: &str) -> GroupConfig {
    GroupConfig {
        session_timeout: Duration::from_secs(6),
        heartbeat_interval: Duration::from_millis(300),
        enable_auto_commit: false,
        auto_offset_reset: OffsetReset::Earliest,
        fetch_max_wait: Duration::from_millis(100),
        ..GroupConfig::new(group)
    }
}

/// Records the listener's callbacks, with the epoch the member last reported.
struct HistoryListener {
    process: u32,
    group: String,
    history: Arc<Recorder>,
    epoch: Arc<AtomicI32>,
}

impl HistoryListener {
    fn record(&self, change: AssignmentChange, partitions: &[(String, u32)]) {
        self.history.record(
            self.process,
            Outcome::Ok,
            Operation::Assignment {
                group: self.group.clone(),
                change,
                partitions: partitions.iter().map(|(_, p)| *p).collect(),
                epoch: self.epoch.load(Ordering::SeqCst),
            },
        );
    }
}

impl RebalanceListener for HistoryListener {
    fn on_assigned(&mut self, partitions: &[(String, u32)]) {
        self.record(AssignmentChange::Assigned, partitions);
    }
    fn on_revoked(&mut self, partitions: &[(String, u32)]) {
        self.record(AssignmentChange::Revoked, partitions);
    }
    fn on_lost(&mut self, partitions: &[(String, u32)]) {
        self.record(AssignmentChange::Lost, partitions);
    }
}

/// Runs the member until `stop`, then closes it.
pub fn spawn_member(
    cluster: Arc<Cluster>,
    plan: MemberPlan,
    history: Arc<Recorder>,
    seen: GroupSeen,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            run_once(&cluster, &plan, &history, &seen, &stop).await;
        }
    })
}

/// One membership: join, poll and commit until `stop` or the time to rejoin, close.
async fn run_once(
    cluster: &Arc<Cluster>,
    plan: &MemberPlan,
    history: &Arc<Recorder>,
    seen: &GroupSeen,
    stop: &AtomicBool,
) {
    let process = plan.process;
    let epoch = Arc::new(AtomicI32::new(0));
    let listener = HistoryListener {
        process,
        group: plan.group.clone(),
        history: Arc::clone(history),
        epoch: Arc::clone(&epoch),
    };
    let mut member = GroupConsumer::new(Arc::clone(cluster), member_config(&plan.group))
        .expect("valid member config")
        .with_listener(listener);
    let subscribe = Operation::GroupSubscribe {
        group: plan.group.clone(),
        member: member.member_id(),
    };
    history.record(process, Outcome::Invoke, subscribe.clone());
    if member.subscribe(vec![plan.topic.clone()]).await.is_err() {
        history.record(process, Outcome::Fail, subscribe);
        tokio::time::sleep(Duration::from_millis(500)).await;
        return;
    }
    history.record(process, Outcome::Ok, subscribe);
    let leave_at = plan.rejoin_every.map(|every| Instant::now() + every);
    // What this membership last committed successfully, per partition.
    let mut committed: HashMap<u32, u64> = HashMap::new();
    while !stop.load(Ordering::SeqCst) && leave_at.is_none_or(|at| Instant::now() < at) {
        let records = match member.poll(Duration::from_millis(200)).await {
            Ok(records) => records,
            // Refused until subscribed again: start over as a new member.
            Err(GroupError::Refused { .. }) => break,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let member_epoch = member.member_epoch();
        epoch.store(member_epoch, Ordering::SeqCst);
        if !records.is_empty() {
            let mut offsets = seen.lock().expect("group seen");
            for record in &records {
                offsets.entry(record.partition).or_default().insert(record.offset);
            }
            drop(offsets);
            let records = records
                .into_iter()
                .map(|r| Seen {
                    partition: r.partition,
                    offset: r.offset,
                    value: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
                })
                .collect();
            history.record(
                process,
                Outcome::Ok,
                Operation::GroupPoll {
                    group: plan.group.clone(),
                    epoch: member_epoch,
                    records,
                },
            );
        }
        let offsets: Vec<(u32, u64)> = member
            .assignment()
            .into_iter()
            .filter_map(|(topic, partition)| member.position(&topic, partition).map(|offset| (partition, offset)))
            .filter(|(partition, offset)| committed.get(partition) != Some(offset))
            .collect();
        if offsets.is_empty() {
            continue;
        }
        let commit = |code: Option<String>| Operation::Commit {
            group: plan.group.clone(),
            epoch: member_epoch,
            offsets: offsets.clone(),
            code,
        };
        history.record(process, Outcome::Invoke, commit(None));
        let request = offsets
            .iter()
            .map(|(partition, offset)| ((plan.topic.clone(), *partition), *offset))
            .collect();
        match member.commit_offsets(request).await {
            Ok(()) => {
                history.record(process, Outcome::Ok, commit(None));
                committed.extend(offsets.iter().copied());
            }
            Err(error) => match error.code() {
                Some(code) => history.record(process, Outcome::Fail, commit(Some(format!("{code:?}")))),
                // No answer (or refused before sending): it may have been applied.
                None => history.record(process, Outcome::Info, commit(None)),
            },
        }
    }
    // Revokes what it owns (`on_revoked`) and leaves; nothing to commit (auto-commit is off).
    let _ = member.close().await;
}
