//! Newtypes for positions in a partition log, so a Raft index can never be used as an offset.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Kafka offset: the position of a record in a partition. Assigned by the log, dense over data
/// records, unaffected by non-data (blank, membership) entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Offset(pub u64);

/// The index of an entry in the Raft log of a partition. Dense over all entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct RaftIndex(pub u64);

/// The identity of a Raft log entry as the log stores it: the leader that proposed it (term and
/// node) and its index. The replication layer maps openraft's `LogId` to and from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EntryId {
    /// Term of the leader that proposed the entry.
    pub term: u64,
    /// Node id of that leader.
    pub leader_node: u64,
    /// Position in the Raft log.
    pub index: RaftIndex,
}

/// What a log entry carries. Only data entries take offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// A Kafka v2 record batch.
    Data = 0,
    /// A Raft no-op (a new leader's first entry).
    Blank = 1,
    /// A Raft membership change; the body is the serialized membership.
    Membership = 2,
    /// Retention's decision that the log starts after an earlier entry; the body is the
    /// replication layer's encoding of it. Replicated so every replica purges to the same entry.
    LogStart = 3,
}

impl EntryKind {
    pub(crate) fn from_byte(byte: u8) -> Option<EntryKind> {
        match byte {
            0 => Some(EntryKind::Data),
            1 => Some(EntryKind::Blank),
            2 => Some(EntryKind::Membership),
            3 => Some(EntryKind::LogStart),
            _ => None,
        }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offset {}", self.0)
    }
}

impl fmt::Display for RaftIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft index {}", self.0)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.term, self.leader_node, self.index.0)
    }
}
