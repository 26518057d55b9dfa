//! The recent-entries cache: the newest entries of a log as they were appended (bodies shared,
//! not copied), so a leader replicates what it just appended from memory instead of reading it
//! back from the page cache.
//!
//! Invariant: the cached entries are always a contiguous run ending at the log's last entry,
//! so a read that starts inside the run is answered entirely from it. The owning
//! [`SegmentLog`](super::SegmentLog) keeps that true by telling the cache about every append,
//! truncation and purge, and by clearing it when a write fails (what reached the files is then
//! uncertain). At most [`RECENT_ENTRIES_BYTES`] of bodies are kept.

use super::StoredEntry;
use crate::storage::types::RaftIndex;
use std::collections::VecDeque;

/// Body bytes of the newest entries each log keeps in memory for replication reads.
pub const RECENT_ENTRIES_BYTES: usize = 1024 * 1024;

/// The newest entries of one log; owned by its [`SegmentLog`](super::SegmentLog).
#[derive(Debug, Default)]
pub(super) struct RecentEntries {
    entries: VecDeque<StoredEntry>,
    /// Sum of the bodies' lengths.
    bytes: usize,
}

impl RecentEntries {
    /// Drops everything (after a failed write, when the files may disagree with memory).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Adds entries just appended to the log, evicting the oldest past the byte limit.
    pub(super) fn remember(&mut self, appended: Vec<StoredEntry>) {
        for entry in appended {
            if entry.body.len() > RECENT_ENTRIES_BYTES {
                // Too large to keep: start over after it, so the run stays contiguous.
                self.clear();
                continue;
            }
            self.bytes += entry.body.len();
            self.entries.push_back(entry);
            while self.bytes > RECENT_ENTRIES_BYTES {
                let evicted = self.entries.pop_front().expect("bytes counted belong to entries");
                self.bytes -= evicted.body.len();
            }
        }
    }

    /// Forgets the entries after `last_kept` (all if `None`): the log was truncated there.
    pub(super) fn forget_after(&mut self, last_kept: Option<RaftIndex>) {
        while self
            .entries
            .back()
            .is_some_and(|e| last_kept.is_none_or(|k| e.id.index > k))
        {
            let dropped = self.entries.pop_back().expect("checked");
            self.bytes -= dropped.body.len();
        }
    }

    /// Forgets the entries up to `last`: the log purged them.
    pub(super) fn forget_through(&mut self, last: RaftIndex) {
        while self.entries.front().is_some_and(|e| e.id.index <= last) {
            let dropped = self.entries.pop_front().expect("checked");
            self.bytes -= dropped.body.len();
        }
    }

    /// Entries with Raft index in `[start, end)` if the run starts at or before `start` (then
    /// it holds all of the range the log has, as the run ends at the last entry); `None` if the
    /// log must be read instead.
    pub(super) fn read(&self, start: RaftIndex, end: RaftIndex) -> Option<Vec<StoredEntry>> {
        let first = self.entries.front()?;
        if first.id.index > start {
            return None;
        }
        let skip = (start.0 - first.id.index.0) as usize;
        let take = end.0.saturating_sub(start.0).min(usize::MAX as u64) as usize;
        Some(self.entries.iter().skip(skip).take(take).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::types::{EntryId, EntryKind, Offset};
    use bytes::Bytes;

    fn entry(index: u64, body_len: usize) -> StoredEntry {
        StoredEntry {
            id: EntryId {
                term: 1,
                leader_node: 1,
                index: RaftIndex(index),
            },
            kind: EntryKind::Blank,
            base_offset: Offset(0),
            record_count: 0,
            body: Bytes::from(vec![0u8; body_len]),
        }
    }

    fn indexes(entries: Option<Vec<StoredEntry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.id.index.0).collect())
    }

    fn cache_of(range: std::ops::Range<u64>, body_len: usize) -> RecentEntries {
        let mut cache = RecentEntries::default();
        cache.remember(range.map(|i| entry(i, body_len)).collect());
        cache
    }

    #[test]
    fn answers_only_reads_that_start_inside_the_run() {
        let cache = cache_of(5..10, 10);
        assert_eq!(indexes(cache.read(RaftIndex(6), RaftIndex(8))), Some(vec![6, 7]));
        assert_eq!(
            indexes(cache.read(RaftIndex(5), RaftIndex(u64::MAX))),
            Some(vec![5, 6, 7, 8, 9])
        );
        assert_eq!(
            indexes(cache.read(RaftIndex(12), RaftIndex(20))),
            Some(vec![]),
            "past the end"
        );
        assert_eq!(
            indexes(cache.read(RaftIndex(4), RaftIndex(8))),
            None,
            "starts before the run"
        );
        assert_eq!(indexes(RecentEntries::default().read(RaftIndex(0), RaftIndex(1))), None);
    }

    #[test]
    fn evicts_the_oldest_past_the_byte_limit() {
        let quarter = RECENT_ENTRIES_BYTES / 4;
        let cache = cache_of(0..6, quarter);
        assert_eq!(indexes(cache.read(RaftIndex(2), RaftIndex(6))), Some(vec![2, 3, 4, 5]));
        assert_eq!(cache.read(RaftIndex(1), RaftIndex(6)), None, "evicted");
        assert_eq!(cache.bytes, 4 * quarter);
    }

    #[test]
    fn an_entry_over_the_limit_empties_the_cache_so_the_run_stays_contiguous() {
        let mut cache = cache_of(0..3, 10);
        cache.remember(vec![entry(3, RECENT_ENTRIES_BYTES + 1), entry(4, 10)]);
        assert_eq!(indexes(cache.read(RaftIndex(4), RaftIndex(5))), Some(vec![4]));
        assert_eq!(cache.read(RaftIndex(3), RaftIndex(5)), None, "3 was never kept");
        assert_eq!(cache.bytes, 10);
    }

    #[test]
    fn truncation_and_purge_trim_the_ends() {
        let mut cache = cache_of(0..10, 10);
        cache.forget_after(Some(RaftIndex(6)));
        cache.forget_through(RaftIndex(2));
        assert_eq!(
            indexes(cache.read(RaftIndex(3), RaftIndex(100))),
            Some(vec![3, 4, 5, 6])
        );
        assert_eq!(cache.bytes, 40);
        cache.forget_after(None);
        assert_eq!(cache.read(RaftIndex(3), RaftIndex(100)), None);
        assert_eq!(cache.bytes, 0);
    }
}
