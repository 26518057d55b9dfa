//! `SegmentLog`: the log of one partition replica — an ordered run of segments in one
//! directory, plus the vote/committed/purged state file.
//!
//! It is both the Raft log (entries addressed by Raft index) and the Kafka log (data batches
//! addressed by offset). Offsets are assigned here, deterministically from the log prefix: a
//! data entry's base offset is the log end offset when it is appended, so every replica that
//! holds the same entries assigns the same offsets.
//!
//! Concurrency: plain synchronous methods; writers take `&mut self`, readers `&self`. The
//! owner wraps it in a lock and never holds that lock across an `.await` or an fsync (fsyncs
//! happen on the flush worker).
//!
//! Files: this one holds the log's shape and its writes (append, roll, truncate, purge,
//! retention, the Raft state); `recovery.rs` opens a log after a restart; `read.rs` serves
//! reads by Raft index, by offset and by timestamp; `recent.rs` keeps the newest entries in
//! memory for replication reads. `recovery.rs` and `read.rs` extend [`SegmentLog`]'s `impl` from
//! child modules, which see its private fields; nothing outside this folder does.

mod read;
mod recent;
mod recovery;

pub use recent::RECENT_ENTRIES_BYTES;
pub use recovery::{LostAcknowledged, RecoveryReport};

use super::acknowledged::AcknowledgedMark;
use super::config::{FsyncPolicy, LogConfig};
use super::error::{StorageError, StorageResult};
use super::flush::{DurableCallback, FlushHandle, SyncTarget};
use super::frame::{encode_frame, FrameHeader, MAX_BODY_LEN};
use super::metrics;
use super::open_files::OpenFiles;
use super::retention::{segments_to_delete, RetentionPolicy, SegmentFacts};
use super::segment::{ReadFrame, Segment};
use super::state_file::{sync_dir, PersistedState, PurgedPrefix, StateFile, StoredVote};
use super::types::{EntryId, EntryKind, Offset, RaftIndex};
use bytes::Bytes;
use proto::record_batch::BatchHeader;
use recent::RecentEntries;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Its Raft identity.
    pub id: EntryId,
    /// What the body is.
    pub kind: EntryKind,
    /// A Kafka v2 record batch for data entries; opaque bytes otherwise.
    pub body: Bytes,
}

/// An entry read back, with the offsets the log assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its Raft identity.
    pub id: EntryId,
    /// What the body is.
    pub kind: EntryKind,
    /// Offset of its first record (the log end offset at that point for non-data entries).
    pub base_offset: Offset,
    /// Records in it (0 for non-data entries).
    pub record_count: u32,
    /// The body exactly as appended.
    pub body: Bytes,
}

impl From<ReadFrame> for StoredEntry {
    fn from(frame: ReadFrame) -> Self {
        StoredEntry {
            id: frame.header.id,
            kind: frame.header.kind,
            base_offset: frame.header.base_offset,
            record_count: frame.header.record_count,
            body: frame.body,
        }
    }
}

/// A summary of one segment, for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Raft index of its first entry.
    pub first_index: RaftIndex,
    /// Raft index of its last entry, if any.
    pub last_index: Option<RaftIndex>,
    /// First offset in it.
    pub base_offset: Offset,
    /// Bytes of frames.
    pub size: u64,
    /// Path of the `.log` file.
    pub path: PathBuf,
}

/// Frames an append has encoded for the active segment and not yet written to it.
#[derive(Default)]
struct PendingFrames {
    bytes: u64,
    first_timestamp: Option<i64>,
}

impl PendingFrames {
    fn add(&mut self, header: &FrameHeader) {
        self.bytes += header.frame_len() as u64;
        if header.kind == EntryKind::Data && self.first_timestamp.is_none() {
            self.first_timestamp = Some(header.max_timestamp);
        }
    }
}

/// What every log of one broker shares: the group-commit flush worker and the open-file
/// budget. A bare [`FlushHandle`] converts into one with a budget of its own (tests, perf).
#[derive(Clone)]
pub struct LogHost {
    /// Where fsyncs go.
    pub flush: FlushHandle,
    /// The broker's open-file budget.
    pub files: OpenFiles,
}

impl From<FlushHandle> for LogHost {
    fn from(flush: FlushHandle) -> LogHost {
        LogHost {
            flush,
            files: OpenFiles::new(UNSHARED_OPEN_FILES),
        }
    }
}

/// The budget of a log opened without a shared one: enough that it never closes its own files.
const UNSHARED_OPEN_FILES: usize = 1 << 16;

/// The log of one partition replica.
pub struct SegmentLog {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    state: StateFile,
    flusher: FlushHandle,
    files: OpenFiles,
    failed: Arc<AtomicBool>,
    acknowledged: Arc<AcknowledgedMark>,
    /// The newest entries as appended, for replication reads (see [`RecentEntries`]).
    recent: RecentEntries,
}

impl SegmentLog {
    /// The directory holding this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's settings.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Changes settings that apply from now on (retention, fsync, rolling).
    pub fn set_config(&mut self, config: LogConfig) -> StorageResult<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The last entry that was purged (its successor is the first readable entry).
    pub fn purged(&self) -> Option<EntryId> {
        self.state.state().purged.map(|p| p.last)
    }

    /// The last entry in the log, or the last purged one if the log holds nothing after it.
    pub fn last_entry_id(&self) -> Option<EntryId> {
        // The active segment is empty right after a roll: the last entry is in the one before.
        let last = self.segments.iter().rev().find_map(|s| s.last()).map(|h| h.id);
        match (last, self.purged()) {
            (Some(last), Some(purged)) if purged.index > last.index => Some(purged),
            (Some(last), _) => Some(last),
            (None, purged) => purged,
        }
    }

    /// Whether an fsync failed: the log refuses every write until it is reopened (a restart).
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The first Raft index that can be read.
    pub fn first_index(&self) -> Option<RaftIndex> {
        match (self.purged(), self.segments.first()) {
            (Some(purged), _) => Some(RaftIndex(purged.index.0 + 1)),
            (None, Some(first)) => Some(first.first_index()),
            (None, None) => None,
        }
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> Offset {
        match (self.state.state().purged, self.segments.first()) {
            (Some(purged), _) => purged.next_offset,
            (None, Some(first)) => first.base_offset(),
            (None, None) => Offset(0),
        }
    }

    /// The offset the next record will get (the log end offset).
    pub fn log_end_offset(&self) -> Offset {
        self.segments
            .last()
            .map(Segment::next_offset)
            .unwrap_or_else(|| self.log_start_offset())
    }

    /// Bytes of frames in all segments: the log's size on disk, indexes aside (what
    /// `retention_bytes` bounds). Cheap: no allocation, unlike [`SegmentLog::segments`].
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    /// How many segments the log has (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Summaries of the segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|s| SegmentInfo {
                first_index: s.first_index(),
                last_index: s.last().map(|h| h.id.index),
                base_offset: s.base_offset(),
                size: s.size(),
                path: s.log_path().to_path_buf(),
            })
            .collect()
    }

    /// Appends `entries` (contiguous, starting right after the last entry) and calls
    /// `on_durable` once they are durable under the fsync policy. Returns once they are in the
    /// page cache and readable. On error nothing is reported durable, and no partial frame is
    /// left in the log.
    /// Returns the base offset assigned to each entry.
    pub fn append(
        &mut self,
        entries: Vec<NewEntry>,
        now_ms: i64,
        on_durable: DurableCallback,
    ) -> StorageResult<Vec<Offset>> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(StorageError::Failed { path: self.dir.clone() });
        }
        let Some(last_id) = entries.last().map(|e| e.id) else {
            on_durable(Ok(()));
            return Ok(Vec::new());
        };
        // The mark moves only once the data is fsynced, and before anyone hears it is durable.
        let on_durable: DurableCallback = if self.config.fsync == FsyncPolicy::Always {
            let acknowledged = Arc::clone(&self.acknowledged);
            let generation = acknowledged.generation();
            Box::new(move |result| on_durable(result.and_then(|()| acknowledged.advance(last_id, generation))))
        } else {
            on_durable
        };
        let mut expected = self.last_entry_id().map(|id| id.index.0 + 1);
        let mut next_offset = self.log_end_offset();
        let mut frames: Vec<(FrameHeader, Bytes)> = Vec::with_capacity(entries.len());
        for entry in entries {
            if let Some(expected) = expected {
                if entry.id.index.0 != expected {
                    return Err(StorageError::NonContiguousAppend {
                        expected,
                        got: entry.id.index.0,
                    });
                }
            }
            expected = Some(entry.id.index.0 + 1);
            if entry.body.len() > MAX_BODY_LEN {
                return Err(StorageError::EntryTooLarge {
                    size: entry.body.len(),
                    limit: MAX_BODY_LEN,
                });
            }
            let (record_count, max_timestamp) = match entry.kind {
                EntryKind::Data => {
                    let batch = BatchHeader::parse(&entry.body).map_err(|source| StorageError::InvalidBatch {
                        index: entry.id.index,
                        source,
                    })?;
                    (batch.record_count as u32, batch.max_timestamp)
                }
                EntryKind::Blank | EntryKind::Membership | EntryKind::LogStart => (0, -1),
            };
            let header = FrameHeader {
                id: entry.id,
                kind: entry.kind,
                base_offset: next_offset,
                record_count,
                max_timestamp,
                body_len: entry.body.len(),
            };
            next_offset = header.next_offset();
            frames.push((header, entry.body));
        }

        let base_offsets: Vec<Offset> = frames.iter().map(|(header, _)| header.base_offset).collect();
        let appended: Vec<StoredEntry> = frames
            .iter()
            .map(|(header, body)| StoredEntry {
                id: header.id,
                kind: header.kind,
                base_offset: header.base_offset,
                record_count: header.record_count,
                body: body.clone(),
            })
            .collect();
        let touched = match self.write_frames(frames, now_ms) {
            Ok(touched) => touched,
            Err(error) => {
                // What reached the files is uncertain now: keep no in-memory copy that could
                // disagree with them.
                self.recent.clear();
                return Err(error);
            }
        };
        self.recent.remember(appended);

        match self.config.fsync {
            FsyncPolicy::Always => self.flusher.sync_then(touched, on_durable),
            FsyncPolicy::Interval(every) => {
                self.flusher.mark_dirty(touched, every);
                on_durable(Ok(()));
            }
            FsyncPolicy::Never => on_durable(Ok(())),
        }
        Ok(base_offsets)
    }

    fn write_frames(&mut self, frames: Vec<(FrameHeader, Bytes)>, now_ms: i64) -> StorageResult<Vec<SyncTarget>> {
        let mut touched: Vec<SyncTarget> = Vec::new();
        let mut buffer = Vec::new();
        let mut headers = Vec::new();
        // What this call has encoded for the active segment but not written yet: a follower
        // catching up appends hundreds of entries at once, and they must roll like single ones.
        let mut pending = PendingFrames::default();
        for (header, body) in frames {
            let mut new_segment = false;
            if self.needs_roll(&header, &pending, now_ms) {
                self.write_to_active(&mut buffer, &mut headers)?;
                self.roll(header.id.index, header.base_offset, now_ms)?;
                pending = PendingFrames::default();
                new_segment = true;
            }
            if self.segments.is_empty() {
                self.start_segment(header.id.index, header.base_offset, now_ms)?;
            }
            if new_segment || touched.is_empty() {
                touched.push(self.active_sync_target()?);
            }
            pending.add(&header);
            encode_frame(&mut buffer, &header, &body);
            headers.push(header);
        }
        self.write_to_active(&mut buffer, &mut headers)?;
        Ok(touched)
    }

    fn write_to_active(&mut self, buffer: &mut Vec<u8>, headers: &mut Vec<FrameHeader>) -> StorageResult<()> {
        if headers.is_empty() {
            return Ok(());
        }
        let active = self
            .segments
            .last_mut()
            .expect("a segment exists once frames are encoded");
        active.append(buffer, headers)?;
        metrics::appended(buffer.len() as u64);
        buffer.clear();
        headers.clear();
        Ok(())
    }

    /// Whether `frame` goes to a new segment: the active one (with the frames of this append
    /// before it) is full, or `segment_ms` old — by the clock, or by record time (the frame's
    /// newest record against the segment's first, Kafka's rule). The record-time rule keeps a
    /// follower that catches up minutes of entries in seconds from writing them all into one
    /// segment, which retention could then only delete whole, long after the leader deleted
    /// its own.
    fn needs_roll(&self, frame: &FrameHeader, pending: &PendingFrames, now_ms: i64) -> bool {
        let Some(active) = self.segments.last() else {
            return false;
        };
        let size = active.size() + pending.bytes;
        let segment_ms = self.config.segment_ms as i64;
        let by_record_time = frame.kind == EntryKind::Data
            && active
                .first_timestamp()
                .or(pending.first_timestamp)
                .is_some_and(|first| frame.max_timestamp.saturating_sub(first) >= segment_ms);
        size > 0
            && (size + frame.frame_len() as u64 > self.config.segment_bytes
                || now_ms.saturating_sub(active.created_at_ms()) >= segment_ms
                || by_record_time)
    }

    /// Seals the active segment (making it and its indexes durable) and starts a new one.
    fn roll(&mut self, first_index: RaftIndex, base_offset: Offset, now_ms: i64) -> StorageResult<()> {
        if let Some(active) = self.segments.last() {
            active.sync_all()?;
        }
        self.start_segment(first_index, base_offset, now_ms)
    }

    fn start_segment(&mut self, first_index: RaftIndex, base_offset: Offset, now_ms: i64) -> StorageResult<()> {
        let segment = Segment::create(
            &self.dir,
            first_index,
            base_offset,
            now_ms,
            self.config.index_interval_bytes,
            &self.files,
        )?;
        sync_dir(&self.dir)?;
        self.segments.push(segment);
        Ok(())
    }

    /// The active segment's file for the flush worker, which holds it open until its fsync.
    fn active_sync_target(&self) -> StorageResult<SyncTarget> {
        let active = self.segments.last().expect("active segment exists");
        Ok(SyncTarget {
            file: active.file_handle()?,
            path: Arc::new(active.log_path().to_path_buf()),
            failed: Arc::clone(&self.failed),
        })
    }

    /// Removes every entry after `last_kept` (all entries if `None`). Durable on return.
    pub fn truncate_after(&mut self, last_kept: Option<RaftIndex>) -> StorageResult<()> {
        if let (Some(purged), kept) = (self.purged(), last_kept) {
            if kept.is_none_or(|k| k < purged.index) {
                return Err(StorageError::InvalidPosition(format!(
                    "cannot truncate after {kept:?}: entries up to {} are purged",
                    purged.index
                )));
            }
        }
        self.recent.forget_after(last_kept);
        let mut removed_files = false;
        while let Some(active) = self.segments.last() {
            if last_kept.is_some_and(|k| active.first_index() <= k) {
                break;
            }
            active.delete_files()?;
            self.segments.pop();
            removed_files = true;
        }
        if removed_files {
            sync_dir(&self.dir)?;
        }
        if let (Some(kept), Some(active)) = (last_kept, self.segments.last_mut()) {
            if active.last().is_some_and(|h| h.id.index > kept) {
                active.truncate_after(kept)?;
                active.sync_all()?;
            }
        }
        self.acknowledged.lower_to(self.last_entry_id())
    }

    /// Declares every entry up to `last` purged and deletes the segments that hold only purged
    /// entries. If `last` is beyond the end of the log (a snapshot was installed), the log
    /// becomes empty and continues at `last + 1` with offsets from `next_offset_hint` (or the
    /// current log end offset if none is given).
    pub fn purge(&mut self, last: EntryId, next_offset_hint: Option<Offset>) -> StorageResult<()> {
        if self.purged().is_some_and(|p| p.index >= last.index) {
            // Also where a purge that failed after recording its point is retried.
            return self.drop_purged_segments();
        }
        let next_offset = match self.read_entries(last.index, RaftIndex(last.index.0 + 1))?.first() {
            Some(entry) => Offset(entry.base_offset.0 + u64::from(entry.record_count)),
            None => next_offset_hint.unwrap_or_else(|| self.log_end_offset()),
        };
        let mut state = self.state.state().clone();
        state.purged = Some(PurgedPrefix { last, next_offset });
        self.state.store(state)?;
        self.recent.forget_through(last.index);
        self.drop_purged_segments()
    }

    /// Deletes segments all of whose entries are purged (oldest first, so a crash midway leaves
    /// a contiguous log).
    fn drop_purged_segments(&mut self) -> StorageResult<()> {
        let Some(purged) = self.purged() else {
            return Ok(());
        };
        let mut drop_count = 0;
        for (i, segment) in self.segments.iter().enumerate() {
            let segment_end = match self.segments.get(i + 1) {
                Some(next) => Some(RaftIndex(next.first_index().0 - 1)),
                None => segment.last().map(|h| h.id.index),
            };
            if segment_end.is_none_or(|end| end <= purged.index) {
                drop_count = i + 1;
            } else {
                break;
            }
        }
        for segment in self.segments.drain(..drop_count) {
            segment.delete_files()?;
        }
        Ok(())
    }

    /// The stored vote.
    pub fn vote(&self) -> Option<StoredVote> {
        self.state.state().vote
    }

    /// Stores the vote; `on_durable` is called once it is durable (by the flush worker, which
    /// syncs it with other logs' writes), or with the error that prevented it. Read back by
    /// [`vote`](Self::vote) at once.
    pub fn save_vote(&mut self, vote: StoredVote, on_durable: DurableCallback) -> StorageResult<()> {
        let state = PersistedState {
            vote: Some(vote),
            ..self.state.state().clone()
        };
        self.state.store_then(state, &self.flusher, on_durable)
    }

    /// The last entry known to be committed, as of the last durable state write.
    pub fn committed(&self) -> Option<EntryId> {
        self.state.state().committed
    }

    /// Records the committed entry; written with the next durable state write or on close.
    pub fn save_committed(&mut self, committed: Option<EntryId>) {
        self.state.set_committed_lazily(committed);
    }

    /// Where retention would start the log now, if it would delete anything: the last entry of
    /// the newest segment it may delete, and the offset after that entry (the new log start).
    pub fn retention_point(&self, now_ms: i64) -> Option<(EntryId, Offset)> {
        let facts: Vec<SegmentFacts> = self
            .segments
            .iter()
            .map(|s| SegmentFacts {
                size: s.size(),
                max_timestamp: s.max_timestamp(),
            })
            .collect();
        let policy = RetentionPolicy {
            retention_ms: self.config.retention_ms,
            retention_bytes: self.config.retention_bytes,
        };
        match segments_to_delete(&facts, policy, now_ms) {
            0 => None,
            n => {
                let segment = &self.segments[n - 1];
                segment.last().map(|h| (h.id, segment.next_offset()))
            }
        }
    }

    /// Seals the active segment if it holds records and is `segment_ms` old, so that retention
    /// may delete it although nothing more is written (Kafka rolls on the next append only, and
    /// keeps a quiet partition's last segment for ever). The next append starts a new segment.
    /// Whether it rolled.
    pub fn roll_if_aged(&mut self, now_ms: i64) -> StorageResult<bool> {
        let Some(active) = self.segments.last() else {
            return Ok(false);
        };
        let holds_records = active.next_offset() > active.base_offset();
        let aged = now_ms.saturating_sub(active.created_at_ms()) >= self.config.segment_ms as i64;
        if !holds_records || !aged {
            return Ok(false);
        }
        self.seal_active(now_ms)
    }

    /// Seals the active segment if it holds an entry, so that a purge through its last entry
    /// may delete it (a compacting group seals before each snapshot: its log between two
    /// snapshots is far smaller than a segment). The next append starts a new segment.
    /// Whether it sealed.
    pub fn seal_active(&mut self, now_ms: i64) -> StorageResult<bool> {
        let Some(active) = self.segments.last() else {
            return Ok(false);
        };
        let Some(last) = active.last().map(|h| h.id) else {
            return Ok(false);
        };
        let next_offset = active.next_offset();
        self.roll(RaftIndex(last.index.0 + 1), next_offset, now_ms)?;
        Ok(true)
    }

    /// Applies retention now: purges up to [`retention_point`](Self::retention_point). Under
    /// Raft, the replication layer instead replicates the point and purges through a snapshot
    /// (`replication::retention`).
    pub fn enforce_retention(&mut self, now_ms: i64) -> StorageResult<Option<EntryId>> {
        let Some((point, _)) = self.retention_point(now_ms) else {
            return Ok(None);
        };
        self.purge(point, None)?;
        Ok(Some(point))
    }

    /// Makes everything durable, including the lazily kept committed entry.
    pub fn close(&mut self) -> StorageResult<()> {
        // The active segment's data only: its indexes are rebuilt by the scan every open does
        // of the active segment, so writing them here would only cost two more fsyncs per
        // replica on every stop.
        if let Some(active) = self.segments.last() {
            active.sync_data()?;
        }
        self.state.store_if_changed()
    }
}
