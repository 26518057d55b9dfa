//! Conversions between openraft's messages and the `raft.v1` protobuf messages. Entries travel
//! as (log id, kind, body bytes) — the same triple the segment log stores — so a record batch
//! crosses the network without re-encoding.

use super::log_store::{to_new_entry, to_raft_entry};
use super::types::{entry_id_of, log_id_of, Entry, LogId, PartitionRaft};
use crate::storage::{EntryId, EntryKind, Offset, RaftIndex, StoredEntry};
use openraft::raft::AppendEntriesRequest;
use proto::raft_v1;
use std::io;

fn wire_log_id(log_id: &LogId) -> raft_v1::LogId {
    let id = entry_id_of(log_id);
    raft_v1::LogId {
        term: id.term,
        leader_node: id.leader_node,
        index: id.index.0,
    }
}

fn raft_log_id(wire: &raft_v1::LogId) -> LogId {
    log_id_of(&EntryId {
        term: wire.term,
        leader_node: wire.leader_node,
        index: RaftIndex(wire.index),
    })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Encodes an AppendEntries request for `group`.
pub fn encode_append(group: u64, request: AppendEntriesRequest<PartitionRaft>) -> io::Result<raft_v1::AppendRequest> {
    let entries = request
        .entries
        .into_iter()
        .map(|entry: Entry| {
            let new = to_new_entry(entry)?;
            Ok(raft_v1::Entry {
                id: Some(raft_v1::LogId {
                    term: new.id.term,
                    leader_node: new.id.leader_node,
                    index: new.id.index.0,
                }),
                kind: new.kind as u32,
                body: new.body,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(raft_v1::AppendRequest {
        group,
        vote_json: serde_json::to_vec(&request.vote).map_err(io::Error::other)?.into(),
        prev_log_id: request.prev_log_id.as_ref().map(wire_log_id),
        leader_commit: request.leader_commit.as_ref().map(wire_log_id),
        entries,
    })
}

/// Decodes an AppendEntries request (the group id is the caller's to route on).
pub fn decode_append(request: raft_v1::AppendRequest) -> io::Result<AppendEntriesRequest<PartitionRaft>> {
    let vote = serde_json::from_slice(&request.vote_json).map_err(|e| invalid(format!("bad vote: {e}")))?;
    let entries = request
        .entries
        .into_iter()
        .map(|entry| {
            let id = entry.id.ok_or_else(|| invalid("entry without a log id".into()))?;
            let kind = match entry.kind {
                0 => EntryKind::Data,
                1 => EntryKind::Blank,
                2 => EntryKind::Membership,
                other => return Err(invalid(format!("unknown entry kind {other}"))),
            };
            to_raft_entry(StoredEntry {
                id: EntryId {
                    term: id.term,
                    leader_node: id.leader_node,
                    index: RaftIndex(id.index),
                },
                kind,
                base_offset: Offset(0),
                record_count: 0,
                body: entry.body,
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(AppendEntriesRequest {
        vote,
        prev_log_id: request.prev_log_id.as_ref().map(raft_log_id),
        leader_commit: request.leader_commit.as_ref().map(raft_log_id),
        entries,
    })
}
