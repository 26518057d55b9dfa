//! The write path: [`PartitionReplica::append`], the one entry point for producing to a
//! partition, and the three ways a batch goes in — proposed and acknowledged per `acks`, or
//! admitted against the producer table first when it comes from an idempotent producer.
//!
//! Deadlines: `acks=all` answers [`ReplicationError::Timeout`] (naming this group) once the
//! deadline passes, the batch possibly still committing; `acks=1` waits for its leader at most
//! [`LEADER_WAKE_WAIT`] (or until the deadline if sooner) and then up to the time that was left
//! for the leader's append; `acks=0` only waits for a leader (at most `LEADER_WAKE_WAIT`).

use super::lease::LEADER_WAKE_WAIT;
use super::{PartitionReplica, ReplicationError};
use crate::replication::idempotence::Admission;
use crate::replication::metrics::commit_latency;
use crate::replication::producer_state::{BatchIdentity, SequenceVerdict};
use crate::replication::quiesce::WriteInFlight;
use crate::replication::types::{PartitionRaft, RecordBatchPayload};
use crate::storage::Offset;
use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::responder::ProgressResponder;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long an idempotent batch that arrived ahead of its predecessor waits for it before it is
/// refused as out of order. Requests of one producer overtake each other only briefly (they are
/// separate HTTP/2 streams); a predecessor that failed is resent by the producer at once.
const SEQUENCE_GAP_WAIT: Duration = Duration::from_millis(1500);
/// Longest single wait before an idempotent append re-checks leadership.
const RECHECK_INTERVAL: Duration = Duration::from_millis(50);

/// How far a write must have got before it is acknowledged (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: proposed, nothing waited for.
    None,
    /// `acks=1`: in the leader's own log (not yet necessarily replicated or durable).
    Leader,
    /// `acks=all`: committed — a majority holds it durably (per the topic's fsync policy).
    All,
}

/// A record batch to append, with its producer's identity if that producer is idempotent: such
/// a batch is admitted against the producer table (only the producer's next batch is proposed;
/// a retry answers with the offset it already has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendBatch {
    /// The Kafka v2 record batch, validated by the caller.
    pub records: Bytes,
    /// The idempotent producer's stamp, if the batch carries one.
    pub producer: Option<BatchIdentity>,
}

impl AppendBatch {
    /// A batch without a producer stamp (or whose producer is not idempotent).
    pub fn plain(records: Bytes) -> Self {
        AppendBatch {
            records,
            producer: None,
        }
    }

    /// A batch of an idempotent producer.
    pub fn idempotent(records: Bytes, producer: BatchIdentity) -> Self {
        AppendBatch {
            records,
            producer: Some(producer),
        }
    }
}

impl From<Bytes> for AppendBatch {
    fn from(records: Bytes) -> Self {
        AppendBatch::plain(records)
    }
}

/// Where an appended batch ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Offset of its first record; `None` with `acks=0` (nothing was waited for).
    pub base_offset: Option<Offset>,
    /// Whether it was a retry of an idempotent batch already in the log (nothing was appended).
    pub duplicate: bool,
}

impl AppendOutcome {
    fn appended(base_offset: Offset) -> Self {
        AppendOutcome {
            base_offset: Some(base_offset),
            duplicate: false,
        }
    }
}

impl PartitionReplica {
    /// Appends `batch` on this leader and answers once it got as far as `acks` says, or gives up
    /// at `deadline` (see the module doc for what each acks waits for). A batch with a producer
    /// stamp is appended idempotently, which needs `Acks::All`.
    pub async fn append(
        &self,
        batch: AppendBatch,
        acks: Acks,
        deadline: Instant,
    ) -> Result<AppendOutcome, ReplicationError> {
        let AppendBatch { records, producer } = batch;
        match (acks, producer) {
            (Acks::All, Some(identity)) => self.append_idempotent(records, identity, deadline).await,
            (Acks::None | Acks::Leader, Some(_)) => {
                Err(ReplicationError::IdempotenceNeedsAcksAll { group: self.group })
            }
            (Acks::All, None) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout_at(deadline, self.append_committed(records)).await {
                    Ok(result) => result.map(AppendOutcome::appended),
                    Err(_) => Err(ReplicationError::Timeout {
                        group: self.group,
                        what: format!("commit within {timeout:?} (the write may still commit)"),
                    }),
                }
            }
            (Acks::Leader, None) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                self.append_on_leader(records, timeout)
                    .await
                    .map(AppendOutcome::appended)
            }
            (Acks::None, None) => self.append_without_ack(records).await.map(|()| AppendOutcome {
                base_offset: None,
                duplicate: false,
            }),
        }
    }

    /// A write starts: it counts as activity, wakes the group if it is quiet and led here, and
    /// until the guard drops the leader does not quiesce. Writes hold it across
    /// `ready_leader` and their proposal.
    pub(super) fn begin_write(&self) -> WriteInFlight {
        let (guard, woke) = self.groups.quiescence().begin_write(self.group);
        if woke {
            self.renewing_since_now();
        }
        guard
    }

    /// `acks=all`: answers once the batch is committed, with the offset of its first record.
    /// Waits for a leader at most `LEADER_WAKE_WAIT`, then for the commit as long as it takes.
    async fn append_committed(&self, batch: Bytes) -> Result<Offset, ReplicationError> {
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + LEADER_WAKE_WAIT, false).await?;
        let proposed = Instant::now();
        match self
            .live()
            .await?
            .client_write(RecordBatchPayload::new(batch).into())
            .await
        {
            Ok(response) => {
                // client_write answers once the entry is committed and applied here.
                commit_latency(proposed.elapsed());
                self.applied_offset(Ok(response))
            }
            Err(RaftError::APIError(error)) => self.applied_offset(Err(error)),
            Err(e) => Err(ReplicationError::Raft {
                group: self.group,
                message: e.to_string(),
            }),
        }
    }

    /// `acks=all` for a batch of an idempotent producer: proposes it only if it is the producer's
    /// next batch; a retry of a batch already in the log answers with that batch's offset and
    /// appends nothing. Gives up at `deadline` (the batch may still commit; a retry is safe).
    async fn append_idempotent(
        &self,
        batch: Bytes,
        identity: BatchIdentity,
        deadline: Instant,
    ) -> Result<AppendOutcome, ReplicationError> {
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
                    let proposed = Instant::now();
                    let raft = match self.live().await {
                        Ok(raft) => raft,
                        Err(stopped) => {
                            in_flight.withdraw(&identity);
                            return Err(stopped);
                        }
                    };
                    if let Err(fatal) = raft
                        .client_write_ff(RecordBatchPayload::new(batch.clone()).into(), Some(responder))
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
                        // Timed here, where the apply is answered, even if the caller gave up.
                        if matches!(result, Ok(Ok(_))) {
                            commit_latency(proposed.elapsed());
                        }
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
                        Ok(Ok(result)) => self.applied_offset(result).map(AppendOutcome::appended),
                    };
                }
                Admission::Duplicate(base_offset) => {
                    return Ok(AppendOutcome {
                        base_offset: Some(base_offset),
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

    /// `acks=1`: proposes `batch` and answers once the leader's own log holds it, with its
    /// offset. Gives up after `timeout`.
    async fn append_on_leader(&self, batch: Bytes, timeout: Duration) -> Result<Offset, ReplicationError> {
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + timeout.min(LEADER_WAKE_WAIT), false)
            .await?;
        let (token, appended) = self.appended.register();
        // The responder matters even though the answer comes at append: openraft may refuse
        // the proposal (e.g. ForwardToLeader when the leader's lease lapsed under load), and
        // then nothing is ever appended.
        let (responder, completion) = ProgressResponder::<PartitionRaft, _>::complete_only();
        let written = match self.live().await {
            Ok(raft) => raft
                .client_write_ff(RecordBatchPayload(batch, token).into(), Some(responder))
                .await
                .map_err(|fatal| fatal.to_string()),
            Err(stopped) => Err(stopped.to_string()),
        };
        if let Err(fatal) = written {
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
    async fn append_without_ack(&self, batch: Bytes) -> Result<(), ReplicationError> {
        let _writing = self.begin_write();
        self.ready_leader(Instant::now() + LEADER_WAKE_WAIT, false).await?;
        self.live()
            .await?
            .client_write_ff(RecordBatchPayload::new(batch).into(), None)
            .await
            .map_err(|fatal| ReplicationError::Raft {
                group: self.group,
                message: fatal.to_string(),
            })
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
}
