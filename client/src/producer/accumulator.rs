//! The record accumulator of one partition: gathers records into the open batch and says when
//! it must be sealed — when the next record would not fit (`batch_size`, or the topic's
//! `max.message.bytes`), when it is full, or when its first record has waited `linger`. Also the
//! size rules a record meets before it is queued: whether it can ever fit, and whether `send`
//! must wait for room in `buffer_memory`.
//!
//! Pure: records, sizes and instants go in, sealed record lists and deadlines come out. The
//! partition task owns one accumulator and its clock; it encodes and stamps what is sealed.

use proto::record_batch::Record;
use std::time::{Duration, Instant};

/// Room the 61-byte batch header and the request framing take from `max.message.bytes`.
pub(super) const BATCH_OVERHEAD: usize = 128;

/// Bytes a record adds to a batch, about: its fields plus varint and attribute overhead.
pub(super) fn record_size(record: &Record) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 4)
        .sum();
    record.key.as_ref().map_or(0, |k| k.len()) + record.value.as_ref().map_or(0, |v| v.len()) + headers + 16
}

/// The largest batch of records (in [`record_size`] bytes) a partition builds: `batch_size`,
/// unless the topic accepts less.
pub(super) fn max_batch_bytes(batch_size: usize, max_message_bytes: usize) -> usize {
    batch_size.min(max_message_bytes.saturating_sub(BATCH_OVERHEAD).max(1))
}

/// What `send` does with a record of a given size, before queueing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Room is free now: reserve it and queue the record.
    Reserve,
    /// The buffer is full: wait (up to `max_block`) for earlier records to finish.
    WaitForRoom,
    /// It can never be sent: larger than the topic accepts, or than the whole buffer (waiting
    /// would never end). `max` is the limit it exceeds.
    TooLarge {
        /// The limit exceeded, in bytes.
        max: usize,
    },
}

/// Whether a record of `size` bytes can be queued now (`free` bytes of `buffer_memory` left),
/// must wait for room, or can never be sent.
pub(super) fn admission(size: usize, max_message_bytes: usize, buffer_memory: usize, free: usize) -> Admission {
    if size + BATCH_OVERHEAD > max_message_bytes {
        Admission::TooLarge { max: max_message_bytes }
    } else if size > buffer_memory {
        Admission::TooLarge { max: buffer_memory }
    } else if size <= free {
        Admission::Reserve
    } else {
        Admission::WaitForRoom
    }
}

/// Records closed into one batch, in the order they were appended.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Sealed<T> {
    /// The records.
    pub(super) records: Vec<T>,
    /// Their sizes summed: the `buffer_memory` they hold until their outcome is known.
    pub(super) bytes: usize,
    /// When the earliest of them was queued: the batch's `delivery_timeout` counts from here.
    pub(super) created: Instant,
}

/// The open batch of one partition. `T` is whatever the task keeps per record.
#[derive(Debug)]
pub(super) struct Accumulator<T> {
    max_batch_bytes: usize,
    linger: Duration,
    open: Vec<T>,
    open_bytes: usize,
    /// The earliest `enqueued` among the open records (they may arrive slightly out of order).
    oldest: Option<Instant>,
    /// When the open batch is sealed at the latest: `linger` after its first record.
    linger_deadline: Option<Instant>,
}

impl<T> Accumulator<T> {
    /// An empty accumulator sealing at `max_batch_bytes` or after `linger`.
    pub(super) fn new(max_batch_bytes: usize, linger: Duration) -> Self {
        Accumulator {
            max_batch_bytes,
            linger,
            open: Vec::new(),
            open_bytes: 0,
            oldest: None,
            linger_deadline: None,
        }
    }

    /// Whether no record is open.
    pub(super) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// When the open batch must be sealed, if one is open.
    pub(super) fn linger_deadline(&self) -> Option<Instant> {
        self.linger_deadline
    }

    /// Adds a record of `size` bytes queued at `enqueued`. Returns what this seals, in order: the
    /// open batch if the record does not fit beside it, then the batch holding the record if it
    /// is now full (a record alone above the limit makes a batch of one).
    pub(super) fn append(&mut self, record: T, size: usize, enqueued: Instant) -> [Option<Sealed<T>>; 2] {
        let before = if !self.open.is_empty() && self.open_bytes + size > self.max_batch_bytes {
            self.seal()
        } else {
            None
        };
        if self.open.is_empty() {
            self.linger_deadline = Some(enqueued + self.linger);
        }
        self.oldest = Some(self.oldest.map_or(enqueued, |oldest| oldest.min(enqueued)));
        self.open_bytes += size;
        self.open.push(record);
        let full = if self.open_bytes >= self.max_batch_bytes {
            self.seal()
        } else {
            None
        };
        [before, full]
    }

    /// Seals the open batch if its linger deadline is at or before `now`.
    pub(super) fn seal_if_due(&mut self, now: Instant) -> Option<Sealed<T>> {
        if self.linger_deadline.is_some_and(|at| at <= now) {
            self.seal()
        } else {
            None
        }
    }

    /// Seals the open batch now (a flush, or the producer closing); `None` if nothing is open.
    pub(super) fn seal(&mut self) -> Option<Sealed<T>> {
        self.linger_deadline = None;
        let created = self.oldest.take()?;
        let bytes = std::mem::take(&mut self.open_bytes);
        Some(Sealed {
            records: std::mem::take(&mut self.open),
            bytes,
            created,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sealed(records: Vec<&'static str>, bytes: usize, created: Instant) -> Option<Sealed<&'static str>> {
        Some(Sealed {
            records,
            bytes,
            created,
        })
    }

    #[test]
    fn a_batch_lingers_from_its_first_record() {
        let t0 = Instant::now();
        let mut accumulator = Accumulator::new(100, ms(5));
        assert_eq!(accumulator.append("a", 10, t0), [None, None]);
        assert_eq!(accumulator.append("b", 10, t0 + ms(3)), [None, None]);
        // The deadline is the first record's, not the latest's.
        assert_eq!(accumulator.linger_deadline(), Some(t0 + ms(5)));
        assert_eq!(accumulator.seal_if_due(t0 + ms(4)), None);
        assert_eq!(accumulator.seal_if_due(t0 + ms(5)), sealed(vec!["a", "b"], 20, t0));
        assert!(accumulator.is_empty());
        assert_eq!(accumulator.linger_deadline(), None);
        assert_eq!(accumulator.seal_if_due(t0 + ms(50)), None);
    }

    #[test]
    fn a_full_batch_is_sealed_at_once() {
        let t0 = Instant::now();
        let mut accumulator = Accumulator::new(30, ms(5));
        assert_eq!(accumulator.append("a", 10, t0), [None, None]);
        assert_eq!(accumulator.append("b", 10, t0), [None, None]);
        assert_eq!(
            accumulator.append("c", 10, t0),
            [None, sealed(vec!["a", "b", "c"], 30, t0)]
        );
        assert_eq!(accumulator.linger_deadline(), None);
    }

    #[test]
    fn a_record_that_does_not_fit_seals_the_open_batch_first() {
        let t0 = Instant::now();
        let mut accumulator = Accumulator::new(30, ms(5));
        accumulator.append("a", 20, t0);
        let [before, full] = accumulator.append("b", 20, t0 + ms(1));
        assert_eq!(before, sealed(vec!["a"], 20, t0));
        assert_eq!(full, None);
        // The new batch lingers from its own first record.
        assert_eq!(accumulator.linger_deadline(), Some(t0 + ms(6)));
        // A record above the limit on its own makes a batch of one.
        let [before, full] = accumulator.append("huge", 99, t0 + ms(2));
        assert_eq!(before, sealed(vec!["b"], 20, t0 + ms(1)));
        assert_eq!(full, sealed(vec!["huge"], 99, t0 + ms(2)));
    }

    #[test]
    fn a_batch_is_as_old_as_its_earliest_record() {
        let t0 = Instant::now();
        let mut accumulator = Accumulator::new(100, ms(5));
        accumulator.append("late", 10, t0 + ms(2));
        accumulator.append("early", 10, t0);
        assert_eq!(accumulator.seal(), sealed(vec!["late", "early"], 20, t0));
        assert_eq!(accumulator.seal(), None);
    }

    #[test]
    fn batches_are_capped_by_the_topic_limit() {
        assert_eq!(max_batch_bytes(16 * 1024, 1024 * 1024), 16 * 1024);
        assert_eq!(max_batch_bytes(16 * 1024, 4096), 4096 - BATCH_OVERHEAD);
        assert_eq!(max_batch_bytes(16 * 1024, 10), 1);
    }

    #[test]
    fn a_send_waits_for_buffer_room_only_if_the_record_can_ever_fit() {
        let mib = 1024 * 1024;
        assert_eq!(admission(100, mib, 1000, 1000), Admission::Reserve);
        assert_eq!(admission(100, mib, 1000, 100), Admission::Reserve);
        assert_eq!(admission(100, mib, 1000, 99), Admission::WaitForRoom);
        assert_eq!(admission(100, mib, 1000, 0), Admission::WaitForRoom);
        // Larger than the whole buffer: waiting would never end.
        assert_eq!(admission(1001, mib, 1000, 1000), Admission::TooLarge { max: 1000 });
        // Larger than the topic accepts, with the batch overhead.
        assert_eq!(
            admission(mib - BATCH_OVERHEAD + 1, mib, 32 * mib, 32 * mib),
            Admission::TooLarge { max: mib }
        );
        assert_eq!(
            admission(mib - BATCH_OVERHEAD, mib, 32 * mib, 0),
            Admission::WaitForRoom
        );
    }
}
