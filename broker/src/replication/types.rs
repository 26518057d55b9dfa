//! The openraft type configuration of a partition group, and the conversions between
//! openraft's ids and the storage layer's.

use crate::storage::{EntryId, Offset, RaftIndex, StoredVote};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A data entry's payload: one Kafka v2 record batch, validated before it is proposed, and the
/// token of the `acks=1` proposal it came from on this leader (not stored, not replicated:
/// entries read back from the log or from the network carry [`ProposalToken::NONE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordBatchPayload(pub Bytes, #[serde(skip)] pub ProposalToken);

impl RecordBatchPayload {
    /// A payload no one waits on to be appended.
    pub fn new(batch: Bytes) -> Self {
        RecordBatchPayload(batch, ProposalToken::NONE)
    }
}

/// Identifies a proposal whose proposer waits for the leader's append (`acks=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProposalToken(pub u64);

impl ProposalToken {
    /// No one waits.
    pub const NONE: ProposalToken = ProposalToken(0);
}

impl fmt::Display for RecordBatchPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record batch of {} bytes", self.0.len())
    }
}

/// What a partition group's Raft log carries besides blanks and memberships (openraft's
/// application data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionPayload {
    /// A record batch: the partition's data.
    Batch(RecordBatchPayload),
    /// Retention's decision that the log now starts after an earlier entry.
    LogStart(LogStartMark),
}

impl From<RecordBatchPayload> for PartitionPayload {
    fn from(batch: RecordBatchPayload) -> Self {
        PartitionPayload::Batch(batch)
    }
}

impl fmt::Display for PartitionPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionPayload::Batch(batch) => batch.fmt(f),
            PartitionPayload::LogStart(mark) => write!(
                f,
                "log start {} after entry {}",
                mark.next_offset.0, mark.through.index.0
            ),
        }
    }
}

/// A new start of a partition's log, decided by the leader's retention and replicated, so
/// that every replica purges its log through the same entry and reports the same log start.
/// Entries are identical on every replica (Raft's log matching), only segment boundaries differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStartMark {
    /// The last entry that goes.
    pub through: EntryId,
    /// The offset after it: the new log start offset.
    pub next_offset: Offset,
}

impl LogStartMark {
    /// The stored body of a log start entry.
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a log start mark serialises"))
    }

    /// Reads what [`encode`](Self::encode) wrote.
    pub(crate) fn decode(body: &[u8]) -> std::io::Result<LogStartMark> {
        serde_json::from_slice(body).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("log start entry does not parse: {e}"),
            )
        })
    }
}

/// What applying a data entry answers: the offset its first record got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedBatch {
    /// Base offset assigned to the batch.
    pub base_offset: Offset,
}

openraft::declare_raft_types!(
    /// Type configuration of a partition's Raft group.
    pub PartitionRaft:
        D = PartitionPayload,
        R = Option<AppliedBatch>,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub(crate) type LogId = openraft::LogId<openraft::impls::leader_id_adv::LeaderId<u64, u64>>;
pub(crate) type Vote = openraft::impls::Vote<openraft::impls::leader_id_adv::LeaderId<u64, u64>>;
pub(crate) type Entry = <PartitionRaft as openraft::RaftTypeConfig>::Entry;

pub(crate) fn entry_id_of(log_id: &LogId) -> EntryId {
    EntryId {
        term: log_id.leader_id.term,
        leader_node: log_id.leader_id.node_id,
        index: RaftIndex(log_id.index),
    }
}

pub(crate) fn log_id_of(id: &EntryId) -> LogId {
    LogId::new(
        openraft::impls::leader_id_adv::LeaderId {
            term: id.term,
            node_id: id.leader_node,
        },
        id.index.0,
    )
}

pub(crate) fn stored_vote_of(vote: &Vote) -> StoredVote {
    StoredVote {
        term: vote.leader_id.term,
        node: vote.leader_id.node_id,
        committed: vote.committed,
    }
}

pub(crate) fn vote_of(vote: &StoredVote) -> Vote {
    if vote.committed {
        Vote::new_committed(vote.term, vote.node)
    } else {
        Vote::new(vote.term, vote.node)
    }
}
