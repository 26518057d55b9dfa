//! Reading a segment: frames from a byte position on, CRC-checked, chosen header by header
//! (the caller's [`Visit`]); and the sparse-index lookups that say where a scan for a Raft
//! index, an offset or a timestamp should start.

use super::Segment;
use crate::storage::error::{StorageError, StorageResult};
use crate::storage::frame::{decode_frame, FrameDecode, FrameHeader, FRAME_HEADER_LEN};
use crate::storage::types::{Offset, RaftIndex};
use bytes::Bytes;

/// Bounds of one `pread` when serving reads: a read sized to the caller's byte budget, but
/// never so small that every frame costs a syscall nor so large that an unbounded read
/// (`usize::MAX`) pulls a whole segment into memory. A frame larger than the chunk is read
/// on its own.
const MIN_READ_CHUNK: usize = 64 * 1024;
const MAX_READ_CHUNK: usize = 1024 * 1024;

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

impl Segment {
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
    pub(super) fn visit_frames(
        &self,
        position: u64,
        max_bytes: usize,
        visit: impl FnMut(&FrameHeader) -> Visit,
    ) -> StorageResult<()> {
        self.read_frames(position, max_bytes, visit).map(|_| ())
    }

    /// Position and header of the frame holding Raft entry `index`.
    pub(super) fn frame_at_index(&self, index: RaftIndex) -> StorageResult<Option<(u64, FrameHeader)>> {
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

    /// `len` bytes from `position`, read into a buffer that is not zeroed first (a fetch
    /// reads megabytes per call; zeroing them cost as much as a tenth of a broker's CPU while
    /// serving consumers).
    pub(super) fn read_at(&self, position: u64, len: usize) -> StorageResult<Bytes> {
        let file = self.file_handle()?;
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = position + buf.len() as u64;
            match rustix::io::pread(&*file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => {
                    return Err(StorageError::io(
                        self.log_path(),
                        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "segment shorter than its size"),
                    ))
                }
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(StorageError::io(self.log_path(), e.into())),
            }
        }
        // The capacity may exceed `len`, and a read may have filled it.
        buf.truncate(len);
        Ok(Bytes::from(buf))
    }
}
