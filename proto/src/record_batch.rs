//! The Kafka v2 `RecordBatch` layout: building, validating and decoding batches.
//!
//! A batch is a 61-byte header followed by `record_count` records. All integers in the header
//! are big-endian; record fields are zig-zag varints, as in Kafka. The header CRC (CRC-32C)
//! covers everything from `attributes` to the end, so the broker may fill in `base_offset` and
//! `partition_leader_epoch` without re-computing it.
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset
//!      8     4  batch_length            (bytes after this field)
//!     12     4  partition_leader_epoch
//!     16     1  magic                   (= 2)
//!     17     4  crc                     (CRC-32C of bytes 21..)
//!     21     2  attributes              (bits 0-2: compression)
//!     23     4  last_offset_delta
//!     27     8  base_timestamp
//!     35     8  max_timestamp
//!     43     8  producer_id             (-1: none)
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  record_count
//!     61     …  records
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::io::{Read, Write};

/// Size of the fixed batch header, in bytes.
pub const BATCH_HEADER_LEN: usize = 61;
/// The only batch format version this crate reads and writes.
pub const MAGIC_V2: i8 = 2;
/// `producer_id` of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;

const BATCH_LENGTH_AT: usize = 8;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const PRODUCER_ID_AT: usize = 43;
const COMPRESSION_MASK: i16 = 0x07;
/// Largest records section a compressed batch may expand to: a guard against decompression
/// bombs (a batch is at most 64 MiB on the wire; honest data rarely compresses 4×).
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

/// How a batch's records section is compressed (Kafka's codec ids in the attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// LZ4 frame format (codec 3).
    Lz4,
    /// Zstandard (codec 4).
    Zstd,
}

impl Compression {
    /// Kafka's codec id.
    pub fn codec(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec named `name` as in Kafka's `compression.type` (`none`, `lz4`, `zstd`).
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "none" => Some(Compression::None),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Why a byte string is not a valid v2 record batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than the fixed header.
    #[error("record batch is {len} bytes, shorter than the {BATCH_HEADER_LEN}-byte header")]
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The magic byte is not 2.
    #[error("record batch magic is {magic}, only magic 2 is supported")]
    UnsupportedMagic {
        /// Magic byte found.
        magic: i8,
    },
    /// `batch_length` does not match the bytes given.
    #[error("record batch declares {declared} bytes after the length field but {actual} are present")]
    LengthMismatch {
        /// Length declared in the header.
        declared: i64,
        /// Bytes actually present after the length field.
        actual: usize,
    },
    /// A batch must carry at least one record, and `last_offset_delta` must be `record_count - 1`.
    #[error("record batch has record_count {record_count} and last_offset_delta {last_offset_delta}")]
    BadRecordCount {
        /// Records declared.
        record_count: i32,
        /// Last offset delta declared.
        last_offset_delta: i32,
    },
    /// The CRC-32C over attributes..end does not match.
    #[error("record batch CRC mismatch: header says {expected:#010x}, content hashes to {actual:#010x}")]
    CrcMismatch {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the content.
        actual: u32,
    },
    /// The batch uses a compression codec this build cannot decode.
    #[error("record batch uses compression codec {codec}, which this build cannot decode")]
    UnsupportedCompression {
        /// Codec id from the attributes.
        codec: i16,
    },
    /// The compressed records section does not decompress.
    #[error("record batch does not decompress: {reason}")]
    Decompression {
        /// What the codec said.
        reason: String,
    },
    /// A record inside the batch is malformed.
    #[error("record {index} of the batch is malformed: {reason}")]
    MalformedRecord {
        /// Zero-based index of the record.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record as written by the producer (the broker's log is authoritative).
    pub base_offset: i64,
    /// Bytes after the `batch_length` field.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker (unused: kept for layout compatibility).
    pub partition_leader_epoch: i32,
    /// Format version, always 2.
    pub magic: i8,
    /// CRC-32C of bytes 21.. of the batch.
    pub crc: u32,
    /// Attribute bits; bits 0-2 select compression.
    pub attributes: i16,
    /// `record_count - 1`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record, in milliseconds since the Unix epoch.
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Idempotent producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses and sanity-checks the header of `batch` (which must be exactly one whole batch).
    /// Does not verify the CRC; see [`verify_crc`].
    pub fn parse(batch: &[u8]) -> Result<Self, BatchError> {
        if batch.len() < BATCH_HEADER_LEN {
            return Err(BatchError::TooShort { len: batch.len() });
        }
        let mut cursor = &batch[..BATCH_HEADER_LEN];
        let header = BatchHeader {
            base_offset: cursor.get_i64(),
            batch_length: cursor.get_i32(),
            partition_leader_epoch: cursor.get_i32(),
            magic: cursor.get_i8(),
            crc: cursor.get_u32(),
            attributes: cursor.get_i16(),
            last_offset_delta: cursor.get_i32(),
            base_timestamp: cursor.get_i64(),
            max_timestamp: cursor.get_i64(),
            producer_id: cursor.get_i64(),
            producer_epoch: cursor.get_i16(),
            base_sequence: cursor.get_i32(),
            record_count: cursor.get_i32(),
        };
        if header.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic { magic: header.magic });
        }
        let actual = batch.len() - (BATCH_LENGTH_AT + 4);
        if i64::from(header.batch_length) != actual as i64 {
            return Err(BatchError::LengthMismatch {
                declared: i64::from(header.batch_length),
                actual,
            });
        }
        if header.record_count < 1 || header.last_offset_delta != header.record_count - 1 {
            return Err(BatchError::BadRecordCount {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        Ok(header)
    }

    /// The compression codec id (0 = none, 1 = gzip, 2 = snappy, 3 = lz4, 4 = zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }
}

/// Checks the batch CRC-32C. `batch` must be at least a header long.
pub fn verify_crc(batch: &[u8]) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(BatchError::TooShort { len: batch.len() });
    }
    let expected = (&batch[CRC_AT..CRC_AT + 4]).get_u32();
    let actual = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    if expected != actual {
        return Err(BatchError::CrcMismatch { expected, actual });
    }
    Ok(())
}

/// A record header (key/value pair attached to a record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name.
    pub key: String,
    /// Header value; `None` is a null value.
    pub value: Option<Bytes>,
}

/// One record to put in a batch, or one decoded from a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Position of the record in its batch (0-based); ignored when building.
    pub offset_delta: i32,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key; keyed records are partitioned by it.
    pub key: Option<Bytes>,
    /// Optional value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Record headers.
    pub headers: Vec<RecordHeader>,
}

/// Idempotence fields stamped on a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record in the batch.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// The stamp of a non-idempotent batch.
    pub const NONE: ProducerStamp = ProducerStamp {
        producer_id: NO_PRODUCER_ID,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Now as a record timestamp: milliseconds since the Unix epoch (0 if the clock is before it).
/// The one clock reading the producer, the log and the broker stamp batches and segments with.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The sequence number `count` records after `sequence`: sequences wrap from `i32::MAX` to 0,
/// as in Kafka, so a producer never runs out of them.
pub fn next_sequence(sequence: i32, count: i32) -> i32 {
    ((i64::from(sequence) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

/// Encodes `records` as one uncompressed v2 batch with `base_offset` 0.
///
/// Panics only if `records` is empty, which is a caller bug: a batch holds at least one record.
pub fn encode_batch(records: &[Record], stamp: ProducerStamp) -> Bytes {
    encode_batch_compressed(records, stamp, Compression::None)
}

/// Encodes `records` as one v2 batch whose records section is compressed with `compression`.
///
/// Panics only if `records` is empty, which is a caller bug: a batch holds at least one record.
pub fn encode_batch_compressed(records: &[Record], stamp: ProducerStamp, compression: Compression) -> Bytes {
    assert!(!records.is_empty(), "a record batch holds at least one record");
    let base_timestamp = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + records.len() * 32);
    buf.put_i64(0); // base_offset: assigned by the log
    buf.put_i32(0); // batch_length: patched below
    buf.put_i32(-1); // partition_leader_epoch
    buf.put_i8(MAGIC_V2);
    buf.put_u32(0); // crc: patched below
    buf.put_i16(compression.codec()); // attributes: codec, create time
    buf.put_i32(records.len() as i32 - 1);
    buf.put_i64(base_timestamp);
    buf.put_i64(max_timestamp);
    buf.put_i64(stamp.producer_id);
    buf.put_i16(stamp.producer_epoch);
    buf.put_i32(stamp.base_sequence);
    buf.put_i32(records.len() as i32);
    match compression {
        Compression::None => put_records(&mut buf, records, base_timestamp),
        codec => {
            let mut plain = BytesMut::with_capacity(records.len() * 32);
            put_records(&mut plain, records, base_timestamp);
            buf.extend_from_slice(&compress(codec, &plain));
        }
    }
    let batch_length = (buf.len() - (BATCH_LENGTH_AT + 4)) as i32;
    buf[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    debug_assert_eq!(buf[MAGIC_AT], MAGIC_V2 as u8);
    buf.freeze()
}

/// `batch` with its producer stamp replaced (and its CRC recomputed); nothing else changes.
/// `batch` must be a whole batch (checked with [`BatchHeader::parse`] by the caller).
pub fn restamp(batch: &[u8], stamp: ProducerStamp) -> Bytes {
    let mut buf = BytesMut::from(batch);
    buf[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&stamp.producer_id.to_be_bytes());
    buf[PRODUCER_ID_AT + 8..PRODUCER_ID_AT + 10].copy_from_slice(&stamp.producer_epoch.to_be_bytes());
    buf[PRODUCER_ID_AT + 10..PRODUCER_ID_AT + 14].copy_from_slice(&stamp.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES_AT..]);
    buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

fn put_records(buf: &mut BytesMut, records: &[Record], base_timestamp: i64) {
    let mut body = BytesMut::new();
    for (delta, record) in records.iter().enumerate() {
        body.clear();
        body.put_i8(0); // record attributes
        put_varlong(&mut body, record.timestamp - base_timestamp);
        put_varint(&mut body, delta as i32);
        put_nullable_bytes(&mut body, record.key.as_deref());
        put_nullable_bytes(&mut body, record.value.as_deref());
        put_varint(&mut body, record.headers.len() as i32);
        for header in &record.headers {
            put_nullable_bytes(&mut body, Some(header.key.as_bytes()));
            put_nullable_bytes(&mut body, header.value.as_deref());
        }
        put_varint(buf, body.len() as i32);
        buf.extend_from_slice(&body);
    }
}

fn compress(codec: Compression, plain: &[u8]) -> Vec<u8> {
    match codec {
        Compression::None => plain.to_vec(),
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::with_capacity(plain.len() / 2));
            // Writing to a Vec cannot fail.
            encoder.write_all(plain).expect("lz4 into memory");
            encoder.finish().expect("lz4 into memory")
        }
        // Level 3 is zstd's (and Kafka's) default: most of the ratio at a fraction of the cost.
        Compression::Zstd => zstd::bulk::compress(plain, 3).expect("zstd into memory"),
    }
}

/// The records section of `batch`, decompressed if its codec says so.
fn records_section(batch: &Bytes, header: &BatchHeader) -> Result<Bytes, BatchError> {
    let section = batch.slice(BATCH_HEADER_LEN..);
    let failed = |e: std::io::Error| BatchError::Decompression { reason: e.to_string() };
    let mut plain = Vec::new();
    let limit = MAX_DECOMPRESSED_BYTES as u64 + 1;
    match header.compression() {
        0 => return Ok(section),
        3 => lz4_flex::frame::FrameDecoder::new(&section[..])
            .take(limit)
            .read_to_end(&mut plain)
            .map_err(failed)?,
        4 => zstd::stream::read::Decoder::new(&section[..])
            .map_err(failed)?
            .take(limit)
            .read_to_end(&mut plain)
            .map_err(failed)?,
        codec => return Err(BatchError::UnsupportedCompression { codec }),
    };
    if plain.len() > MAX_DECOMPRESSED_BYTES {
        return Err(BatchError::Decompression {
            reason: format!("expands beyond {MAX_DECOMPRESSED_BYTES} bytes"),
        });
    }
    Ok(Bytes::from(plain))
}

/// The fewest bytes a record takes: its length, attributes, timestamp and offset deltas, key,
/// value and header count, one byte each at least.
const MIN_RECORD_BYTES: usize = 7;

/// Decodes every record of one batch, decompressing it if needed. For an uncompressed batch,
/// keys, values and header values are zero-copy slices of `batch`.
pub fn decode_records(batch: &Bytes) -> Result<Vec<Record>, BatchError> {
    let header = BatchHeader::parse(batch)?;
    let mut cursor = records_section(batch, &header)?;
    // The count is the sender's word (its CRC proves nothing): reserve no more records than the
    // bytes can hold, or a 61-byte batch claiming two billion records asks for hundreds of GB.
    let mut records = Vec::with_capacity((header.record_count as usize).min(cursor.remaining() / MIN_RECORD_BYTES));
    for index in 0..header.record_count as usize {
        let malformed = |reason| BatchError::MalformedRecord { index, reason };
        let length = get_varint(&mut cursor).ok_or(malformed("bad length varint"))?;
        if length < 0 || length as usize > cursor.remaining() {
            return Err(malformed("length exceeds the batch"));
        }
        let mut record = cursor.split_to(length as usize);
        if !record.has_remaining() {
            return Err(malformed("empty record"));
        }
        record.advance(1); // attributes, unused in v2
        let timestamp_delta = get_varlong(&mut record).ok_or(malformed("bad timestamp delta"))?;
        let offset_delta = get_varint(&mut record).ok_or(malformed("bad offset delta"))?;
        let key = get_nullable_bytes(&mut record).ok_or(malformed("bad key"))?;
        let value = get_nullable_bytes(&mut record).ok_or(malformed("bad value"))?;
        let header_count = get_varint(&mut record).ok_or(malformed("bad header count"))?;
        if header_count < 0 {
            return Err(malformed("negative header count"));
        }
        let mut headers = Vec::with_capacity(header_count.min(64) as usize);
        for _ in 0..header_count {
            let key = get_nullable_bytes(&mut record)
                .flatten()
                .ok_or(malformed("bad header key"))?;
            let key = String::from_utf8(key.to_vec()).map_err(|_| malformed("header key is not UTF-8"))?;
            let value = get_nullable_bytes(&mut record).ok_or(malformed("bad header value"))?;
            headers.push(RecordHeader { key, value });
        }
        records.push(Record {
            offset_delta,
            timestamp: header.base_timestamp.saturating_add(timestamp_delta),
            key,
            value,
            headers,
        });
    }
    Ok(records)
}

fn put_varint(buf: &mut BytesMut, value: i32) {
    put_unsigned_varint(buf, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

fn put_varlong(buf: &mut BytesMut, value: i64) {
    put_unsigned_varint(buf, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_unsigned_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

fn put_nullable_bytes(buf: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(buf, -1),
        Some(bytes) => {
            put_varint(buf, bytes.len() as i32);
            buf.extend_from_slice(bytes);
        }
    }
}

fn get_unsigned_varint(buf: &mut Bytes, max_bytes: usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..max_bytes {
        if !buf.has_remaining() {
            return None;
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn get_varint(buf: &mut Bytes) -> Option<i32> {
    let raw = get_unsigned_varint(buf, 5)? as u32;
    Some(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

fn get_varlong(buf: &mut Bytes) -> Option<i64> {
    let raw = get_unsigned_varint(buf, 10)?;
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// `Some(None)` is a null field, `None` a malformed one.
fn get_nullable_bytes(buf: &mut Bytes) -> Option<Option<Bytes>> {
    let length = get_varint(buf)?;
    if length < 0 {
        return Some(None);
    }
    if length as usize > buf.remaining() {
        return None;
    }
    Some(Some(buf.split_to(length as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_batch_claiming_billions_of_records_is_refused_without_reserving_for_them() {
        // A valid batch of one record, then its count and last offset delta raised to the
        // most an i32 holds and its CRC recomputed (the CRC proves nothing about the sender).
        let mut batch = encode_batch(&[record("k", "v", 1)], ProducerStamp::NONE).to_vec();
        let count_at = BATCH_HEADER_LEN - 4;
        batch[count_at..count_at + 4].copy_from_slice(&i32::MAX.to_be_bytes());
        let last_delta_at = ATTRIBUTES_AT + 2;
        batch[last_delta_at..last_delta_at + 4].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        verify_crc(&batch).unwrap();
        assert_eq!(BatchHeader::parse(&batch).unwrap().record_count, i32::MAX);
        // Before the fix this aborted the process (a capacity of 2^31 records).
        let refused = decode_records(&Bytes::from(batch)).unwrap_err();
        assert!(
            matches!(refused, BatchError::MalformedRecord { index: 1, .. }),
            "{refused:?}"
        );
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_zero() {
        assert_eq!(next_sequence(0, 5), 5);
        assert_eq!(next_sequence(i32::MAX - 2, 2), i32::MAX);
        assert_eq!(next_sequence(i32::MAX - 2, 3), 0);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 10), 8);
        assert_eq!(next_sequence(7, 0), 7);
    }

    fn record(key: &str, value: &str, timestamp: i64) -> Record {
        Record {
            timestamp,
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            ..Record::default()
        }
    }

    #[test]
    fn header_fields_round_trip() {
        let stamp = ProducerStamp {
            producer_id: 42,
            producer_epoch: 3,
            base_sequence: 17,
        };
        let batch = encode_batch(&[record("a", "1", 1000), record("b", "2", 990)], stamp);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.record_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.base_timestamp, 990);
        assert_eq!(header.max_timestamp, 1000);
        assert_eq!(
            (header.producer_id, header.producer_epoch, header.base_sequence),
            (42, 3, 17)
        );
        verify_crc(&batch).unwrap();
    }

    #[test]
    fn restamping_changes_only_the_stamp_and_keeps_the_crc_valid() {
        let batch = encode_batch(&[record("a", "1", 1000)], ProducerStamp::NONE);
        let stamp = ProducerStamp {
            producer_id: 77,
            producer_epoch: 2,
            base_sequence: 40,
        };
        let restamped = restamp(&batch, stamp);
        verify_crc(&restamped).unwrap();
        let header = BatchHeader::parse(&restamped).unwrap();
        assert_eq!(
            (header.producer_id, header.producer_epoch, header.base_sequence),
            (77, 2, 40)
        );
        assert_eq!(restamped, encode_batch(&[record("a", "1", 1000)], stamp));
    }

    #[test]
    fn known_varint_encodings_match_kafka() {
        // Kafka's zig-zag varints: 0 -> 00, -1 -> 01, 1 -> 02, 63 -> 7e, -64 -> 7f, 64 -> 80 01.
        for (value, expected) in [
            (0, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (63, vec![0x7e]),
            (-64, vec![0x7f]),
            (64, vec![0x80, 0x01]),
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.to_vec(), expected, "varint {value}");
        }
    }

    #[test]
    fn corrupted_batch_fails_crc_and_truncated_batch_fails_length() {
        let batch = encode_batch(&[record("k", "v", 5)], ProducerStamp::NONE);
        let mut flipped = batch.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        assert!(matches!(verify_crc(&flipped), Err(BatchError::CrcMismatch { .. })));
        assert!(matches!(
            BatchHeader::parse(&batch[..batch.len() - 1]),
            Err(BatchError::LengthMismatch { .. })
        ));
        assert!(matches!(
            BatchHeader::parse(&batch[..10]),
            Err(BatchError::TooShort { len: 10 })
        ));
    }

    #[test]
    fn garbage_record_section_is_an_error_not_a_panic() {
        let batch = encode_batch(&[record("k", "v", 5)], ProducerStamp::NONE);
        let mut bytes = batch.to_vec();
        bytes[BATCH_HEADER_LEN] = 0xff; // length varint claims far more than the batch holds
        assert!(decode_records(&Bytes::from(bytes)).is_err());
    }

    #[test]
    fn repetitive_records_shrink_and_garbage_does_not_decompress() {
        let records: Vec<Record> = (0..200)
            .map(|i| record("tenant-1", "delivered to user@example.com", i))
            .collect();
        let plain = encode_batch(&records, ProducerStamp::NONE);
        for codec in [Compression::Lz4, Compression::Zstd] {
            let packed = encode_batch_compressed(&records, ProducerStamp::NONE, codec);
            assert!(
                packed.len() * 4 < plain.len(),
                "{codec:?}: {} vs {}",
                packed.len(),
                plain.len()
            );
            let mut garbage = packed.to_vec();
            for byte in &mut garbage[BATCH_HEADER_LEN + 8..] {
                *byte ^= 0x5a;
            }
            assert!(decode_records(&Bytes::from(garbage)).is_err(), "{codec:?}");
        }
        let mut unknown = plain.to_vec();
        unknown[ATTRIBUTES_AT + 1] = 2; // snappy
        assert_eq!(
            decode_records(&Bytes::from(unknown)),
            Err(BatchError::UnsupportedCompression { codec: 2 })
        );
    }

    proptest! {
        #[test]
        fn records_round_trip(
            entries in prop::collection::vec(
                (prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
                 prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
                 -1_000_000i64..1_000_000,
                 prop::collection::vec(("[a-z]{0,8}", prop::option::of(prop::collection::vec(any::<u8>(), 0..8))), 0..3)),
                1..20)
        ) {
            let records: Vec<Record> = entries
                .into_iter()
                .enumerate()
                .map(|(i, (key, value, ts, headers))| Record {
                    offset_delta: i as i32,
                    timestamp: 1_700_000_000_000 + ts,
                    key: key.map(Bytes::from),
                    value: value.map(Bytes::from),
                    headers: headers
                        .into_iter()
                        .map(|(key, value)| RecordHeader { key, value: value.map(Bytes::from) })
                        .collect(),
                })
                .collect();
            let batch = encode_batch(&records, ProducerStamp::NONE);
            verify_crc(&batch).unwrap();
            prop_assert_eq!(decode_records(&batch).unwrap(), records);
        }

        #[test]
        fn compressed_records_round_trip(
            values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..30),
            codec in prop::sample::select(vec![Compression::None, Compression::Lz4, Compression::Zstd]),
        ) {
            let records: Vec<Record> = values
                .into_iter()
                .enumerate()
                .map(|(i, value)| Record {
                    offset_delta: i as i32,
                    timestamp: 1_700_000_000_000 + i as i64,
                    key: Some(Bytes::from(format!("key-{i}"))),
                    value: Some(Bytes::from(value)),
                    headers: Vec::new(),
                })
                .collect();
            let batch = encode_batch_compressed(&records, ProducerStamp::NONE, codec);
            verify_crc(&batch).unwrap();
            prop_assert_eq!(BatchHeader::parse(&batch).unwrap().compression(), codec.codec());
            prop_assert_eq!(decode_records(&batch).unwrap(), records);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let bytes = Bytes::from(bytes);
            let _ = BatchHeader::parse(&bytes);
            let _ = verify_crc(&bytes);
            let _ = decode_records(&bytes);
        }
    }
}
