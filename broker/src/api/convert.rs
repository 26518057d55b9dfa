//! Request → domain conversions, all in one place: wire values are validated (batch size,
//! header and CRC, producer stamp, acks) and defaulted (timeouts, fetch sizes), and come out as
//! the values the subsystems take. Pure: no subsystem is called from here, so each conversion is
//! unit-tested with plain requests.

use super::answer::Refusal;
use crate::replication::producer_state::BatchIdentity;
use crate::replication::{Acks, AppendBatch};
use crate::storage::Offset;
use proto::record_batch::{verify_crc, BatchHeader, NO_PRODUCER_ID};
use proto::v1::{self, ErrorCode, FetchRequest, OffsetSpec, ProduceRequest};
use std::time::Duration;

/// Longest a produce waits for its acknowledgement when the request does not say.
const DEFAULT_PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a fetch long-poll may wait, whatever the request asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
/// How long a leadership transfer may take when the request does not say.
const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetch size when the request gives none.
const DEFAULT_FETCH_BYTES: usize = 1024 * 1024;

/// A wire timeout in ms, `0` meaning `default`.
fn timeout_or(ms: u32, default: Duration) -> Duration {
    match ms {
        0 => default,
        ms => Duration::from_millis(u64::from(ms)),
    }
}

/// A produce request, validated: the batch to append, its acks, and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Produce {
    /// The batch, with its producer's identity if the producer is idempotent.
    pub batch: AppendBatch,
    /// How far the write must get before it is acknowledged.
    pub acks: Acks,
    /// How long the producer waits for the acknowledgement.
    pub timeout: Duration,
    /// Records in the batch (from its header).
    pub record_count: u32,
}

/// Validates a produce request's batch against the topic's `max_message_bytes`, its header and
/// CRC, and (for an idempotent producer) its acks and stamp — in that order.
pub(super) fn produce(request: ProduceRequest, max_message_bytes: u32) -> Result<Produce, Refusal> {
    let records = request.records;
    if records.len() > max_message_bytes as usize {
        let message = format!(
            "record batch of {} bytes exceeds max_message_bytes {max_message_bytes}",
            records.len()
        );
        return Err(Refusal::new(ErrorCode::RecordTooLarge, message));
    }
    let header = BatchHeader::parse(&records)
        .and_then(|header| verify_crc(&records).map(|()| header))
        .map_err(|error| Refusal::new(ErrorCode::InvalidRequest, error.to_string()))?;
    let timeout = timeout_or(request.timeout_ms, DEFAULT_PRODUCE_TIMEOUT);
    let acks = match v1::Acks::try_from(request.acks).unwrap_or(v1::Acks::All) {
        v1::Acks::None => Acks::None,
        v1::Acks::Leader => Acks::Leader,
        v1::Acks::All => Acks::All,
    };
    if header.producer_id == NO_PRODUCER_ID {
        return Ok(Produce {
            batch: AppendBatch::plain(records),
            acks,
            timeout,
            record_count: header.record_count.max(0) as u32,
        });
    }
    if acks != Acks::All {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "idempotent batches need acks=all (as in Kafka)",
        ));
    }
    if header.producer_id < 0 || header.producer_epoch < 0 || header.base_sequence < 0 {
        let message = format!(
            "invalid producer stamp: id {}, epoch {}, sequence {}",
            header.producer_id, header.producer_epoch, header.base_sequence
        );
        return Err(Refusal::new(ErrorCode::InvalidRequest, message));
    }
    let identity = BatchIdentity::new(
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        header.record_count,
    );
    Ok(Produce {
        batch: AppendBatch::idempotent(records, identity),
        acks,
        timeout,
        record_count: header.record_count.max(0) as u32,
    })
}

/// A fetch request's read: where from, how much, and how long to long-poll for new records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fetch {
    /// First offset wanted.
    pub from: Offset,
    /// Most bytes to return (a first batch is returned whole).
    pub max_bytes: usize,
    /// How long to wait for records when there are none yet; `None`: answer at once.
    pub long_poll: Option<Duration>,
}

/// A fetch request's read, with its defaults and the long-poll bound applied.
pub(super) fn fetch(request: &FetchRequest) -> Fetch {
    Fetch {
        from: Offset(request.offset),
        max_bytes: match request.max_bytes {
            0 => DEFAULT_FETCH_BYTES,
            n => n as usize,
        },
        long_poll: (request.max_wait_ms > 0 && request.min_bytes > 0)
            .then(|| Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_FETCH_WAIT)),
    }
}

/// A ListOffsets request's spec (an unknown one reads as latest).
pub(super) fn offset_spec(spec: i32) -> OffsetSpec {
    OffsetSpec::try_from(spec).unwrap_or(OffsetSpec::Latest)
}

/// How long a leadership transfer may take.
pub(super) fn transfer_timeout(timeout_ms: u32) -> Duration {
    timeout_or(timeout_ms, DEFAULT_TRANSFER_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proto::record_batch::{encode_batch, ProducerStamp, Record};

    fn records(stamp: ProducerStamp) -> Bytes {
        encode_batch(
            &[Record {
                value: Some(Bytes::from_static(b"v")),
                ..Record::default()
            }],
            stamp,
        )
    }

    fn request(records: Bytes, acks: v1::Acks, timeout_ms: u32) -> ProduceRequest {
        ProduceRequest {
            topic: "t".into(),
            partition: 0,
            acks: acks as i32,
            records,
            timeout_ms,
        }
    }

    #[test]
    fn a_plain_batch_keeps_its_acks_and_timeout() {
        let batch = records(ProducerStamp::NONE);
        let produce = produce(request(batch.clone(), v1::Acks::Leader, 0), u32::MAX).unwrap();
        assert_eq!(produce.batch, AppendBatch::plain(batch));
        assert_eq!(produce.acks, Acks::Leader);
        assert_eq!(produce.timeout, DEFAULT_PRODUCE_TIMEOUT);
    }

    #[test]
    fn produce_validation_refuses_oversized_corrupt_and_badly_stamped_batches() {
        let batch = records(ProducerStamp::NONE);
        let too_large = produce(request(batch.clone(), v1::Acks::All, 0), 10).unwrap_err();
        assert_eq!(too_large.code, ErrorCode::RecordTooLarge);
        let mut corrupt = batch.to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        let corrupt = produce(request(corrupt.into(), v1::Acks::All, 0), u32::MAX).unwrap_err();
        assert_eq!(corrupt.code, ErrorCode::InvalidRequest);

        let stamp = ProducerStamp {
            producer_id: 7,
            producer_epoch: 0,
            base_sequence: 0,
        };
        let idempotent = records(stamp);
        let not_all = produce(request(idempotent.clone(), v1::Acks::Leader, 0), u32::MAX).unwrap_err();
        assert_eq!(not_all.code, ErrorCode::InvalidRequest);
        assert!(not_all.message.contains("acks=all"), "{}", not_all.message);
        let accepted = produce(request(idempotent, v1::Acks::All, 500), u32::MAX).unwrap();
        assert_eq!(accepted.batch.producer, Some(BatchIdentity::new(7, 0, 0, 1)));
        assert_eq!(accepted.timeout, Duration::from_millis(500));

        let negative = records(ProducerStamp {
            producer_id: 7,
            producer_epoch: -2,
            base_sequence: 0,
        });
        let negative = produce(request(negative, v1::Acks::All, 0), u32::MAX).unwrap_err();
        assert!(
            negative.message.contains("invalid producer stamp"),
            "{}",
            negative.message
        );
    }

    #[test]
    fn a_fetch_long_polls_only_when_asked_to_and_at_most_30_s() {
        let mut request = FetchRequest {
            topic: "t".into(),
            partition: 0,
            offset: 5,
            max_bytes: 0,
            min_bytes: 1,
            max_wait_ms: 60_000,
        };
        let read = fetch(&request);
        assert_eq!(read.from, Offset(5));
        assert_eq!(read.max_bytes, DEFAULT_FETCH_BYTES);
        assert_eq!(read.long_poll, Some(MAX_FETCH_WAIT));
        request.min_bytes = 0;
        assert_eq!(fetch(&request).long_poll, None);
    }
}
