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

use super::acknowledged::{AcknowledgedMark, MarkOnOpen};
use super::config::{FsyncPolicy, LogConfig};
use super::error::{StorageError, StorageResult};
use super::flush::{DurableCallback, FlushHandle, SyncTarget};
use super::frame::{encode_frame, FrameHeader, MAX_BODY_LEN};
use super::metrics;
use super::retention::{segments_to_delete, RetentionPolicy, SegmentFacts};
use super::segment::{parse_segment_name, OpenMode, ReadFrame, Segment, Visit};
use super::state_file::{sync_dir, PersistedState, PurgedPrefix, StateFile, StoredVote};
use super::types::{EntryId, EntryKind, Offset, RaftIndex};
use bytes::Bytes;
use proto::record_batch::{decode_records, BatchHeader};
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

/// What opening a log found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments opened.
    pub segments: usize,
    /// Bytes of torn tail cut off the active segment.
    pub truncated_bytes: u64,
    /// Bytes cut off the active segment from a corrupt frame that valid frames followed.
    pub corrupt_bytes_cut: u64,
    /// Segments whose index files were rebuilt.
    pub rebuilt_indexes: usize,
    /// Set when the log ends before entries this replica had reported durable (or had known
    /// committed): storage lost acknowledged data. See [`acknowledged`](super::acknowledged).
    pub lost_acknowledged: Option<LostAcknowledged>,
}

/// How much acknowledged data a recovered log is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAcknowledged {
    /// Entries up to this one had been reported durable (or known committed); the log now ends
    /// before it.
    Through(EntryId),
    /// The acknowledged mark itself was damaged, so what was lost is unknown.
    Unknown,
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

/// The log of one partition replica.
pub struct SegmentLog {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    state: StateFile,
    flusher: FlushHandle,
    failed: Arc<AtomicBool>,
    acknowledged: Arc<AcknowledgedMark>,
    /// The newest entries as appended (bodies shared, not copied), always a contiguous run
    /// ending at the last entry: a leader replicates what it just appended from here instead of
    /// reading it back from the page cache. At most [`RECENT_ENTRIES_BYTES`] of bodies.
    recent: std::collections::VecDeque<StoredEntry>,
    recent_bytes: usize,
}

/// Body bytes of the newest entries each log keeps in memory for replication reads.
pub const RECENT_ENTRIES_BYTES: usize = 1024 * 1024;

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash: a torn tail of the active
    /// segment is cut, missing or stale indexes are rebuilt. Corruption anywhere else is
    /// returned as [`StorageError::Corrupt`].
    pub fn open(
        dir: &Path,
        config: LogConfig,
        flusher: FlushHandle,
        now_ms: i64,
    ) -> StorageResult<(SegmentLog, RecoveryReport)> {
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let state = StateFile::load(dir)?;
        let mut first_indexes = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(dir, e))?;
            if let Some(index) = entry.file_name().to_str().and_then(parse_segment_name) {
                first_indexes.push(index);
            }
        }
        first_indexes.sort();
        let mut report = RecoveryReport::default();
        let mut segments: Vec<Segment> = Vec::with_capacity(first_indexes.len());
        let mut next_offset = state.state().purged.map_or(Offset(0), |p| p.next_offset);
        for (position, first_index) in first_indexes.iter().enumerate() {
            let is_active = position + 1 == first_indexes.len();
            let mode = if is_active { OpenMode::ScanAll } else { OpenMode::Sealed };
            let (segment, recovery) = Segment::open(
                dir,
                *first_index,
                next_offset,
                now_ms,
                config.index_interval_bytes,
                mode,
            )?;
            if let Some(previous) = segments.last() {
                let expected = previous.last().map(|h| h.id.index.0 + 1);
                if expected != Some(first_index.0) {
                    return Err(StorageError::Corrupt {
                        path: segment.log_path().to_path_buf(),
                        position: 0,
                        reason: format!(
                            "segment starts at {first_index} but the previous one ends at {:?}",
                            previous.last().map(|h| h.id.index.0)
                        ),
                    });
                }
            }
            report.truncated_bytes += recovery.truncated_bytes;
            report.corrupt_bytes_cut += recovery.corrupt_bytes_cut;
            report.rebuilt_indexes += usize::from(recovery.rebuilt_index);
            next_offset = segment.next_offset();
            segments.push(segment);
        }
        // An empty active segment is what a crash right after a roll (or a torn first frame)
        // leaves; drop it so the log ends with its last entry and the next append starts a
        // segment named after its own index.
        if segments.last().is_some_and(|s| s.last().is_none()) {
            let empty = segments.pop().expect("checked non-empty");
            empty.delete_files()?;
        }
        report.segments = segments.len();
        let (acknowledged, mark) = AcknowledgedMark::open(dir)?;
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            state,
            flusher,
            failed: Arc::new(AtomicBool::new(false)),
            acknowledged: Arc::new(acknowledged),
            recent: std::collections::VecDeque::new(),
            recent_bytes: 0,
        };
        log.drop_purged_segments()?;
        report.lost_acknowledged = log.check_acknowledged(mark);
        if report.corrupt_bytes_cut > 0 && report.lost_acknowledged.is_none() && mark == MarkOnOpen::Absent {
            // Whole entries were lost, and no mark says whether any had been acknowledged.
            report.lost_acknowledged = Some(LostAcknowledged::Unknown);
        }
        Ok((log, report))
    }

    /// Compares the recovered log with what was acknowledged before the restart. If the log
    /// ends before the last committed entry the state file remembers, that entry is clamped to
    /// the log's end, so Raft re-applies only what exists; the replication layer then keeps the
    /// replica out of elections until it has the lost entries back.
    fn check_acknowledged(&mut self, mark: MarkOnOpen) -> Option<LostAcknowledged> {
        let end = self.last_entry_id().map_or(0, |id| id.index.0);
        let committed = self.committed().filter(|c| c.index.0 > end);
        if committed.is_some() {
            self.state.set_committed_lazily(self.last_entry_id());
        }
        let marked = match mark {
            MarkOnOpen::Unreadable => return Some(LostAcknowledged::Unknown),
            MarkOnOpen::Absent => None,
            MarkOnOpen::Entry(id) => Some(id).filter(|id| id.index.0 > end),
        };
        // The later in log order: a mark from an older leader names no entry beyond the commit.
        marked
            .into_iter()
            .chain(committed)
            .max_by_key(|id| (id.term, id.leader_node, id.index))
            .map(LostAcknowledged::Through)
    }

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
        let last = self.segments.last().and_then(|s| s.last()).map(|h| h.id);
        match (last, self.purged()) {
            (Some(last), Some(purged)) if purged.index > last.index => Some(purged),
            (Some(last), _) => Some(last),
            (None, purged) => purged,
        }
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
                EntryKind::Blank | EntryKind::Membership => (0, -1),
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
                self.recent_bytes = 0;
                return Err(error);
            }
        };
        self.remember_recent(appended);

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
        for (header, body) in frames {
            if self.needs_roll(header.frame_len() as u64, now_ms) {
                self.write_to_active(&mut buffer, &mut headers)?;
                self.roll(header.id.index, header.base_offset, now_ms)?;
            }
            if self.segments.is_empty() {
                self.start_segment(header.id.index, header.base_offset, now_ms)?;
            }
            let target = self.active_sync_target();
            if !touched.iter().any(|t| Arc::ptr_eq(&t.file, &target.file)) {
                touched.push(target);
            }
            encode_frame(&mut buffer, &header, &body);
            headers.push(header);
        }
        self.write_to_active(&mut buffer, &mut headers)?;
        Ok(touched)
    }

    fn remember_recent(&mut self, appended: Vec<StoredEntry>) {
        for entry in appended {
            if entry.body.len() > RECENT_ENTRIES_BYTES {
                // Too large to keep: start over after it, so the run stays contiguous.
                self.recent.clear();
                self.recent_bytes = 0;
                continue;
            }
            self.recent_bytes += entry.body.len();
            self.recent.push_back(entry);
            while self.recent_bytes > RECENT_ENTRIES_BYTES {
                let evicted = self.recent.pop_front().expect("bytes counted belong to entries");
                self.recent_bytes -= evicted.body.len();
            }
        }
    }

    fn forget_recent_after(&mut self, last_kept: Option<RaftIndex>) {
        while self
            .recent
            .back()
            .is_some_and(|e| last_kept.is_none_or(|k| e.id.index > k))
        {
            let dropped = self.recent.pop_back().expect("checked");
            self.recent_bytes -= dropped.body.len();
        }
    }

    fn forget_recent_through(&mut self, last: RaftIndex) {
        while self.recent.front().is_some_and(|e| e.id.index <= last) {
            let dropped = self.recent.pop_front().expect("checked");
            self.recent_bytes -= dropped.body.len();
        }
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

    fn needs_roll(&self, frame_len: u64, now_ms: i64) -> bool {
        let Some(active) = self.segments.last() else {
            return false;
        };
        active.size() > 0
            && (active.size() + frame_len > self.config.segment_bytes
                || now_ms.saturating_sub(active.created_at_ms()) >= self.config.segment_ms as i64)
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
        )?;
        sync_dir(&self.dir)?;
        self.segments.push(segment);
        Ok(())
    }

    fn active_sync_target(&self) -> SyncTarget {
        let active = self.segments.last().expect("active segment exists");
        SyncTarget {
            file: active.file_handle(),
            path: Arc::new(active.log_path().to_path_buf()),
            failed: Arc::clone(&self.failed),
        }
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
        self.forget_recent_after(last_kept);
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
            return Ok(());
        }
        let next_offset = match self.read_entries(last.index, RaftIndex(last.index.0 + 1))?.first() {
            Some(entry) => Offset(entry.base_offset.0 + u64::from(entry.record_count)),
            None => next_offset_hint.unwrap_or_else(|| self.log_end_offset()),
        };
        let mut state = self.state.state().clone();
        state.purged = Some(PurgedPrefix { last, next_offset });
        self.state.store(state)?;
        self.forget_recent_through(last.index);
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

    /// Entries with Raft index in `[start, end)`, skipping purged ones.
    pub fn read_entries(&self, start: RaftIndex, end: RaftIndex) -> StorageResult<Vec<StoredEntry>> {
        let start = self.first_index().map_or(start, |first| start.max(first));
        let mut entries = Vec::new();
        if start >= end {
            return Ok(entries);
        }
        if self.recent.front().is_some_and(|first| first.id.index <= start) {
            // The run ends at the last entry, so it holds all of [start, end) that exists.
            let skip = (start.0 - self.recent[0].id.index.0) as usize;
            let take = (end.0 - start.0).min(usize::MAX as u64) as usize;
            return Ok(self.recent.iter().skip(skip).take(take).cloned().collect());
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

    /// The stored vote.
    pub fn vote(&self) -> Option<StoredVote> {
        self.state.state().vote
    }

    /// Stores the vote durably.
    pub fn save_vote(&mut self, vote: StoredVote) -> StorageResult<()> {
        let state = PersistedState {
            vote: Some(vote),
            ..self.state.state().clone()
        };
        self.state.store(state)
    }

    /// The last entry known to be committed, as of the last durable state write.
    pub fn committed(&self) -> Option<EntryId> {
        self.state.state().committed
    }

    /// Records the committed entry; written with the next durable state write or on close.
    pub fn save_committed(&mut self, committed: Option<EntryId>) {
        self.state.set_committed_lazily(committed);
    }

    /// The entry up to which retention would delete segments now, if any.
    pub fn retention_point(&self, now_ms: i64) -> Option<EntryId> {
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
            n => self.segments[n - 1].last().map(|h| h.id),
        }
    }

    /// Applies retention now: purges up to [`retention_point`](Self::retention_point). Under
    /// Raft, the replication layer instead drives the purge through a snapshot.
    pub fn enforce_retention(&mut self, now_ms: i64) -> StorageResult<Option<EntryId>> {
        let Some(point) = self.retention_point(now_ms) else {
            return Ok(None);
        };
        self.purge(point, None)?;
        Ok(Some(point))
    }

    /// Makes everything durable, including the lazily kept committed entry.
    pub fn close(&mut self) -> StorageResult<()> {
        if let Some(active) = self.segments.last() {
            active.sync_all()?;
        }
        let state = self.state.state().clone();
        self.state.store(state)
    }
}
