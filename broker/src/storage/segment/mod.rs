//! One segment of a partition log: the `.log` file of frames and its two sparse indexes.
//!
//! A segment is named by the Raft index of its first entry (`<index:020>.log`), not by its base
//! offset: non-data entries take no offset, so two segments may start at the same offset, while
//! Raft indexes are unique. The segment owns its files; the [`SegmentLog`](super::SegmentLog)
//! owns the segments and decides when to roll, truncate and delete them.
//!
//! Invariants: `size` is the end of the last whole, valid frame; no byte past `size` is ever
//! returned; the in-memory indexes only point at frames below `size`.
//!
//! Files: this one holds the segment itself (create, append, truncate, delete); `read.rs`
//! serves reads (frames from a position, the index lookups); `recovery.rs` opens an existing
//! segment after a restart (scan, verify, rebuild indexes, cut a torn tail). The two extend
//! [`Segment`]'s `impl` from child modules, which see its private fields; nothing outside this
//! folder does.

mod read;
mod recovery;

pub use read::{ReadFrame, Visit};
pub use recovery::{OpenMode, SegmentRecovery};

use super::error::{StorageError, StorageResult};
use super::frame::FrameHeader;
use super::index::{PositionEntry, SparseIndex, TimeEntry};
use super::metrics;
use super::open_files::{BudgetedFile, OpenFiles};
use super::types::{EntryKind, Offset, RaftIndex};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// One `.log` file and its indexes.
#[derive(Debug)]
pub struct Segment {
    first_index: RaftIndex,
    base_offset: Offset,
    /// The `.log` file, open only while the broker's open-file budget keeps it so.
    file: BudgetedFile,
    size: u64,
    last: Option<FrameHeader>,
    next_offset: Offset,
    max_timestamp: i64,
    created_at_ms: i64,
    /// The first data entry's largest record timestamp, once the segment holds one.
    first_timestamp: Option<i64>,
    positions: SparseIndex<PositionEntry>,
    times: SparseIndex<TimeEntry>,
    index_interval: u64,
    bytes_since_position_entry: u64,
    bytes_since_time_entry: u64,
}

/// File stem of the segment starting at `first_index`.
pub fn segment_stem(first_index: RaftIndex) -> String {
    format!("{:020}", first_index.0)
}

/// Parses a `.log` file name back to the segment's first index.
pub fn parse_segment_name(name: &str) -> Option<RaftIndex> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(RaftIndex)
}

impl Segment {
    /// Creates an empty segment whose first entry will be `first_index` at `base_offset`, its
    /// file under the `files` budget. Leftover files of the same name (from a truncated
    /// segment) are replaced.
    pub fn create(
        dir: &Path,
        first_index: RaftIndex,
        base_offset: Offset,
        now_ms: i64,
        index_interval: u32,
        files: &OpenFiles,
    ) -> StorageResult<Segment> {
        let stem = segment_stem(first_index);
        let log_path = dir.join(format!("{stem}.log"));
        for extension in ["index", "timeindex"] {
            let path = dir.join(format!("{stem}.{extension}"));
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(StorageError::io(path, e));
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log_path)
            .map_err(|e| StorageError::io(&log_path, e))?;
        let positions = SparseIndex::empty(&dir.join(format!("{stem}.index")));
        let times = SparseIndex::empty(&dir.join(format!("{stem}.timeindex")));
        Ok(Segment::before_any_frame(
            first_index,
            base_offset,
            files.adopt(log_path, file),
            (positions, times),
            now_ms,
            index_interval,
        ))
    }

    /// A segment over `file` whose state says it holds no frame yet: what [`create`](Self::create)
    /// returns, and what [`open`](Self::open) starts from before recovering the state from the
    /// file.
    fn before_any_frame(
        first_index: RaftIndex,
        base_offset: Offset,
        file: BudgetedFile,
        (positions, times): (SparseIndex<PositionEntry>, SparseIndex<TimeEntry>),
        now_ms: i64,
        index_interval: u32,
    ) -> Segment {
        Segment {
            first_index,
            base_offset,
            file,
            size: 0,
            last: None,
            next_offset: base_offset,
            max_timestamp: -1,
            first_timestamp: None,
            created_at_ms: now_ms,
            positions,
            times,
            index_interval: u64::from(index_interval),
            bytes_since_position_entry: 0,
            bytes_since_time_entry: 0,
        }
    }

    /// Raft index of the first entry (the segment's name).
    pub fn first_index(&self) -> RaftIndex {
        self.first_index
    }

    /// Offset of the first record (or the log's next offset if the segment holds no data yet).
    pub fn base_offset(&self) -> Offset {
        self.base_offset
    }

    /// Offset after the segment's last record.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// Header of the last frame, if the segment holds any.
    pub fn last(&self) -> Option<&FrameHeader> {
        self.last.as_ref()
    }

    /// Bytes of valid frames.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest record timestamp in the segment, -1 if it holds no records.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// When the segment was started (the first record's timestamp, or its creation time).
    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    /// The first data entry's largest record timestamp, if the segment holds data: what
    /// `segment_ms` is measured from once records are in (Kafka's rule), so that replicas
    /// that wrote the same entries at different times still roll at about the same ones.
    pub fn first_timestamp(&self) -> Option<i64> {
        self.first_timestamp
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        self.file.path()
    }

    /// The open `.log` file (reopened if the budget had closed it): held by the flush worker
    /// until its fsync, and for one read or write otherwise.
    pub fn file_handle(&self) -> StorageResult<Arc<File>> {
        self.file.get().map_err(|e| StorageError::io(self.file.path(), e))
    }

    /// The in-memory position index (for tests and diagnostics).
    pub fn position_entries(&self) -> &[PositionEntry] {
        self.positions.entries()
    }

    /// Appends already-encoded frames. `frames` lists the header of each frame in `bytes`, in
    /// order. On a write error the file is cut back to its previous size, so no partial frame
    /// is left behind, and the error is returned.
    pub fn append(&mut self, bytes: &[u8], frames: &[FrameHeader]) -> StorageResult<()> {
        if let Some(injected) = crate::storage::faults::segment_write() {
            return Err(StorageError::io(self.log_path(), injected));
        }
        let file = self.file_handle()?;
        if let Err(error) = file.write_all_at(bytes, self.size) {
            // Roll back a partial write (e.g. ENOSPC half-way) so the tail stays clean.
            let _ = file.set_len(self.size);
            return Err(StorageError::io(self.log_path(), error));
        }
        let mut position = self.size;
        for header in frames {
            self.note_frame(header, position);
            position += header.frame_len() as u64;
        }
        debug_assert_eq!(position, self.size + bytes.len() as u64);
        self.size = position;
        Ok(())
    }

    /// Records a frame written at `position` in the indexes and the running state.
    fn note_frame(&mut self, header: &FrameHeader, position: u64) {
        if self.bytes_since_position_entry >= self.index_interval {
            self.positions.push(PositionEntry {
                raft_index: header.id.index.0,
                offset: header.base_offset.0,
                position: position as u32,
            });
            self.bytes_since_position_entry = 0;
        }
        if header.kind == EntryKind::Data && self.first_timestamp.is_none() {
            self.first_timestamp = Some(header.max_timestamp);
        }
        if header.kind == EntryKind::Data && header.max_timestamp > self.max_timestamp {
            if self.times.last().is_none() || self.bytes_since_time_entry >= self.index_interval {
                self.times.push(TimeEntry {
                    timestamp: header.max_timestamp,
                    offset: header.base_offset.0,
                });
                self.bytes_since_time_entry = 0;
            }
            self.max_timestamp = header.max_timestamp;
        }
        let frame_len = header.frame_len() as u64;
        self.bytes_since_position_entry += frame_len;
        self.bytes_since_time_entry += frame_len;
        self.next_offset = header.next_offset();
        self.last = Some(*header);
    }

    /// Makes the segment's log durable and writes its indexes (on seal and truncation).
    pub fn sync_all(&self) -> StorageResult<()> {
        self.sync_data()?;
        self.persist_indexes()
    }

    /// Makes the segment's log durable (fdatasync).
    pub fn sync_data(&self) -> StorageResult<()> {
        self.file_handle()?
            .sync_data()
            .map_err(|e| StorageError::io(self.log_path(), e))
    }

    /// Writes both index files whole.
    fn persist_indexes(&self) -> StorageResult<()> {
        self.positions.persist()?;
        self.times.persist()
    }

    /// Deletes the segment's files (closing the log file first).
    pub fn delete_files(&self) -> StorageResult<()> {
        self.file.close();
        self.positions.remove_file()?;
        self.times.remove_file()?;
        std::fs::remove_file(self.log_path()).map_err(|e| StorageError::io(self.log_path(), e))
    }

    /// Removes every entry after `last_kept` (which must be in this segment).
    pub fn truncate_after(&mut self, last_kept: RaftIndex) -> StorageResult<()> {
        let kept_frame = self
            .frame_at_index(last_kept)?
            .ok_or_else(|| StorageError::InvalidPosition(format!("{last_kept} is not in segment")))?;
        let (position, header) = kept_frame;
        let new_size = position + header.frame_len() as u64;
        self.file_handle()?
            .set_len(new_size)
            .map_err(|e| StorageError::io(self.log_path(), e))?;
        self.size = new_size;
        self.last = Some(header);
        self.next_offset = header.next_offset();
        let keep_positions = self
            .positions
            .entries()
            .partition_point(|e| e.raft_index <= last_kept.0);
        self.positions.truncate(keep_positions);
        let keep_times = self
            .times
            .entries()
            .partition_point(|e| e.offset <= header.base_offset.0);
        self.times.truncate(keep_times);
        self.bytes_since_position_entry = new_size - self.positions.last().map_or(0, |e| u64::from(e.position));
        // Recompute the exact max timestamp: the last kept time entry covers everything up to
        // its batch; scan what follows it.
        let mut max_timestamp = self.times.last().map_or(-1, |e| e.timestamp);
        let scan_from = self
            .times
            .last()
            .map_or(0, |e| self.position_for_offset(Offset(e.offset)));
        self.visit_frames(scan_from, usize::MAX, |h| {
            if h.kind == EntryKind::Data {
                max_timestamp = max_timestamp.max(h.max_timestamp);
            }
            Visit::Skip
        })?;
        self.max_timestamp = max_timestamp;
        if max_timestamp == -1 {
            // No data frame is left (the first one was never before a later one).
            self.first_timestamp = None;
        }
        self.bytes_since_time_entry = self.index_interval;
        Ok(())
    }

    fn corrupt(&self, position: u64, reason: &str) -> StorageError {
        metrics::corrupt_frame();
        tracing::error!(path = %self.log_path().display(), position, reason, "corrupt frame in partition log");
        StorageError::Corrupt {
            path: self.log_path().to_path_buf(),
            position,
            reason: reason.to_string(),
        }
    }
}
