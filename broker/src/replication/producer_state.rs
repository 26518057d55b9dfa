//! Idempotent-producer state of one partition: for each producer id, its epoch and the last
//! [`BATCHES_KEPT`] batches it appended (sequence range → offset). A pure, deterministic table:
//! the state machine updates it from committed batches in log order, so every replica — and a
//! replica that re-applies its log after a restart — holds the same table. The leader consults
//! it (plus the batches it has proposed but not yet applied) before proposing a batch, so a
//! retried batch is answered with its original offset instead of being appended again.

use crate::storage::Offset;
use proto::record_batch::next_sequence;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Batches remembered per producer: a producer has at most 5 requests in flight per partition,
/// so any retry it can send is one of these (Kafka's rule).
pub const BATCHES_KEPT: usize = 5;
/// Producers remembered per partition by default; the least recently active is forgotten first.
pub const DEFAULT_MAX_PRODUCERS: usize = 10_000;

/// The idempotence fields of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchIdentity {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub epoch: i16,
    /// Sequence of the first record.
    pub first_sequence: i32,
    /// Sequence of the last record (wrapping after `i32::MAX` to 0, as in Kafka).
    pub last_sequence: i32,
}

impl BatchIdentity {
    /// The identity of a batch with `record_count` records starting at `first_sequence`.
    pub fn new(producer_id: i64, epoch: i16, first_sequence: i32, record_count: i32) -> Self {
        BatchIdentity {
            producer_id,
            epoch,
            first_sequence,
            last_sequence: next_sequence(first_sequence, record_count - 1),
        }
    }
}

/// Whether `a` comes at or before `b` in wrapping sequence order (within half the range).
pub fn sequence_at_or_before(a: i32, b: i32) -> bool {
    let distance = (i64::from(b) - i64::from(a)).rem_euclid(i64::from(i32::MAX) + 1);
    distance < i64::from(i32::MAX) / 2
}

/// A batch a producer appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedBatch {
    /// First sequence.
    pub first_sequence: i32,
    /// Last sequence.
    pub last_sequence: i32,
    /// Offset its first record got.
    pub base_offset: Offset,
}

/// What the table knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// The last batches of this epoch, oldest first.
    pub batches: VecDeque<AppendedBatch>,
    /// When it last appended, in table ticks (for eviction).
    last_active: u64,
}

impl ProducerEntry {
    /// The last sequence appended.
    pub fn last_sequence(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_sequence)
    }

    /// The remembered batch with exactly these sequences, if any.
    pub fn find(&self, first_sequence: i32, last_sequence: i32) -> Option<&AppendedBatch> {
        self.batches
            .iter()
            .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
    }
}

/// The verdict on a batch about to be proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceVerdict {
    /// The next batch of its producer: append it.
    Append,
    /// Already appended at this offset: answer with it, append nothing.
    Duplicate(Offset),
    /// At or before the last sequence but not a remembered batch: appended long ago, at an
    /// offset no longer known.
    OldDuplicate,
    /// Sequence is not the next one expected.
    OutOfOrder {
        /// The sequence expected next.
        expected: i32,
    },
    /// The sequence is beyond the next one expected: an earlier batch is still on its way
    /// (requests can overtake each other) or was lost. Worth waiting for briefly.
    Gap {
        /// The sequence expected next.
        expected: i32,
    },
    /// An older epoch than the table's: the producer was fenced by a newer instance.
    Fenced {
        /// The current epoch.
        current: i16,
    },
    /// No state for this producer and the batch does not start at sequence 0.
    UnknownProducer,
}

/// The rule shared by the table and the leader's view with in-flight batches: what `batch`
/// gets, given the producer's `epoch` and `last_sequence` (None: nothing appended yet).
pub fn judge(epoch_and_last: Option<(i16, Option<i32>)>, batch: &BatchIdentity) -> SequenceVerdict {
    match epoch_and_last {
        None if batch.first_sequence == 0 => SequenceVerdict::Append,
        None => SequenceVerdict::UnknownProducer,
        Some((epoch, _)) if batch.epoch < epoch => SequenceVerdict::Fenced { current: epoch },
        Some((epoch, _)) if batch.epoch > epoch => {
            if batch.first_sequence == 0 {
                SequenceVerdict::Append
            } else {
                SequenceVerdict::OutOfOrder { expected: 0 }
            }
        }
        Some((_, None)) if batch.first_sequence == 0 => SequenceVerdict::Append,
        Some((_, None)) => SequenceVerdict::Gap { expected: 0 },
        Some((_, Some(last))) => {
            let expected = next_sequence(last, 1);
            if batch.first_sequence == expected {
                SequenceVerdict::Append
            } else if sequence_at_or_before(batch.first_sequence, last) {
                if sequence_at_or_before(batch.last_sequence, last) {
                    SequenceVerdict::OldDuplicate
                } else {
                    // Straddles the last sequence: not a batch this producer could have sent.
                    SequenceVerdict::OutOfOrder { expected }
                }
            } else {
                SequenceVerdict::Gap { expected }
            }
        }
    }
}

/// Producer state of one partition, bounded to `max_producers` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    /// `last_active` tick → producer id: the eviction order.
    by_activity: BTreeMap<u64, i64>,
    tick: u64,
    max_producers: usize,
}

impl Default for ProducerTable {
    fn default() -> Self {
        ProducerTable::new(DEFAULT_MAX_PRODUCERS)
    }
}

impl ProducerTable {
    /// An empty table that remembers at most `max_producers` producers.
    pub fn new(max_producers: usize) -> Self {
        ProducerTable {
            producers: HashMap::new(),
            by_activity: BTreeMap::new(),
            tick: 0,
            max_producers: max_producers.max(1),
        }
    }

    /// What the table knows of `producer_id`.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The verdict on `batch` against committed state alone.
    pub fn check(&self, batch: &BatchIdentity) -> SequenceVerdict {
        let entry = self.producers.get(&batch.producer_id);
        if let Some(found) = entry
            .filter(|e| e.epoch == batch.epoch)
            .and_then(|e| e.find(batch.first_sequence, batch.last_sequence))
        {
            return SequenceVerdict::Duplicate(found.base_offset);
        }
        judge(entry.map(|e| (e.epoch, e.last_sequence())), batch)
    }

    /// Records a committed batch. Called for every idempotent batch in log order; whatever it
    /// holds is recorded (the leader already refused batches that break the rules), except a
    /// batch the table already has or has passed: an older epoch, or a sequence at or before
    /// the producer's last. Such batches come only from replaying entries after a snapshot
    /// whose table is newer than its log position (retention's snapshots), and recording them
    /// would put the table back in time.
    pub fn record(&mut self, batch: &BatchIdentity, base_offset: Offset) {
        if let Some(entry) = self.producers.get(&batch.producer_id) {
            let passed = batch.epoch < entry.epoch
                || (batch.epoch == entry.epoch
                    && entry
                        .last_sequence()
                        .is_some_and(|last| sequence_at_or_before(batch.last_sequence, last)));
            if passed {
                return;
            }
        }
        self.tick += 1;
        let tick = self.tick;
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.epoch,
                batches: VecDeque::new(),
                last_active: tick,
            });
        self.by_activity.remove(&entry.last_active);
        if batch.epoch != entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(AppendedBatch {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence,
            base_offset,
        });
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
        entry.last_active = tick;
        self.by_activity.insert(tick, batch.producer_id);
        while self.producers.len() > self.max_producers {
            let Some((_, idle)) = self.by_activity.pop_first() else {
                break;
            };
            self.producers.remove(&idle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(producer_id: i64, epoch: i16, first: i32, count: i32) -> BatchIdentity {
        BatchIdentity::new(producer_id, epoch, first, count)
    }

    #[test]
    fn replaying_batches_the_table_already_passed_changes_nothing() {
        let mut table = ProducerTable::default();
        for i in 0..10 {
            table.record(&batch(7, 1, i * 10, 10), Offset(1000 + i as u64 * 10));
        }
        let before = table.clone();
        // Replayed after a snapshot whose table is newer than its position: every batch again,
        // and a batch of the epoch before.
        for i in 0..10 {
            table.record(&batch(7, 1, i * 10, 10), Offset(1000 + i as u64 * 10));
        }
        table.record(&batch(7, 0, 500, 10), Offset(5));
        assert_eq!(table, before);
        assert_eq!(table.check(&batch(7, 1, 100, 1)), SequenceVerdict::Append);
        // What comes after still records.
        table.record(&batch(7, 1, 100, 1), Offset(1100));
        assert_eq!(
            table.check(&batch(7, 1, 100, 1)),
            SequenceVerdict::Duplicate(Offset(1100))
        );
    }

    #[test]
    fn next_batch_appends_and_a_retry_is_a_duplicate_of_its_first_attempt() {
        let mut table = ProducerTable::default();
        assert_eq!(table.check(&batch(7, 0, 0, 10)), SequenceVerdict::Append);
        table.record(&batch(7, 0, 0, 10), Offset(100));
        assert_eq!(table.check(&batch(7, 0, 10, 5)), SequenceVerdict::Append);
        table.record(&batch(7, 0, 10, 5), Offset(120));
        assert_eq!(
            table.check(&batch(7, 0, 0, 10)),
            SequenceVerdict::Duplicate(Offset(100))
        );
        assert_eq!(
            table.check(&batch(7, 0, 10, 5)),
            SequenceVerdict::Duplicate(Offset(120))
        );
    }

    #[test]
    fn gaps_old_sequences_old_epochs_and_unknown_producers_are_refused() {
        let mut table = ProducerTable::default();
        table.record(&batch(7, 2, 0, 10), Offset(0));
        assert_eq!(table.check(&batch(7, 2, 11, 1)), SequenceVerdict::Gap { expected: 10 });
        // Overlaps the last batch without matching it exactly.
        assert_eq!(
            table.check(&batch(7, 2, 5, 10)),
            SequenceVerdict::OutOfOrder { expected: 10 }
        );
        assert_eq!(table.check(&batch(7, 1, 10, 1)), SequenceVerdict::Fenced { current: 2 });
        assert_eq!(table.check(&batch(7, 3, 0, 1)), SequenceVerdict::Append);
        assert_eq!(
            table.check(&batch(7, 3, 4, 1)),
            SequenceVerdict::OutOfOrder { expected: 0 }
        );
        assert_eq!(table.check(&batch(8, 0, 3, 1)), SequenceVerdict::UnknownProducer);
        assert_eq!(table.check(&batch(8, 0, 0, 1)), SequenceVerdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerTable::default();
        for i in 0..7 {
            table.record(&batch(1, 0, i, 1), Offset(i as u64));
        }
        assert_eq!(table.check(&batch(1, 0, 2, 1)), SequenceVerdict::Duplicate(Offset(2)));
        assert_eq!(table.check(&batch(1, 0, 1, 1)), SequenceVerdict::OldDuplicate);
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut table = ProducerTable::default();
        table.record(&batch(1, 0, 0, 1), Offset(0));
        let near_end = batch(1, 0, i32::MAX - 1, 5);
        assert_eq!(near_end.last_sequence, 2);
        // Move the producer's state to just before the wrap, in forward jumps of less than half
        // the range each (the table ignores a batch that comes before its last).
        table.record(&BatchIdentity::new(1, 0, i32::MAX / 3, 1), Offset(1));
        table.record(&BatchIdentity::new(1, 0, i32::MAX / 3 * 2, 1), Offset(2));
        table.record(&BatchIdentity::new(1, 0, i32::MAX - 10, 9), Offset(3));
        assert_eq!(table.check(&near_end), SequenceVerdict::Append);
        table.record(&near_end, Offset(10));
        assert_eq!(table.check(&batch(1, 0, 3, 1)), SequenceVerdict::Append);
        assert!(sequence_at_or_before(i32::MAX, 3));
        assert!(!sequence_at_or_before(3, i32::MAX));
    }

    #[test]
    fn the_least_recently_active_producer_is_evicted_first() {
        let mut table = ProducerTable::new(2);
        table.record(&batch(1, 0, 0, 1), Offset(0));
        table.record(&batch(2, 0, 0, 1), Offset(1));
        table.record(&batch(1, 0, 1, 1), Offset(2));
        table.record(&batch(3, 0, 0, 1), Offset(3));
        assert_eq!(table.len(), 2);
        assert!(table.get(2).is_none(), "producer 2 was idle longest");
        assert_eq!(table.check(&batch(2, 0, 1, 1)), SequenceVerdict::UnknownProducer);
        assert_eq!(table.check(&batch(1, 0, 2, 1)), SequenceVerdict::Append);
    }

    #[test]
    fn replaying_the_same_batches_builds_the_same_table() {
        let batches: Vec<(BatchIdentity, Offset)> = (0..50)
            .map(|i| (batch(i % 7, 0, (i / 7) as i32, 1), Offset(i as u64)))
            .collect();
        let mut first = ProducerTable::new(4);
        let mut second = ProducerTable::new(4);
        for (b, offset) in &batches {
            first.record(b, *offset);
        }
        for (b, offset) in &batches {
            second.record(b, *offset);
        }
        assert_eq!(first, second);
        let json = serde_json::to_vec(&first).unwrap();
        assert_eq!(serde_json::from_slice::<ProducerTable>(&json).unwrap(), first);
    }
}
