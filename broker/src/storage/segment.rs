//! One segment of a partition log: the `.log` file of frames and its two sparse indexes.
//!
//! A segment is named by the Raft index of its first entry (`<index:020>.log`), not by its base
//! offset: non-data entries take no offset, so two segments may start at the same offset, while
//! Raft indexes are unique. The segment owns its files; the [`SegmentLog`](super::SegmentLog)
//! owns the segments and decides when to roll, truncate and delete them.
//!
//! Invariants: `size` is the end of the last whole, valid frame; no byte past `size` is ever
//! returned; the in-memory indexes only point at frames below `size`.

use super::error::{StorageError, StorageResult};
use super::frame::{decode_frame, decode_header_unverified, FrameDecode, FrameHeader, FRAME_HEADER_LEN};
use super::index::{IndexLoad, PositionEntry, SparseIndex, TimeEntry};
use super::metrics;
use super::types::{EntryKind, Offset, RaftIndex};
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes read per `pread` when scanning (recovery, resync).
const READ_CHUNK: usize = 1024 * 1024;
/// Bounds of one `pread` when serving reads: a read sized to the caller's byte budget, but
/// never so small that every frame costs a syscall nor so large that an unbounded read
/// (`usize::MAX`) pulls a whole segment into memory. A frame larger than the chunk is read
/// on its own.
const MIN_READ_CHUNK: usize = 64 * 1024;
const MAX_READ_CHUNK: usize = 8 * 1024 * 1024;
/// How far past a bad frame recovery looks for a later valid entry (in Raft indexes) before
/// deciding the bad frame was a torn tail.
const RESYNC_INDEX_WINDOW: u64 = 1 << 32;

/// A frame read back from a segment: its header and body.
#[derive(Debug, Clone)]
pub struct ReadFrame {
    /// The decoded, CRC-checked header.
    pub header: FrameHeader,
    /// The body bytes (a slice of the read buffer).
    pub body: Bytes,
}

/// What a reader wants done with the next frame.
pub enum Visit {
    /// Ignore it and go on.
    Skip,
    /// Return it and go on.
    Take,
    /// Stop before it.
    Stop,
}

/// What opening a segment found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SegmentRecovery {
    /// Bytes cut from the end of the file (a torn or partial write).
    pub truncated_bytes: u64,
    /// Bytes cut from a corrupt frame in the middle of the active segment to its end (valid
    /// frames followed it: data that had been written whole was lost).
    pub corrupt_bytes_cut: u64,
    /// Whether an index file was missing or stale and was rebuilt.
    pub rebuilt_index: bool,
}

/// How to open a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The active segment: verify every frame, cut a torn tail — or a corrupt frame and all
    /// that follows it — and rebuild indexes from the scan.
    ScanAll,
    /// A sealed segment (fsynced when it was sealed): trust intact indexes and verify only the
    /// frames after the last index entry; a bad frame anywhere is corruption.
    Sealed,
}

/// One `.log` file and its indexes.
#[derive(Debug)]
pub struct Segment {
    first_index: RaftIndex,
    base_offset: Offset,
    log_path: PathBuf,
    file: Arc<File>,
    size: u64,
    last: Option<FrameHeader>,
    next_offset: Offset,
    max_timestamp: i64,
    created_at_ms: i64,
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
    /// Creates an empty segment whose first entry will be `first_index` at `base_offset`.
    /// Leftover files of the same name (from a truncated segment) are replaced.
    pub fn create(
        dir: &Path,
        first_index: RaftIndex,
        base_offset: Offset,
        now_ms: i64,
        index_interval: u32,
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
        let (positions, _) = SparseIndex::open(&dir.join(format!("{stem}.index")))?;
        let (times, _) = SparseIndex::open(&dir.join(format!("{stem}.timeindex")))?;
        Ok(Segment {
            first_index,
            base_offset,
            log_path,
            file: Arc::new(file),
            size: 0,
            last: None,
            next_offset: base_offset,
            max_timestamp: -1,
            created_at_ms: now_ms,
            positions,
            times,
            index_interval: u64::from(index_interval),
            bytes_since_position_entry: 0,
            bytes_since_time_entry: 0,
        })
    }

    /// Opens an existing segment, validating it per `mode`. `base_offset` is the offset the log
    /// expects the segment to start at (the previous segment's end); it is used only when the
    /// segment holds no frame.
    pub fn open(
        dir: &Path,
        first_index: RaftIndex,
        base_offset: Offset,
        now_ms: i64,
        index_interval: u32,
        mode: OpenMode,
    ) -> StorageResult<(Segment, SegmentRecovery)> {
        let stem = segment_stem(first_index);
        let log_path = dir.join(format!("{stem}.log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| StorageError::io(&log_path, e))?;
        let file_len = file.metadata().map_err(|e| StorageError::io(&log_path, e))?.len();
        let (positions, positions_load) = SparseIndex::open(&dir.join(format!("{stem}.index")))?;
        let (times, times_load) = SparseIndex::open(&dir.join(format!("{stem}.timeindex")))?;
        let mut segment = Segment {
            first_index,
            base_offset,
            log_path,
            file: Arc::new(file),
            size: file_len,
            last: None,
            next_offset: base_offset,
            max_timestamp: -1,
            created_at_ms: now_ms,
            positions,
            times,
            index_interval: u64::from(index_interval),
            bytes_since_position_entry: 0,
            bytes_since_time_entry: 0,
        };
        let indexes_intact = positions_load == IndexLoad::Intact
            && times_load == IndexLoad::Intact
            && segment.indexes_match_log(file_len)?;
        let recovery = if mode == OpenMode::Sealed && indexes_intact {
            segment.recover_tail_after_index(file_len)?;
            SegmentRecovery::default()
        } else {
            segment.recover_by_full_scan(file_len, mode)?
        };
        match segment.first_frame() {
            Ok(Some(first)) => {
                if first.id.index != first_index {
                    return Err(segment.corrupt(0, "first frame does not match the segment name"));
                }
                segment.base_offset = first.base_offset;
                if first.kind == EntryKind::Data {
                    segment.created_at_ms = first.max_timestamp;
                }
            }
            Ok(None) => {}
            // A sealed segment is not fully verified on open; its bad frame stays unreadable
            // (reads report it) and the offsets chained from the previous segment stand.
            Err(StorageError::Corrupt { .. }) if mode == OpenMode::Sealed => {}
            Err(other) => return Err(other),
        }
        Ok((segment, recovery))
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

    /// Path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// A shared handle on the `.log` file, for the flush worker.
    pub fn file_handle(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// The in-memory position index (for tests and diagnostics).
    pub fn position_entries(&self) -> &[PositionEntry] {
        self.positions.entries()
    }

    /// Appends already-encoded frames. `frames` lists the header of each frame in `bytes`, in
    /// order. On a write error the file is cut back to its previous size, so no partial frame
    /// is left behind, and the error is returned.
    pub fn append(&mut self, bytes: &[u8], frames: &[FrameHeader]) -> StorageResult<()> {
        if let Err(error) = self.file.write_all_at(bytes, self.size) {
            // Roll back a partial write (e.g. ENOSPC half-way) so the tail stays clean.
            let _ = self.file.set_len(self.size);
            return Err(StorageError::io(&self.log_path, error));
        }
        let mut position = self.size;
        for header in frames {
            self.note_frame(header, position)?;
            position += header.frame_len() as u64;
        }
        debug_assert_eq!(position, self.size + bytes.len() as u64);
        self.size = position;
        Ok(())
    }

    /// Records a frame written at `position` in the indexes and the running state.
    fn note_frame(&mut self, header: &FrameHeader, position: u64) -> StorageResult<()> {
        if self.bytes_since_position_entry >= self.index_interval {
            self.positions.push(PositionEntry {
                raft_index: header.id.index.0,
                offset: header.base_offset.0,
                position: position as u32,
            })?;
            self.bytes_since_position_entry = 0;
        }
        if header.kind == EntryKind::Data && header.max_timestamp > self.max_timestamp {
            if self.times.last().is_none() || self.bytes_since_time_entry >= self.index_interval {
                self.times.push(TimeEntry {
                    timestamp: header.max_timestamp,
                    offset: header.base_offset.0,
                })?;
                self.bytes_since_time_entry = 0;
            }
            self.max_timestamp = header.max_timestamp;
        }
        let frame_len = header.frame_len() as u64;
        self.bytes_since_position_entry += frame_len;
        self.bytes_since_time_entry += frame_len;
        self.next_offset = header.next_offset();
        self.last = Some(*header);
        Ok(())
    }

    /// Makes the segment's log and indexes durable (on seal and close).
    pub fn sync_all(&self) -> StorageResult<()> {
        self.file.sync_data().map_err(|e| StorageError::io(&self.log_path, e))?;
        self.positions.sync()?;
        self.times.sync()
    }

    /// Deletes the segment's files.
    pub fn delete_files(&self) -> StorageResult<()> {
        self.positions.remove_file()?;
        self.times.remove_file()?;
        std::fs::remove_file(&self.log_path).map_err(|e| StorageError::io(&self.log_path, e))
    }

    /// Removes every entry after `last_kept` (which must be in this segment).
    pub fn truncate_after(&mut self, last_kept: RaftIndex) -> StorageResult<()> {
        let kept_frame = self
            .frame_at_index(last_kept)?
            .ok_or_else(|| StorageError::InvalidPosition(format!("{last_kept} is not in segment")))?;
        let (position, header) = kept_frame;
        let new_size = position + header.frame_len() as u64;
        self.file
            .set_len(new_size)
            .map_err(|e| StorageError::io(&self.log_path, e))?;
        self.size = new_size;
        self.last = Some(header);
        self.next_offset = header.next_offset();
        let keep_positions = self
            .positions
            .entries()
            .partition_point(|e| e.raft_index <= last_kept.0);
        self.positions.truncate(keep_positions)?;
        let keep_times = self
            .times
            .entries()
            .partition_point(|e| e.offset <= header.base_offset.0);
        self.times.truncate(keep_times)?;
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
        self.bytes_since_time_entry = self.index_interval;
        Ok(())
    }

    /// Byte position from which a scan reaches Raft entry `index` soonest.
    pub fn position_for_index(&self, index: RaftIndex) -> u64 {
        let entries = self.positions.entries();
        match entries.partition_point(|e| e.raft_index <= index.0) {
            0 => 0,
            n => u64::from(entries[n - 1].position),
        }
    }

    /// Byte position from which a scan reaches the batch holding `offset` soonest.
    pub fn position_for_offset(&self, offset: Offset) -> u64 {
        let entries = self.positions.entries();
        match entries.partition_point(|e| e.offset <= offset.0) {
            0 => 0,
            // The batch holding `offset` starts at or before it, and only non-data frames
            // (which precede it) can share its base offset, so the last entry at or below
            // `offset` never lies past that batch.
            n => u64::from(entries[n - 1].position),
        }
    }

    /// Byte position from which a scan finds the first batch with a timestamp ≥ `timestamp`.
    pub fn position_for_timestamp(&self, timestamp: i64) -> u64 {
        let entries = self.times.entries();
        match entries.partition_point(|e| e.timestamp < timestamp) {
            0 => 0,
            n => self.position_for_offset(Offset(entries[n - 1].offset)),
        }
    }

    /// Reads frames from `position` on, deciding per header with `visit`, until `max_bytes` of
    /// taken frames (at least one), a `Stop`, or the end of the segment.
    pub fn read_frames(
        &self,
        position: u64,
        max_bytes: usize,
        mut visit: impl FnMut(&FrameHeader) -> Visit,
    ) -> StorageResult<Vec<ReadFrame>> {
        let chunk_len = max_bytes
            .saturating_add(FRAME_HEADER_LEN)
            .clamp(MIN_READ_CHUNK, MAX_READ_CHUNK);
        let mut taken = Vec::new();
        let mut taken_bytes = 0usize;
        let mut position = position;
        let mut next_read = chunk_len;
        while position < self.size {
            let chunk = self.read_at(position, (self.size - position).min(next_read as u64) as usize)?;
            next_read = chunk_len;
            let chunk_end = position + chunk.len() as u64;
            let mut cursor = 0usize;
            while cursor < chunk.len() {
                let header = match decode_frame(&chunk[cursor..]) {
                    FrameDecode::Complete(header) => header,
                    FrameDecode::Incomplete { needed } => {
                        let frame_end = needed.map(|n| position + (cursor + n) as u64);
                        if chunk_end >= self.size || frame_end.is_some_and(|end| end > self.size) {
                            return Err(
                                self.corrupt(position + cursor as u64, "frame runs past the end of the segment")
                            );
                        }
                        if cursor == 0 {
                            // A frame larger than the chunk: read exactly it next.
                            next_read = needed.unwrap_or(chunk_len).max(chunk_len);
                        }
                        break;
                    }
                    FrameDecode::Invalid(reason) => return Err(self.corrupt(position + cursor as u64, reason)),
                };
                let frame_len = header.frame_len();
                match visit(&header) {
                    Visit::Stop => return Ok(taken),
                    Visit::Skip => {}
                    Visit::Take => {
                        if !taken.is_empty() && taken_bytes + frame_len > max_bytes {
                            return Ok(taken);
                        }
                        taken_bytes += frame_len;
                        taken.push(ReadFrame {
                            header,
                            body: chunk.slice(cursor + FRAME_HEADER_LEN..cursor + frame_len),
                        });
                        if taken_bytes >= max_bytes {
                            return Ok(taken);
                        }
                    }
                }
                cursor += frame_len;
            }
            position += cursor as u64;
        }
        Ok(taken)
    }

    /// Walks frame headers from `position` (verifying CRCs) without keeping bodies.
    fn visit_frames(
        &self,
        position: u64,
        max_bytes: usize,
        visit: impl FnMut(&FrameHeader) -> Visit,
    ) -> StorageResult<()> {
        self.read_frames(position, max_bytes, visit).map(|_| ())
    }

    /// Position and header of the frame holding Raft entry `index`.
    fn frame_at_index(&self, index: RaftIndex) -> StorageResult<Option<(u64, FrameHeader)>> {
        let mut position = self.position_for_index(index);
        let mut found = None;
        self.visit_frames(position, usize::MAX, |h| {
            if h.id.index == index {
                found = Some((position, *h));
                return Visit::Stop;
            }
            if h.id.index > index {
                return Visit::Stop;
            }
            position += h.frame_len() as u64;
            Visit::Skip
        })?;
        Ok(found)
    }

    fn first_frame(&self) -> StorageResult<Option<FrameHeader>> {
        let mut first = None;
        self.visit_frames(0, 0, |h| {
            first = Some(*h);
            Visit::Stop
        })?;
        Ok(first)
    }

    fn read_at(&self, position: u64, len: usize) -> StorageResult<Bytes> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(|e| StorageError::io(&self.log_path, e))?;
        Ok(Bytes::from(buf))
    }

    fn corrupt(&self, position: u64, reason: &str) -> StorageError {
        metrics::corrupt_frame();
        tracing::error!(path = %self.log_path.display(), position, reason, "corrupt frame in partition log");
        StorageError::Corrupt {
            path: self.log_path.clone(),
            position,
            reason: reason.to_string(),
        }
    }

    /// Whether the loaded indexes point at real frames of this file.
    fn indexes_match_log(&self, file_len: u64) -> StorageResult<bool> {
        let Some(last) = self.positions.last() else {
            return Ok(true);
        };
        if u64::from(last.position) + FRAME_HEADER_LEN as u64 > file_len {
            return Ok(false);
        }
        let header = self.read_at(u64::from(last.position), FRAME_HEADER_LEN)?;
        Ok(matches!(decode_header_unverified(&header),
            Ok(h) if h.id.index.0 == last.raft_index && h.base_offset.0 == last.offset))
    }

    /// Sealed segment with intact indexes: verify the frames after the last index entry to
    /// learn the segment's end state.
    fn recover_tail_after_index(&mut self, file_len: u64) -> StorageResult<()> {
        let start = self.positions.last().map_or(0, |e| u64::from(e.position));
        self.size = file_len;
        let mut last = None;
        let mut max_timestamp = self.times.last().map_or(-1, |e| e.timestamp);
        // One scan covers both what the last time-index entry does not summarise and the
        // frames after the last position-index entry (whose last frame ends the segment).
        let times_from = self
            .times
            .last()
            .map_or(0, |e| self.position_for_offset(Offset(e.offset)));
        self.visit_frames(times_from.min(start), usize::MAX, |h| {
            if h.kind == EntryKind::Data {
                max_timestamp = max_timestamp.max(h.max_timestamp);
            }
            last = Some(*h);
            Visit::Skip
        })?;
        self.max_timestamp = max_timestamp;
        if let Some(header) = last {
            self.next_offset = header.next_offset();
            self.last = Some(header);
        }
        self.bytes_since_position_entry = file_len - start;
        self.bytes_since_time_entry = self.index_interval;
        Ok(())
    }

    /// Verifies every frame, rebuilding both indexes. In `ScanAll` mode a bad frame with no
    /// valid later entry is a torn tail and is cut off; otherwise it is corruption.
    fn recover_by_full_scan(&mut self, file_len: u64, mode: OpenMode) -> StorageResult<SegmentRecovery> {
        let old_positions = self.positions.entries().to_vec();
        let old_times = self.times.entries().to_vec();
        self.positions.replace(Vec::new())?;
        self.times.replace(Vec::new())?;
        self.size = 0;
        self.last = None;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.bytes_since_position_entry = 0;
        self.bytes_since_time_entry = 0;
        let file = Arc::clone(&self.file);
        let mut scanner = Scanner::new(&file, file_len);
        let mut recovery = SegmentRecovery::default();
        loop {
            let log_path = self.log_path.clone();
            match scanner.next(&log_path)? {
                ScanStep::End => break,
                ScanStep::Frame(header, position) => {
                    let expected = self.last.map_or(self.first_index.0, |h| h.id.index.0 + 1);
                    if header.id.index.0 != expected {
                        if mode == OpenMode::Sealed {
                            return Err(self.corrupt(position, "frame out of sequence"));
                        }
                        recovery.corrupt_bytes_cut =
                            self.cut_corrupt_rest(position, file_len, "frame out of sequence")?;
                        break;
                    }
                    self.note_frame(&header, position)?;
                    self.size = position + header.frame_len() as u64;
                }
                ScanStep::Bad(position, reason) => {
                    let last_index = self.last.map_or(self.first_index.0.saturating_sub(1), |h| h.id.index.0);
                    if mode == OpenMode::Sealed {
                        return Err(self.corrupt(position, reason));
                    }
                    if self.valid_frame_after(position, last_index, file_len)? {
                        recovery.corrupt_bytes_cut = self.cut_corrupt_rest(position, file_len, reason)?;
                        break;
                    }
                    metrics::torn_tail_truncated();
                    tracing::warn!(
                        path = %self.log_path.display(),
                        position,
                        cut = file_len - position,
                        reason,
                        "cutting torn tail of partition log"
                    );
                    recovery.truncated_bytes = self.cut_at(position, file_len)?;
                    break;
                }
            }
        }
        recovery.rebuilt_index = self.positions.entries() != old_positions || self.times.entries() != old_times;
        if recovery.rebuilt_index {
            metrics::index_rebuilt();
        }
        Ok(recovery)
    }

    /// Cuts the active segment at a corrupt frame that valid frames follow: the entries from it
    /// on are gone either way (no later entry can be used without it), and the replica gets them
    /// back from its peers — the log reports the loss so the replica stays out of elections
    /// until then. Returns the bytes cut.
    fn cut_corrupt_rest(&mut self, position: u64, file_len: u64, reason: &str) -> StorageResult<u64> {
        metrics::corrupt_frame();
        tracing::error!(
            path = %self.log_path.display(),
            position,
            cut = file_len - position,
            reason,
            "corrupt frame in the active segment: cutting it and everything after it"
        );
        self.cut_at(position, file_len)
    }

    /// Cuts the file at `position`, durably; returns the bytes cut.
    fn cut_at(&mut self, position: u64, file_len: u64) -> StorageResult<u64> {
        self.file
            .set_len(position)
            .map_err(|e| StorageError::io(&self.log_path, e))?;
        self.file.sync_data().map_err(|e| StorageError::io(&self.log_path, e))?;
        Ok(file_len - position)
    }

    /// Whether any valid frame of a later entry starts after `bad_position`: if so the bad
    /// frame is corruption in the middle of the log, not a torn tail.
    fn valid_frame_after(&self, bad_position: u64, last_index: u64, file_len: u64) -> StorageResult<bool> {
        let mut chunk_start = bad_position + 1;
        while chunk_start + (FRAME_HEADER_LEN as u64) <= file_len {
            let len = (file_len - chunk_start).min(READ_CHUNK as u64 * 16) as usize;
            let chunk = self.read_at(chunk_start, len)?;
            for at in 0..chunk.len().saturating_sub(FRAME_HEADER_LEN - 1) {
                let Ok(header) = decode_header_unverified(&chunk[at..]) else {
                    continue;
                };
                let index = header.id.index.0;
                if index <= last_index || index > last_index.saturating_add(RESYNC_INDEX_WINDOW) {
                    continue;
                }
                let start = chunk_start + at as u64;
                if start + header.frame_len() as u64 > file_len {
                    continue;
                }
                let whole = self.read_at(start, header.frame_len())?;
                if matches!(decode_frame(&whole), FrameDecode::Complete(_)) {
                    return Ok(true);
                }
            }
            chunk_start += (len - (FRAME_HEADER_LEN - 1)) as u64;
        }
        Ok(false)
    }
}

enum ScanStep {
    Frame(FrameHeader, u64),
    Bad(u64, &'static str),
    End,
}

/// Sequential, buffered, CRC-checking walk over a segment file.
struct Scanner<'a> {
    file: &'a File,
    file_len: u64,
    buf: Vec<u8>,
    buf_start: u64,
    position: u64,
}

impl<'a> Scanner<'a> {
    fn new(file: &'a File, file_len: u64) -> Self {
        Scanner {
            file,
            file_len,
            buf: Vec::new(),
            buf_start: 0,
            position: 0,
        }
    }

    /// Makes `buf` hold `[position, position + len)`, or as much of it as the file has.
    fn fill(&mut self, len: usize, path: &Path) -> StorageResult<&[u8]> {
        let end = (self.position + len as u64).min(self.file_len);
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.position < self.buf_start || end > buf_end {
            let want = ((self.file_len - self.position) as usize).min(len.max(READ_CHUNK * 4));
            self.buf.resize(want, 0);
            self.file
                .read_exact_at(&mut self.buf, self.position)
                .map_err(|e| StorageError::io(path, e))?;
            self.buf_start = self.position;
        }
        let from = (self.position - self.buf_start) as usize;
        let to = (end - self.buf_start) as usize;
        Ok(&self.buf[from..to])
    }

    fn next(&mut self, path: &Path) -> StorageResult<ScanStep> {
        if self.position >= self.file_len {
            return Ok(ScanStep::End);
        }
        let position = self.position;
        let header_bytes = self.fill(FRAME_HEADER_LEN, path)?;
        let header = match decode_header_unverified(header_bytes) {
            Ok(header) => header,
            Err(FrameDecode::Invalid(reason)) => return Ok(ScanStep::Bad(position, reason)),
            Err(_) => return Ok(ScanStep::Bad(position, "partial frame header")),
        };
        let frame = self.fill(header.frame_len(), path)?;
        match decode_frame(frame) {
            FrameDecode::Complete(header) => {
                self.position += header.frame_len() as u64;
                Ok(ScanStep::Frame(header, position))
            }
            FrameDecode::Incomplete { .. } => Ok(ScanStep::Bad(position, "partial frame")),
            FrameDecode::Invalid(reason) => Ok(ScanStep::Bad(position, reason)),
        }
    }
}
