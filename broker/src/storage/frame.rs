//! The on-disk frame: how one Raft log entry is laid out in a `.log` segment file. Pure code: it
//! encodes and decodes byte slices and never touches files.
//!
//! ```text
//! offset size field
//!      0    4 length        bytes after this field (52 + body length), little-endian
//!      4    4 crc           CRC-32C of bytes 8 .. 4+length (everything after this field)
//!      8    1 version       = 1
//!      9    1 kind          0 data, 1 blank, 2 membership
//!     10    2 reserved      = 0
//!     12    8 term          } the Raft log id of the entry
//!     20    8 leader_node   }
//!     28    8 raft_index    }
//!     36    8 base_offset   offset of the first record (next offset for non-data entries)
//!     44    4 record_count  0 for non-data entries
//!     48    8 max_timestamp largest record timestamp (ms), -1 for non-data entries
//!     56    … body          a Kafka v2 record batch, a serialized membership, or nothing
//! ```
//!
//! The CRC covers the whole header after itself, so a flipped bit in the log id or offsets is
//! caught as surely as one in the body.

use super::types::{EntryId, EntryKind, Offset, RaftIndex};
use bytes::{Buf, BufMut};

/// Bytes before the body.
pub const FRAME_HEADER_LEN: usize = 56;
/// Upper bound on a frame's body; anything larger in a length field is corruption.
pub const MAX_BODY_LEN: usize = 256 * 1024 * 1024;
const FRAME_VERSION: u8 = 1;
const LENGTH_FIELD_LEN: usize = 4;
const CRC_FIELD_END: usize = 8;

/// The decoded header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The entry's Raft identity.
    pub id: EntryId,
    /// What the body is.
    pub kind: EntryKind,
    /// First offset of the batch (for non-data entries: the log's next offset at that point).
    pub base_offset: Offset,
    /// Records in the batch; 0 for non-data entries.
    pub record_count: u32,
    /// Largest record timestamp, -1 for non-data entries.
    pub max_timestamp: i64,
    /// Body length in bytes.
    pub body_len: usize,
}

impl FrameHeader {
    /// Total bytes the frame occupies on disk.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body_len
    }

    /// The offset after this entry's records.
    pub fn next_offset(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.record_count))
    }
}

/// The result of trying to decode a frame at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameDecode {
    /// A whole, valid frame.
    Complete(FrameHeader),
    /// The slice ends before the frame does: at the tail of a file, this is a torn write.
    Incomplete {
        /// Bytes needed for the whole frame, if the length field could be read.
        needed: Option<usize>,
    },
    /// The bytes are not a valid frame.
    Invalid(&'static str),
}

/// Appends the frame for one entry to `out`.
pub fn encode_frame(out: &mut Vec<u8>, header: &FrameHeader, body: &[u8]) {
    debug_assert_eq!(header.body_len, body.len());
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + body.len());
    out.put_u32_le((FRAME_HEADER_LEN - LENGTH_FIELD_LEN + body.len()) as u32);
    out.put_u32_le(0); // crc, patched below
    out.put_u8(FRAME_VERSION);
    out.put_u8(header.kind as u8);
    out.put_u16_le(0);
    out.put_u64_le(header.id.term);
    out.put_u64_le(header.id.leader_node);
    out.put_u64_le(header.id.index.0);
    out.put_u64_le(header.base_offset.0);
    out.put_u32_le(header.record_count);
    out.put_i64_le(header.max_timestamp);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out[start + CRC_FIELD_END..]);
    out[start + LENGTH_FIELD_LEN..start + CRC_FIELD_END].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the frame at the start of `bytes`, verifying its CRC. The body is
/// `bytes[FRAME_HEADER_LEN..header.frame_len()]`.
pub fn decode_frame(bytes: &[u8]) -> FrameDecode {
    let header = match decode_header_unverified(bytes) {
        Ok(header) => header,
        Err(outcome) => return outcome,
    };
    let end = header.frame_len();
    if bytes.len() < end {
        return FrameDecode::Incomplete { needed: Some(end) };
    }
    let stored_crc = (&bytes[LENGTH_FIELD_LEN..CRC_FIELD_END]).get_u32_le();
    if crc32c::crc32c(&bytes[CRC_FIELD_END..end]) != stored_crc {
        return FrameDecode::Invalid("CRC mismatch");
    }
    FrameDecode::Complete(header)
}

/// Decodes the header fields without checking the CRC (which needs the whole body). Used to
/// learn a frame's length before reading its body.
pub fn decode_header_unverified(bytes: &[u8]) -> Result<FrameHeader, FrameDecode> {
    if bytes.len() < LENGTH_FIELD_LEN {
        return Err(FrameDecode::Incomplete { needed: None });
    }
    let length = (&bytes[..LENGTH_FIELD_LEN]).get_u32_le() as usize;
    if length < FRAME_HEADER_LEN - LENGTH_FIELD_LEN {
        return Err(FrameDecode::Invalid("length shorter than a frame header"));
    }
    let body_len = length - (FRAME_HEADER_LEN - LENGTH_FIELD_LEN);
    if body_len > MAX_BODY_LEN {
        return Err(FrameDecode::Invalid("length beyond the frame size limit"));
    }
    if bytes.len() < FRAME_HEADER_LEN {
        return Err(FrameDecode::Incomplete {
            needed: Some(FRAME_HEADER_LEN + body_len),
        });
    }
    let mut cursor = &bytes[CRC_FIELD_END..FRAME_HEADER_LEN];
    if cursor.get_u8() != FRAME_VERSION {
        return Err(FrameDecode::Invalid("unknown frame version"));
    }
    let Some(kind) = EntryKind::from_byte(cursor.get_u8()) else {
        return Err(FrameDecode::Invalid("unknown entry kind"));
    };
    let _reserved = cursor.get_u16_le();
    let term = cursor.get_u64_le();
    let leader_node = cursor.get_u64_le();
    let index = RaftIndex(cursor.get_u64_le());
    let base_offset = Offset(cursor.get_u64_le());
    let record_count = cursor.get_u32_le();
    let max_timestamp = cursor.get_i64_le();
    if kind != EntryKind::Data && record_count != 0 {
        return Err(FrameDecode::Invalid("non-data entry with records"));
    }
    Ok(FrameHeader {
        id: EntryId {
            term,
            leader_node,
            index,
        },
        kind,
        base_offset,
        record_count,
        max_timestamp,
        body_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(index: u64, body_len: usize) -> FrameHeader {
        FrameHeader {
            id: EntryId {
                term: 3,
                leader_node: 7,
                index: RaftIndex(index),
            },
            kind: EntryKind::Data,
            base_offset: Offset(100),
            record_count: 5,
            max_timestamp: 1_700_000_000_000,
            body_len,
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, &header(9, 3), b"abc");
        assert_eq!(buf.len(), FRAME_HEADER_LEN + 3);
        assert_eq!(decode_frame(&buf), FrameDecode::Complete(header(9, 3)));
        assert_eq!(&buf[FRAME_HEADER_LEN..], b"abc");
    }

    #[test]
    fn every_prefix_is_incomplete_and_every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, &header(1, 20), &[0xab; 20]);
        for cut in 0..buf.len() {
            assert!(
                matches!(decode_frame(&buf[..cut]), FrameDecode::Incomplete { .. }),
                "cut at {cut}"
            );
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut flipped = buf.clone();
                flipped[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode_frame(&flipped), FrameDecode::Complete(h) if h == header(1, 20)),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeroes_are_invalid() {
        assert!(matches!(decode_frame(&[0u8; 64]), FrameDecode::Invalid(_)));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_frame(&bytes);
        }
    }
}
