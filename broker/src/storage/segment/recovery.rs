//! Opening an existing segment after a restart: verify its frames (all of them for the active
//! segment, only those past the last index entry for a sealed one), rebuild indexes that are
//! missing or stale, and cut a torn tail — or, in the active segment, a corrupt frame and all
//! that follows it. Corruption a sealed segment cannot explain is an error.

use super::{segment_stem, Segment, Visit};
use crate::storage::error::{StorageError, StorageResult};
use crate::storage::frame::{decode_frame, decode_header_unverified, FrameDecode, FrameHeader, FRAME_HEADER_LEN};
use crate::storage::index::{IndexLoad, SparseIndex};
use crate::storage::metrics;
use crate::storage::open_files::OpenFiles;
use crate::storage::types::{EntryKind, Offset, RaftIndex};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes read per `pread` when scanning (recovery, resync).
const READ_CHUNK: usize = 1024 * 1024;
/// How far past a bad frame recovery looks for a later valid entry (in Raft indexes) before
/// deciding the bad frame was a torn tail.
const RESYNC_INDEX_WINDOW: u64 = 1 << 32;

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

impl Segment {
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
        files: &OpenFiles,
    ) -> StorageResult<(Segment, SegmentRecovery)> {
        let stem = segment_stem(first_index);
        let log_path = dir.join(format!("{stem}.log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| StorageError::io(&log_path, e))?;
        let file_len = file.metadata().map_err(|e| StorageError::io(&log_path, e))?.len();
        let (positions, positions_load) = SparseIndex::load(&dir.join(format!("{stem}.index")))?;
        let (times, times_load) = SparseIndex::load(&dir.join(format!("{stem}.timeindex")))?;
        let mut segment = Segment::before_any_frame(
            first_index,
            base_offset,
            files.adopt(log_path, file),
            (positions, times),
            now_ms,
            index_interval,
        );
        segment.size = file_len;
        let indexes_intact = positions_load == IndexLoad::Intact
            && times_load == IndexLoad::Intact
            && segment.indexes_match_log(file_len)?;
        let recovery = if mode == OpenMode::Sealed && indexes_intact {
            segment.recover_tail_after_index(file_len)?;
            SegmentRecovery::default()
        } else {
            segment.recover_by_full_scan(file_len, mode)?
        };
        if mode == OpenMode::Sealed && !indexes_intact {
            // Written back so the next start trusts them; the active segment's indexes live
            // in memory until it is sealed.
            segment.persist_indexes()?;
        }
        match segment.first_frame() {
            Ok(Some(first)) => {
                if first.id.index != first_index {
                    return Err(segment.corrupt(0, "first frame does not match the segment name"));
                }
                segment.base_offset = first.base_offset;
                if first.kind == EntryKind::Data {
                    segment.created_at_ms = first.max_timestamp;
                    segment.first_timestamp = Some(first.max_timestamp);
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

    fn first_frame(&self) -> StorageResult<Option<FrameHeader>> {
        let mut first = None;
        self.visit_frames(0, 0, |h| {
            first = Some(*h);
            Visit::Stop
        })?;
        Ok(first)
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
        self.positions.replace(Vec::new());
        self.times.replace(Vec::new());
        self.size = 0;
        self.last = None;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.first_timestamp = None;
        self.bytes_since_position_entry = 0;
        self.bytes_since_time_entry = 0;
        let file = self.file_handle()?;
        let mut scanner = Scanner::new(&file, file_len);
        let mut recovery = SegmentRecovery::default();
        loop {
            let log_path = self.log_path().to_path_buf();
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
                    self.note_frame(&header, position);
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
                        path = %self.log_path().display(),
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
        // The active segment's index is rebuilt by every open (its file is written only when it
        // is sealed): only a sealed segment's counts as a repair.
        recovery.rebuilt_index = mode == OpenMode::Sealed
            && (self.positions.entries() != old_positions || self.times.entries() != old_times);
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
            path = %self.log_path().display(),
            position,
            cut = file_len - position,
            reason,
            "corrupt frame in the active segment: cutting it and everything after it"
        );
        self.cut_at(position, file_len)
    }

    /// Cuts the file at `position`, durably; returns the bytes cut.
    fn cut_at(&mut self, position: u64, file_len: u64) -> StorageResult<u64> {
        let file = self.file_handle()?;
        file.set_len(position)
            .map_err(|e| StorageError::io(self.log_path(), e))?;
        file.sync_data().map_err(|e| StorageError::io(self.log_path(), e))?;
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
