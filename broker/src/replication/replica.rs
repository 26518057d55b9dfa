//! A partition replica: the segment log, the state machine and the openraft node of one
//! partition on this broker, with the operations the API layer needs (append with acks=all,
//! read up to the high watermark, leadership).

use super::catch_up::CatchUpRule;
use super::idempotence::{Admission, InFlightBatches};
use super::isr::{in_sync_replicas, FollowerProgress, IsrBounds};
use super::log_store::AppendNotifier;
use super::log_store::PartitionLogStore;
use super::network::{GroupNetworkFactory, PeerChannels};
use super::producer_state::{BatchIdentity, SequenceVerdict};
use super::quiesce::{heartbeat_now, WriteInFlight};
use super::raft_node::{HostedGroups, PartitionRaftNode};
use super::raft_service::RaftGroups;
use super::state_machine::{AppliedState, BatchObserver, PartitionStateMachine, SharedProducerTable};
use super::types::{PartitionRaft, RecordBatchPayload};
use crate::storage::{FlushHandle, LogConfig, Offset, RaftIndex, SegmentLog, StorageError, StoredEntry};
use bytes::Bytes;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::responder::ProgressResponder;
use openraft::{BasicNode, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long an idempotent batch that arrived ahead of its predecessor waits for it before it is
/// refused as out of order. Requests of one producer overtake each other only briefly (they are
/// separate HTTP/2 streams); a predecessor that failed is resent by the producer at once.
const SEQUENCE_GAP_WAIT: Duration = Duration::from_millis(1500);
/// Longest single wait before an idempotent append re-checks leadership.
const RECHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Errors of replicated operations.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// This replica is not the leader; `leader` is the current one if known. Retriable there.
    #[error("not the leader of group {group}; leader is {leader:?}")]
    NotLeader {
        /// The Raft group.
        group: u64,
        /// The leader's node id, if known.
        leader: Option<u64>,
    },
    /// The local log failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The Raft node stopped or refused the request for another reason.
    #[error("raft group {group}: {message}")]
    Raft {
        /// The Raft group.
        group: u64,
        /// What openraft said.
        message: String,
    },
    /// An idempotent batch's sequence is not its producer's next one.
    #[error("raft group {group}: producer {producer_id} sent sequence {got}, expected {expected}")]
    OutOfOrderSequence {
        /// The Raft group.
        group: u64,
        /// The producer.
        producer_id: i64,
        /// The sequence expected next.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },
    /// An idempotent batch from an older epoch than the partition has seen.
    #[error("raft group {group}: producer {producer_id} epoch {got} is fenced by epoch {current}")]
    ProducerFenced {
        /// The Raft group.
        group: u64,
        /// The producer.
        producer_id: i64,
        /// The current epoch.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// An idempotent batch written long ago (older than the batches remembered): nothing appended.
    #[error("raft group {group}: producer {producer_id} sequence {got} was written before its last five batches")]
    DuplicateSequence {
        /// The Raft group.
        group: u64,
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        got: i32,
    },
    /// No state for the producer (new, or evicted as idle) and the batch is not its first.
    #[error("raft group {group}: no state for producer {producer_id} and its batch starts at sequence {got}, not 0")]
    UnknownProducer {
        /// The Raft group.
        group: u64,
        /// The producer.
        producer_id: i64,
        /// The batch's first sequence.
        got: i32,
    },
    /// Waiting for a condition took longer than allowed.
    #[error("raft group {group}: timed out waiting for {what}")]
    Timeout {
        /// The Raft group.
        group: u64,
        /// What was waited for.
        what: String,
    },
}

/// Raft timers of partition groups. A follower only votes for a new leader once the old
/// leader's lease (openraft uses `election_timeout_max`) has expired, so failover takes roughly
/// one to two election timeouts: the defaults aim at ≤ 1.5 s. Shorter timers cost idle CPU per
/// group (heartbeats), which coalescing per peer is meant to pay for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimers {
    /// Leader heartbeat period (ms).
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout (ms).
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout (ms).
    pub election_timeout_max_ms: u64,
    /// A partition group idle this long (no writes, no reads, every follower caught up) stops
    /// its Raft timers until something wakes it (ms; 0 = never). See `replication::quiesce`.
    pub quiesce_after_ms: u64,
}

impl Default for RaftTimers {
    fn default() -> Self {
        RaftTimers {
            heartbeat_ms: 150,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 750,
            quiesce_after_ms: 1000,
        }
    }
}

impl RaftTimers {
    /// The openraft configuration for a partition group with these timers.
    pub fn raft_config(&self, cluster_name: &str) -> Result<Arc<openraft::Config>, ReplicationError> {
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Retention, not openraft, decides when log data may go (docs/architecture.md).
            snapshot_policy: SnapshotPolicy::Never,
            // A follower whose disk lost acknowledged entries (a torn or corrupted tail cut at
            // recovery) comes back with a shorter log than it once acknowledged. By default the
            // leader treats that as a bug and its Raft core panics, taking the partition down;
            // allowed, the leader re-replicates the missing entries (found by the nemesis test).
            allow_log_reversion: Some(true),
            // A restarted leader does not resume its old term: leading again takes an election.
            // Resumed, it handed the log ids of entries its torn tail had lost to new batches
            // while followers kept the originals under the same ids (nemesis seed 4), and its
            // producer table lacked the batches it had proposed and not yet applied.
            enable_leader_restore: Some(false),
            // A candidate first asks whether it would win, without raising its term: a replica
            // that was cut off (or restarted beside quiet groups) cannot depose a live leader
            // by coming back with a higher term.
            enable_pre_vote: Some(true),
            ..openraft::Config::default()
        };
        config.validate().map(Arc::new).map_err(|e| ReplicationError::Raft {
            group: 0,
            message: format!("invalid raft timers: {e}"),
        })
    }
}

/// What every replica on a broker shares: its node id, the data directory's flush worker, the
/// connections to peers, the Raft group router and the Raft timers.
#[derive(Clone)]
pub struct ReplicaHost {
    /// This broker's node id.
    pub node_id: u64,
    /// Group-commit worker of the data directory.
    pub flush: FlushHandle,
    /// One connection per peer.
    pub peers: PeerChannels,
    /// Routes incoming Raft messages to local groups.
    pub groups: RaftGroups,
    /// openraft configuration (timers) for the groups.
    pub raft_config: Arc<openraft::Config>,
}

/// One partition replica on this broker.
pub struct PartitionReplica {
    group: u64,
    raft: PartitionRaftNode,
    log: Arc<RwLock<SegmentLog>>,
    applied_next_offset: watch::Receiver<u64>,
    appended: AppendNotifier,
    groups: RaftGroups,
    producers: SharedProducerTable,
    in_flight: Arc<tokio::sync::Mutex<InFlightBatches>>,
    /// Bumped whenever an idempotent batch is proposed, to wake batches waiting for a gap.
    proposals: watch::Sender<u64>,
    /// openraft's leader lease (its `election_timeout_max`).
    lease: Duration,
    /// When a request last woke this group, or renewed a quiet leader's lease: until a lease
    /// has passed, a leader without a fresh lease is renewing it, not cut off.
    renewing_since: std::sync::Mutex<Option<Instant>>,
}

/// Where an idempotent batch ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotentAppend {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Whether it was a retry of a batch already in the log (nothing was appended).
    pub duplicate: bool,
}

/// A partition's offsets as one consistent snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffsets {
    /// First offset in the local log.
    pub log_start_offset: Offset,
    /// The high watermark: the offset after the last committed (and applied) record.
    pub high_watermark: Offset,
    /// Next offset of the local log (including uncommitted entries).
    pub log_end_offset: Offset,
}

/// Committed batches and the offsets they were read against: every batch starts below
/// `offsets.high_watermark`.
#[derive(Debug, Clone)]
pub struct CommittedRead {
    /// The partition's offsets at the time of the read.
    pub offsets: CommittedOffsets,
    /// Whole batches from the requested offset on.
    pub batches: Vec<StoredEntry>,
}

/// What a replica knows of its partition, for metadata and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The leader, if known.
    pub leader: Option<u64>,
    /// Whether this replica is that leader.
    pub is_leader: bool,
    /// Voting replicas of the group.
    pub voters: Vec<u64>,
    /// In-sync replicas (computed on the leader; empty elsewhere).
    pub isr: Vec<u64>,
    /// Replicas holding everything the leader holds (leader's view; empty elsewhere).
    pub caught_up: Vec<u64>,
    /// The high watermark as this replica knows it.
    pub high_watermark: Offset,
    /// First offset in the local log.
    pub log_start_offset: Offset,
    /// Next offset of the local log (including uncommitted entries).
    pub log_end_offset: Offset,
    /// This replica lost entries it had acknowledged and takes no part in elections until it
    /// has them back.
    pub held_from_elections: bool,
    /// The group is quiet here: idle, its Raft timers stopped (see `replication::quiesce`).
    pub quiescent: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long a request waits for a quiet group's leader to renew its lease.
const LEADER_WAKE_WAIT: Duration = Duration::from_secs(2);

/// Whether `metrics` show a leader under a committed vote that a quorum acknowledged within
/// `lease`. A leader cut off from its quorum keeps believing it leads; once its lease has
/// lapsed it stops serving, so a deposed leader's answers go stale for at most a lease.
fn leads_within_lease(metrics: &openraft::RaftMetrics<PartitionRaft>, lease: Duration) -> bool {
    use openraft::Instant as _;
    metrics.state == openraft::ServerState::Leader
        && metrics.vote.committed
        && metrics
            .last_quorum_acked
            .as_ref()
            .is_some_and(|acked| acked.elapsed() < lease)
}

/// The observer's restore point, if the log still holds its last applied entry (same index, same
/// term and leader); otherwise the observer is told to start over from the whole log. A state
/// machine ahead of its log would make openraft purge the log up to it, so it is never used.
fn restore_point_held_by(log: &SegmentLog, observer: &dyn BatchObserver, group: u64) -> Option<AppliedState> {
    let point = observer.restore_point()?;
    let Some(last) = point.last_applied_entry() else {
        return Some(point);
    };
    let held = log
        .read_entries(last.index, RaftIndex(last.index.0 + 1))
        .ok()
        .and_then(|entries| entries.into_iter().next())
        .is_some_and(|entry| entry.id == last);
    if held {
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

/// Waits until `rule` is met, then lets the replica vote and campaign again.
async fn rejoin_elections_once_caught_up(raft: PartitionRaftNode, hosted: HostedGroups, group: u64, rule: CatchUpRule) {
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
        let (log, report) = SegmentLog::open(dir, log_config, host.flush.clone(), now_ms())?;
        if report.truncated_bytes > 0 || report.rebuilt_indexes > 0 {
            tracing::warn!(group, ?report, "partition log recovered");
        }
        let caught_up = report
            .lost_acknowledged
            .map(|lost| CatchUpRule::after(lost, log.vote()));
        let raft_config = match caught_up {
            // Elections stay off from the very first tick, not from a moment after start.
            Some(_) => Arc::new(openraft::Config {
                enable_elect: false,
                ..(*host.raft_config).clone()
            }),
            None => Arc::clone(&host.raft_config),
        };
        let state_machine = match observer {
            Some(observer) => {
                let start = restore_point_held_by(&log, observer.as_ref(), group);
                PartitionStateMachine::with_observer(observer, start)
            }
            None => PartitionStateMachine::new(),
        };
        let store = PartitionLogStore::new(log);
        let log = store.log();
        let appended = store.append_notifier();
        let applied_next_offset = state_machine.applied_next_offset();
        let producers = state_machine.producers();
        let network = GroupNetworkFactory::new(group, host.peers.clone());
        let raft = openraft::Raft::new(host.node_id, raft_config, network, store, state_machine)
            .await
            .map_err(|e| ReplicationError::Raft {
                group,
                message: e.to_string(),
            })?;
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
        })
    }

    /// Adds `node` (reachable at `address`) as a non-voting learner; only the leader can.
    pub async fn add_learner(&self, node: u64, address: String) -> Result<(), ReplicationError> {
        self.raft
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

    /// The voters and learners of the group, by node id.
    pub fn members(&self) -> Vec<u64> {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forms the group with `members` (node id → Raft address) if it has never been formed;
    /// a no-op on a group that already has a membership.
    pub async fn bootstrap(&self, members: BTreeMap<u64, String>) -> Result<(), ReplicationError> {
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, address)| (id, BasicNode { addr: address }))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ReplicationError::Raft {
                group: self.group,
                message: e.to_string(),
            }),
        }
    }

    /// Appends `batch` and answers once it is committed — a majority holds it durably (per the
    /// topic's fsync policy) — with the offset of its first record. This is `acks=all`.
    pub async fn append_committed(&self, batch: Bytes) -> Result<Offset, ReplicationError> {
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + LEADER_WAKE_WAIT, false).await?;
        match self.raft.client_write(RecordBatchPayload::new(batch)).await {
            Ok(response) => self.applied_offset(Ok(response)),
            Err(RaftError::APIError(error)) => self.applied_offset(Err(error)),
            Err(e) => Err(ReplicationError::Raft {
                group: self.group,
                message: e.to_string(),
            }),
        }
    }

    /// `acks=all` for a batch of an idempotent producer: proposes it only if it is the producer's
    /// next batch; a retry of a batch already in the log answers with that batch's offset and
    /// appends nothing. Gives up after `timeout` (the batch may still commit; a retry is safe).
    pub async fn append_idempotent(
        &self,
        batch: Bytes,
        identity: BatchIdentity,
        timeout: Duration,
    ) -> Result<IdempotentAppend, ReplicationError> {
        let deadline = Instant::now() + timeout;
        let _writing = self.begin_write();
        let mut gap_deadline: Option<Instant> = None;
        loop {
            let term = self.ready_leader(deadline, true).await?;
            // Mark what has been seen before deciding, so a change right after is not missed.
            let mut applied = self.applied_next_offset.clone();
            applied.mark_unchanged();
            let mut proposals = self.proposals.subscribe();
            let mut in_flight = self.in_flight.lock().await;
            let admission = {
                let table = self.producers.lock().unwrap_or_else(|p| p.into_inner());
                in_flight.admit(term, &table, &identity)
            };
            tracing::debug!(group = self.group, term, ?identity, ?admission, "idempotent admission");
            let wait_until = match admission {
                Admission::Propose => {
                    in_flight.proposed(&identity);
                    let (responder, response_rx) = ProgressResponder::<PartitionRaft, _>::complete_only();
                    if let Err(fatal) = self
                        .raft
                        .client_write_ff(RecordBatchPayload::new(batch.clone()), Some(responder))
                        .await
                    {
                        in_flight.withdraw(&identity);
                        return Err(ReplicationError::Raft {
                            group: self.group,
                            message: fatal.to_string(),
                        });
                    }
                    drop(in_flight);
                    self.proposals.send_modify(|count| *count += 1);
                    // Watched to the end even if this caller stops waiting: a refused or failed
                    // proposal (openraft refuses with ForwardToLeader when the leader's lease
                    // lapsed) must not stay in the in-flight view as if it were in the log.
                    let (forward, response) = tokio::sync::oneshot::channel();
                    let gate = Arc::clone(&self.in_flight);
                    tokio::spawn(async move {
                        let result = response_rx.await;
                        let mut gate = gate.lock().await;
                        gate.resolved();
                        if !matches!(result, Ok(Ok(_))) {
                            tracing::debug!(?result, "an idempotent proposal did not apply");
                            gate.proposal_failed();
                        }
                        drop(gate);
                        let _ = forward.send(result.ok());
                    });
                    let outcome = tokio::time::timeout_at(deadline, response)
                        .await
                        .map(|forwarded| forwarded.ok().flatten().ok_or(()));
                    return match outcome {
                        Err(_) => Err(ReplicationError::Timeout {
                            group: self.group,
                            what: "the batch to commit (it may still commit; a retry is safe)".into(),
                        }),
                        Ok(Err(_)) => Err(ReplicationError::Raft {
                            group: self.group,
                            message: "the Raft node stopped before answering".into(),
                        }),
                        Ok(Ok(result)) => self.applied_offset(result).map(|base_offset| IdempotentAppend {
                            base_offset,
                            duplicate: false,
                        }),
                    };
                }
                Admission::Duplicate(base_offset) => {
                    return Ok(IdempotentAppend {
                        base_offset,
                        duplicate: true,
                    })
                }
                Admission::AwaitInFlight => deadline,
                Admission::AwaitGap { then } => {
                    let until = *gap_deadline.get_or_insert_with(|| Instant::now() + SEQUENCE_GAP_WAIT);
                    if Instant::now() >= until {
                        return Err(self.refusal(then, &identity));
                    }
                    until.min(deadline)
                }
                Admission::Refuse(verdict) => return Err(self.refusal(verdict, &identity)),
            };
            drop(in_flight);
            if Instant::now() >= deadline {
                return Err(ReplicationError::Timeout {
                    group: self.group,
                    what: "earlier proposals of this partition to resolve (a retry is safe)".into(),
                });
            }
            // Wake on an apply or a proposal, and re-check leadership at least every interval.
            let wake = wait_until.min(Instant::now() + RECHECK_INTERVAL);
            let _ = tokio::time::timeout_at(wake, async {
                tokio::select! {
                    _ = applied.changed() => {}
                    _ = proposals.changed() => {}
                }
            })
            .await;
        }
    }

    fn refusal(&self, verdict: SequenceVerdict, identity: &BatchIdentity) -> ReplicationError {
        match verdict {
            SequenceVerdict::Fenced { current } => ReplicationError::ProducerFenced {
                group: self.group,
                producer_id: identity.producer_id,
                current,
                got: identity.epoch,
            },
            SequenceVerdict::UnknownProducer => ReplicationError::UnknownProducer {
                group: self.group,
                producer_id: identity.producer_id,
                got: identity.first_sequence,
            },
            SequenceVerdict::OldDuplicate => ReplicationError::DuplicateSequence {
                group: self.group,
                producer_id: identity.producer_id,
                got: identity.first_sequence,
            },
            SequenceVerdict::OutOfOrder { expected } | SequenceVerdict::Gap { expected } => {
                ReplicationError::OutOfOrderSequence {
                    group: self.group,
                    producer_id: identity.producer_id,
                    expected,
                    got: identity.first_sequence,
                }
            }
            SequenceVerdict::Append | SequenceVerdict::Duplicate(_) => ReplicationError::Raft {
                group: self.group,
                message: format!("internal: {verdict:?} is not a refusal"),
            },
        }
    }

    fn applied_offset(
        &self,
        result: Result<openraft::raft::ClientWriteResponse<PartitionRaft>, ClientWriteError<PartitionRaft>>,
    ) -> Result<Offset, ReplicationError> {
        match result {
            Ok(response) => response
                .data
                .map(|applied| applied.base_offset)
                .ok_or_else(|| ReplicationError::Raft {
                    group: self.group,
                    message: "a data entry applied without an offset".into(),
                }),
            Err(ClientWriteError::ForwardToLeader(forward)) => Err(ReplicationError::NotLeader {
                group: self.group,
                leader: forward.leader_id,
            }),
            Err(e) => Err(ReplicationError::Raft {
                group: self.group,
                message: e.to_string(),
            }),
        }
    }

    /// Waits until this replica can answer a read (fetch, ListOffsets) as the leader: see
    /// [`Self::ready_leader`]. A read does not wake a quiet group: if the lease has lapsed, the
    /// leader renews it with one heartbeat round and the group stays quiet — consumers polling
    /// idle partitions do not keep them ticking.
    pub async fn ready_to_read(&self, deadline: Instant) -> Result<u64, ReplicationError> {
        self.ready_leader(deadline, true).await
    }

    /// A write starts: it counts as activity, wakes the group if it is quiet and led here, and
    /// until the guard drops the leader does not quiesce. Writes hold it across
    /// [`Self::ready_leader`] and their proposal.
    fn begin_write(&self) -> WriteInFlight {
        let (guard, woke) = self.groups.quiescence().begin_write(self.group);
        if woke {
            self.renewing_since_now();
        }
        guard
    }

    /// Waits until this replica is a leader fit to serve a request, and returns its term: it
    /// leads under a committed vote, a quorum acknowledged it within the lease, and with
    /// `own_term` an entry of its own term is applied — only then do the high watermark and the
    /// producer table reflect everything earlier leaders committed (a leader elected a moment
    /// ago may still hold an old commit index; answering a fetch from it would move the high
    /// watermark backwards).
    ///
    /// A quiet leader whose lease lapsed heartbeats at once and the request waits for the
    /// quorum's answers (as does a request that just woke the group). A leader that has been
    /// awake and lost its lease — cut off from its quorum — is refused at once.
    async fn ready_leader(&self, deadline: Instant, own_term: bool) -> Result<u64, ReplicationError> {
        let lease = self.lease;
        let own_term_applied = |m: &openraft::RaftMetrics<PartitionRaft>| {
            m.last_applied
                .as_ref()
                .is_some_and(|applied| applied.leader_id == m.vote.leader_id)
        };
        let ready = |m: &openraft::RaftMetrics<PartitionRaft>| {
            leads_within_lease(m, lease) && (!own_term || own_term_applied(m))
        };
        {
            let receiver = self.raft.metrics();
            let metrics = receiver.borrow_watched();
            if ready(&metrics) {
                return Ok(metrics.vote.leader_id.term);
            }
            if metrics.state != openraft::ServerState::Leader {
                return Err(ReplicationError::NotLeader {
                    group: self.group,
                    leader: metrics.current_leader,
                });
            }
        }
        if self.groups.is_quiet(self.group) {
            // Quiet, so nothing renews the lease on its own: one heartbeat round does.
            self.renewing_since_now();
            heartbeat_now(&self.raft);
        } else {
            let receiver = self.raft.metrics();
            let metrics = receiver.borrow_watched();
            let renewing = self
                .renewing_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|at| at.elapsed() < lease);
            if metrics.vote.committed && own_term_applied(&metrics) && !renewing {
                // Only the lease is missing, and not because the group was just woken.
                return Err(ReplicationError::NotLeader {
                    group: self.group,
                    leader: None,
                });
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self
            .raft
            .wait(Some(remaining))
            .metrics(ready, "a leader with a fresh lease")
            .await
        {
            Ok(metrics) => Ok(metrics.vote.leader_id.term),
            Err(_) => Err(ReplicationError::NotLeader {
                group: self.group,
                leader: self.leader(),
            }),
        }
    }

    fn renewing_since_now(&self) {
        *self.renewing_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// `acks=1`: proposes `batch` and answers once the leader's own log holds it (not yet
    /// necessarily replicated or durable), with its offset. Gives up after `timeout`.
    pub async fn append_on_leader(&self, batch: Bytes, timeout: Duration) -> Result<Offset, ReplicationError> {
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + timeout.min(LEADER_WAKE_WAIT), false)
            .await?;
        let (token, appended) = self.appended.register();
        // The responder matters even though the answer comes at append: openraft may refuse
        // the proposal (e.g. ForwardToLeader when the leader's lease lapsed under load), and
        // then nothing is ever appended.
        let (responder, completion) = ProgressResponder::<PartitionRaft, _>::complete_only();
        if let Err(fatal) = self
            .raft
            .client_write_ff(RecordBatchPayload(batch, token), Some(responder))
            .await
        {
            self.appended.forget(token);
            return Err(ReplicationError::Raft {
                group: self.group,
                message: fatal.to_string(),
            });
        }
        let outcome = tokio::time::timeout(timeout, async {
            tokio::select! {
                offset = appended => offset.ok().map(Ok),
                result = completion => match result {
                    Ok(result) => Some(self.applied_offset(result)),
                    Err(_) => None,
                },
            }
        })
        .await;
        self.appended.forget(token);
        match outcome {
            Ok(Some(result)) => result,
            _ => Err(ReplicationError::Timeout {
                group: self.group,
                what: "the leader to append the batch".into(),
            }),
        }
    }

    /// `acks=0`: proposes `batch` without waiting for anything.
    pub async fn append_without_ack(&self, batch: Bytes) -> Result<(), ReplicationError> {
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + LEADER_WAKE_WAIT, false).await?;
        self.raft
            .client_write_ff(RecordBatchPayload::new(batch), None)
            .await
            .map_err(|fatal| ReplicationError::Raft {
                group: self.group,
                message: fatal.to_string(),
            })
    }

    /// The high watermark: the offset after the last committed (and applied) record.
    pub fn high_watermark(&self) -> Offset {
        Offset(*self.applied_next_offset.borrow())
    }

    /// Waits until the high watermark is above `offset`, up to `timeout`; returns the high
    /// watermark then.
    pub async fn wait_for_high_watermark_above(&self, offset: Offset, timeout: Duration) -> Offset {
        let mut receiver = self.applied_next_offset.clone();
        let _ = tokio::time::timeout(timeout, receiver.wait_for(|hw| *hw > offset.0)).await;
        self.high_watermark()
    }

    /// The offset of the first record with a timestamp ≥ `timestamp`, among committed records.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<Offset>, ReplicationError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().map_err(|_| self.poisoned())?;
        Ok(log
            .offset_for_timestamp(timestamp)?
            .filter(|offset| *offset < high_watermark))
    }

    fn poisoned(&self) -> ReplicationError {
        ReplicationError::Raft {
            group: self.group,
            message: "log lock poisoned".into(),
        }
    }

    /// Leader, voters, ISR and offsets of this replica.
    pub fn status(&self, bounds: IsrBounds) -> ReplicaStatus {
        use openraft::Instant as _;
        let metrics = self.raft.metrics().borrow_watched().clone();
        let quiescent = self.groups.is_quiet(self.group);
        let is_leader = metrics.state == openraft::ServerState::Leader && metrics.vote.committed;
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        let (isr, caught_up) = if is_leader {
            let followers: Vec<FollowerProgress> = voters
                .iter()
                .map(|node| FollowerProgress {
                    node: *node,
                    matched_index: metrics
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(node).cloned().flatten())
                        .map(|log_id| log_id.index),
                    // A quiet group exchanges nothing: its followers all held the last entry
                    // when it quiesced, and are as responsive as their brokers' pings.
                    since_last_ack: if quiescent {
                        self.groups.liveness().since_answered(*node)
                    } else {
                        metrics
                            .heartbeat
                            .as_ref()
                            .and_then(|h| h.get(node).cloned().flatten())
                            .map(|at| at.elapsed())
                    },
                })
                .collect();
            (
                in_sync_replicas(metrics.id, metrics.last_log_index, &followers, bounds),
                in_sync_replicas(
                    metrics.id,
                    metrics.last_log_index,
                    &followers,
                    IsrBounds {
                        max_lag_entries: 0,
                        max_lag_time: bounds.max_lag_time,
                    },
                ),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let offsets = self.committed_offsets().unwrap_or(CommittedOffsets {
            log_start_offset: Offset(0),
            high_watermark: self.high_watermark(),
            log_end_offset: Offset(0),
        });
        ReplicaStatus {
            leader: metrics.current_leader,
            is_leader,
            voters,
            isr,
            caught_up,
            high_watermark: offsets.high_watermark,
            log_start_offset: offsets.log_start_offset,
            log_end_offset: offsets.log_end_offset,
            held_from_elections: self.groups.votes_held(self.group),
            quiescent,
        }
    }

    /// The log start, high watermark and log end, read together.
    pub fn committed_offsets(&self) -> Result<CommittedOffsets, ReplicationError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().map_err(|_| self.poisoned())?;
        Ok(CommittedOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark,
            log_end_offset: log.log_end_offset(),
        })
    }

    /// Batches from `from` on, never past the high watermark, with the offsets they were read
    /// against (one high-watermark snapshot bounds the read and is reported with it).
    pub fn read_committed(&self, from: Offset, max_bytes: usize) -> Result<CommittedRead, ReplicationError> {
        let high_watermark = self.high_watermark();
        let log = self.log.read().map_err(|_| self.poisoned())?;
        let offsets = CommittedOffsets {
            log_start_offset: log.log_start_offset(),
            high_watermark,
            log_end_offset: log.log_end_offset(),
        };
        let nothing_committed_yet =
            from >= high_watermark && from >= offsets.log_start_offset && from <= offsets.log_end_offset;
        let batches = if nothing_committed_yet {
            Vec::new()
        } else {
            log.read_batches(from, max_bytes, high_watermark)?
        };
        Ok(CommittedRead { offsets, batches })
    }

    /// Every entry in the local log (committed or not), for replica comparisons in tests and
    /// diagnostics.
    pub fn local_entries(&self) -> Result<Vec<StoredEntry>, ReplicationError> {
        let log = self.log.read().map_err(|_| self.poisoned())?;
        Ok(log.read_entries(crate::storage::RaftIndex(0), crate::storage::RaftIndex(u64::MAX))?)
    }

    /// The current leader as this replica knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Index of the last entry in the local log.
    pub fn last_log_index(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().last_log_index
    }

    /// Waits until some replica is leader as seen from here, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, ReplicationError> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader.is_some() && m.vote.committed,
                "an established leader",
            )
            .await
            .map_err(|_| ReplicationError::Timeout {
                group: self.group,
                what: "a leader".into(),
            })?;
        Ok(metrics.current_leader.expect("checked by the wait condition"))
    }

    /// Whether this replica is a leader ready for writes: its vote is committed and a quorum
    /// acknowledged it within the lease (a new leader refuses writes with `NotLeader` until
    /// then; a cut-off one from when its lease lapses).
    pub fn is_leader(&self) -> bool {
        // Read the fields in place, no metrics clone.
        leads_within_lease(&self.raft.metrics().borrow_watched(), self.lease)
    }

    /// Hands leadership to the voter `to` (operators moving leaders; the nemesis). openraft has
    /// the target campaign once its log holds everything this leader's does, and the other
    /// voters set their lease aside for it. Returns once this replica sees `to` leading.
    pub async fn transfer_leadership(&self, to: u64, timeout: Duration) -> Result<(), ReplicationError> {
        if self.leader() == Some(to) {
            return Ok(());
        }
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + timeout, false).await?;
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|fatal| ReplicationError::Raft {
                group: self.group,
                message: fatal.to_string(),
            })?;
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader == Some(to), "leadership transferred")
            .await
            .map(|_| ())
            .map_err(|_| ReplicationError::Timeout {
                group: self.group,
                what: format!("broker {to} to take over the leadership"),
            })
    }

    /// Waits until this replica has applied (so committed) everything up to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<(), ReplicationError> {
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied")
            .await
            .map(|_| ())
            .map_err(|_| ReplicationError::Timeout {
                group: self.group,
                what: format!("applied index {index}"),
            })
    }

    /// Stops the Raft node and closes the log durably.
    pub async fn shutdown(&self) -> Result<(), ReplicationError> {
        self.groups.remove(self.group);
        self.raft.shutdown().await.map_err(|e| ReplicationError::Raft {
            group: self.group,
            message: e.to_string(),
        })?;
        let mut log = self.log.write().map_err(|_| self.poisoned())?;
        Ok(log.close()?)
    }
}
