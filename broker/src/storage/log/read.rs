//! Reading a partition log: entries by Raft index (for Raft, served from the recent entries
//! when it can), data batches by offset up to a bound (for fetches), and the first offset at
//! or after a timestamp.

use super::{SegmentLog, StoredEntry};
use crate::storage::error::{StorageError, StorageResult};
use crate::storage::segment::Visit;
use crate::storage::types::{EntryKind, Offset, RaftIndex};
use proto::record_batch::decode_records;

impl SegmentLog {
    /// Whether the log holds entry `id`: same index, same term and leader (by Raft's Log
    /// Matching property, then everything before it too). A read error counts as not held.
    pub fn holds(&self, id: crate::storage::EntryId) -> bool {
        self.read_entries(id.index, RaftIndex(id.index.0 + 1))
            .ok()
            .and_then(|entries| entries.into_iter().next())
            .is_some_and(|entry| entry.id == id)
    }

    /// Entries with Raft index in `[start, end)`, skipping purged ones.
    pub fn read_entries(&self, start: RaftIndex, end: RaftIndex) -> StorageResult<Vec<StoredEntry>> {
        let start = self.first_index().map_or(start, |first| start.max(first));
        let mut entries = Vec::new();
        if start >= end {
            return Ok(entries);
        }
        if let Some(cached) = self.recent.read(start, end) {
            return Ok(cached);
        }
        let first_segment = self
            .segments
            .partition_point(|s| s.first_index() <= start)
            .saturating_sub(1);
        for segment in &self.segments[first_segment..] {
            if segment.first_index() >= end {
                break;
            }
            let frames = segment.read_frames(segment.position_for_index(start), usize::MAX, |h| {
                if h.id.index >= end {
                    Visit::Stop
                } else if h.id.index < start {
                    Visit::Skip
                } else {
                    Visit::Take
                }
            })?;
            entries.extend(frames.into_iter().map(StoredEntry::from));
        }
        Ok(entries)
    }

    /// Data batches from the one holding `from` on, up to `max_bytes` (but always at least one
    /// batch if any is available), never including a batch that starts at or after
    /// `upper_bound` (the high watermark).
    pub fn read_batches(&self, from: Offset, max_bytes: usize, upper_bound: Offset) -> StorageResult<Vec<StoredEntry>> {
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        if from < log_start || from > log_end {
            return Err(StorageError::OffsetOutOfRange {
                requested: from,
                log_start,
                log_end,
            });
        }
        let mut batches = Vec::new();
        let mut bytes_left = max_bytes;
        let first_segment = self.segments.partition_point(|s| s.next_offset() <= from);
        for segment in &self.segments[first_segment..] {
            let frames = segment.read_frames(segment.position_for_offset(from), bytes_left, |h| {
                if h.base_offset >= upper_bound {
                    Visit::Stop
                } else if h.kind != EntryKind::Data || h.next_offset() <= from {
                    Visit::Skip
                } else {
                    Visit::Take
                }
            })?;
            for frame in frames {
                let len = frame.body.len();
                if !batches.is_empty() && len > bytes_left {
                    return Ok(batches);
                }
                bytes_left = bytes_left.saturating_sub(len);
                batches.push(StoredEntry::from(frame));
            }
            if bytes_left == 0 || segment.next_offset() >= upper_bound {
                break;
            }
        }
        Ok(batches)
    }

    /// The offset of the first record whose timestamp is ≥ `timestamp`, if any.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> StorageResult<Option<Offset>> {
        let log_start = self.log_start_offset();
        for segment in &self.segments {
            if segment.max_timestamp() < timestamp {
                continue;
            }
            let mut found = None;
            let frames = segment.read_frames(segment.position_for_timestamp(timestamp), usize::MAX, |h| {
                if found.is_some() {
                    Visit::Stop
                } else if h.kind == EntryKind::Data && h.max_timestamp >= timestamp && h.next_offset() > log_start {
                    found = Some(*h);
                    Visit::Take
                } else {
                    Visit::Skip
                }
            })?;
            if let Some(frame) = frames.into_iter().next() {
                // Find the exact record; a batch we cannot decode answers with its base offset.
                let exact = decode_records(&frame.body).ok().and_then(|records| {
                    records
                        .iter()
                        .find(|r| r.timestamp >= timestamp)
                        .map(|r| Offset(frame.header.base_offset.0 + r.offset_delta as u64))
                });
                let offset = exact.unwrap_or(frame.header.base_offset).max(log_start);
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }
}
