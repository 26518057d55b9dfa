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

/// Most entry bytes one `raft.v1` append message carries; a request holding more is sent as
/// several, well under the transport's `MAX_MESSAGE_BYTES`. openraft bounds a request by entry
/// count only (300), so a follower far behind a leader of large batches was sent requests the
/// follower's transport refused, the same one again at every retry: the partition stopped
/// committing for good (found by `perf consume` with 1 KiB records).
pub const APPEND_CHUNK_BYTES: usize = 8 * 1024 * 1024;

/// Splits an append into consecutive appends of at most `budget` entry bytes each (always at
/// least one entry): each continues from the previous one's last entry, and claims no more as
/// committed than it carries, so a follower that takes the first ones has a valid log prefix
/// and never a commit index beyond its log.
pub fn split_append(request: raft_v1::AppendRequest, budget: usize) -> Vec<raft_v1::AppendRequest> {
    let total: usize = request.entries.iter().map(|e| e.body.len()).sum();
    if total <= budget || request.entries.len() < 2 {
        return vec![request];
    }
    let raft_v1::AppendRequest {
        group,
        vote_json,
        mut prev_log_id,
        leader_commit,
        entries,
    } = request;
    let mut chunks: Vec<Vec<raft_v1::Entry>> = vec![Vec::new()];
    let mut bytes = 0;
    for entry in entries {
        let current = chunks.last_mut().expect("one chunk at least");
        if !current.is_empty() && bytes + entry.body.len() > budget {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += entry.body.len();
        chunks.last_mut().expect("one chunk at least").push(entry);
    }
    chunks
        .into_iter()
        .map(|entries| {
            let last = entries.last().and_then(|e| e.id);
            let commit = match (&leader_commit, &last) {
                (Some(commit), Some(last)) if commit.index > last.index => Some(*last),
                _ => leader_commit,
            };
            let chunk = raft_v1::AppendRequest {
                group,
                vote_json: vote_json.clone(),
                prev_log_id,
                leader_commit: commit,
                entries,
            };
            prev_log_id = last;
            chunk
        })
        .collect()
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
                3 => EntryKind::LogStart,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64) -> raft_v1::LogId {
        raft_v1::LogId {
            term: 2,
            leader_node: 1,
            index,
        }
    }

    fn append(sizes: &[usize], commit: u64) -> raft_v1::AppendRequest {
        raft_v1::AppendRequest {
            group: 7,
            vote_json: bytes::Bytes::from_static(b"{}"),
            prev_log_id: Some(id(10)),
            leader_commit: Some(id(commit)),
            entries: sizes
                .iter()
                .enumerate()
                .map(|(i, size)| raft_v1::Entry {
                    id: Some(id(11 + i as u64)),
                    kind: 0,
                    body: vec![0u8; *size].into(),
                })
                .collect(),
        }
    }

    #[test]
    fn an_append_within_the_budget_goes_whole() {
        let request = append(&[100, 100], 12);
        assert_eq!(split_append(request.clone(), 200), vec![request]);
        let huge = append(&[1000], 11);
        assert_eq!(split_append(huge.clone(), 10), vec![huge], "one entry is never split");
    }

    #[test]
    fn chunks_chain_their_prev_log_ids_and_never_claim_commits_beyond_themselves() {
        let chunks = split_append(append(&[60, 60, 60, 60, 60], 14), 130);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.entries.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(chunks[0].prev_log_id, Some(id(10)));
        assert_eq!(chunks[1].prev_log_id, Some(id(12)));
        assert_eq!(chunks[2].prev_log_id, Some(id(14)));
        // Committed up to 14: the first chunk (11..=12) claims 12, the rest the leader's 14.
        assert_eq!(chunks[0].leader_commit, Some(id(12)));
        assert_eq!(chunks[1].leader_commit, Some(id(14)));
        assert_eq!(chunks[2].leader_commit, Some(id(14)));
        let indexes: Vec<u64> = chunks
            .iter()
            .flat_map(|c| c.entries.iter().map(|e| e.id.as_ref().unwrap().index))
            .collect();
        assert_eq!(indexes, vec![11, 12, 13, 14, 15], "every entry once, in order");
        assert!(chunks.iter().all(|c| c.group == 7 && c.vote_json.as_ref() == b"{}"));
    }
}
