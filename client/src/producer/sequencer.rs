//! The idempotence stamps of one partition's batches: the producer id and epoch, the next
//! sequence number (wrapping from `i32::MAX` to 0), and the two rules that keep order when a
//! batch is refused.
//!
//! - **Re-stamping.** When a batch is refused for good (too large, invalid), never reached a
//!   broker before it expired, or the broker no longer knows this producer
//!   (`OUT_OF_ORDER_SEQUENCE` or `UNKNOWN_PRODUCER_ID` on the oldest unacknowledged batch), the
//!   batches after it cannot be appended under their sequence numbers: the broker would wait
//!   for the missing one. They were refused, so nothing of them is in the log: the partition
//!   takes a fresh producer id and re-stamps them from sequence 0. Batches before the refused
//!   one keep their stamps — some may be in the log, and a re-stamped retry of one of those
//!   could be written twice.
//! - **The order barrier.** The broker orders batches within one producer id, not across two,
//!   so re-stamped batches are not sent until every batch before them is acknowledged.
//!
//! Pure: batch ids, record counts and identities go in, stamps and decisions come out. The
//! partition task fetches producer ids and rewrites the batch bytes.

use proto::record_batch::{next_sequence, ProducerStamp};

/// A producer id and its epoch.
pub(super) type ProducerIdentity = (i64, i16);

/// The stamping state of one partition.
#[derive(Debug)]
pub(super) struct Sequencer {
    idempotent: bool,
    /// Producer id and epoch of this partition's batches (idempotence on), once known.
    identity: Option<ProducerIdentity>,
    next_sequence: i32,
    /// Set when batches must be re-stamped under a (new) producer id: the id of the first
    /// batch to re-stamp. Every batch from it on is known not to be in the log (it, or an
    /// earlier batch of the same sequence run, was refused or never sent).
    restamp_from: Option<u64>,
    /// Re-stamped batches (ids from this one on) wait until every batch before them is
    /// acknowledged.
    order_barrier: Option<u64>,
}

impl Sequencer {
    /// A partition's sequencer; without idempotence every stamp is [`ProducerStamp::NONE`].
    pub(super) fn new(idempotent: bool) -> Self {
        Sequencer {
            idempotent,
            identity: None,
            next_sequence: 0,
            restamp_from: None,
            order_barrier: None,
        }
    }

    /// The producer id and epoch in use, once the partition has one.
    pub(super) fn identity(&self) -> Option<ProducerIdentity> {
        self.identity
    }

    /// The first batch to re-stamp under a new producer id, if that is due.
    pub(super) fn restamp_from(&self) -> Option<u64> {
        self.restamp_from
    }

    /// The first batch held back until all earlier ones are acknowledged, if any.
    pub(super) fn order_barrier(&self) -> Option<u64> {
        self.order_barrier
    }

    /// The stamp for a batch of `count` records, advancing the sequence. Idempotent but without
    /// an id yet: [`ProducerStamp::NONE`], re-stamped when the id arrives (nothing is sent
    /// before, see [`ready_to_send`](Self::ready_to_send)).
    pub(super) fn stamp(&mut self, count: usize) -> ProducerStamp {
        match (self.idempotent, self.identity) {
            (true, Some((producer_id, producer_epoch))) => {
                let stamp = ProducerStamp {
                    producer_id,
                    producer_epoch,
                    base_sequence: self.next_sequence,
                };
                self.next_sequence = next_sequence(self.next_sequence, count as i32);
                stamp
            }
            _ => ProducerStamp::NONE,
        }
    }

    /// Batch `id` was refused, or expired without reaching a broker: it and every later batch
    /// are not in the log and must be re-stamped (idempotence on; otherwise nothing to do).
    pub(super) fn refused(&mut self, id: u64) {
        if self.idempotent {
            self.restamp_from = Some(self.restamp_from.map_or(id, |from| from.min(id)));
        }
    }

    /// Whether batches may be sent now, the oldest unacknowledged one being `first_unacked`.
    /// Without a producer id yet, asks for one (a re-stamp of everything) and says no. Lifts
    /// the order barrier once every batch before it is acknowledged.
    pub(super) fn ready_to_send(&mut self, first_unacked: Option<u64>) -> bool {
        if self.idempotent && self.identity.is_none() {
            self.restamp_from = Some(0);
            return false;
        }
        if self
            .order_barrier
            .is_some_and(|barrier| first_unacked.is_none_or(|first| first >= barrier))
        {
            self.order_barrier = None;
        }
        true
    }

    /// Takes `identity` (the first, or a fresh one after a refusal) and re-stamps from sequence
    /// 0 the batches from the pending re-stamp point on. `batches` are the unacknowledged
    /// batches as `(id, record count)`, oldest first; returns the new stamp of each re-stamped
    /// one, in order. Batches before that point keep their stamps, and the re-stamped ones wait
    /// behind the order barrier until those are acknowledged.
    pub(super) fn adopt_identity(
        &mut self,
        identity: ProducerIdentity,
        batches: impl IntoIterator<Item = (u64, usize)>,
    ) -> Vec<(u64, ProducerStamp)> {
        let from = self.restamp_from.take().unwrap_or(0);
        self.identity = Some(identity);
        self.next_sequence = 0;
        let mut batches = batches.into_iter().peekable();
        if batches.peek().is_some_and(|&(first, _)| first < from) {
            self.order_barrier = Some(from);
        }
        batches
            .filter(|&(id, _)| id >= from)
            .map(|(id, count)| (id, self.stamp(count)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(producer_id: i64, base_sequence: i32) -> ProducerStamp {
        ProducerStamp {
            producer_id,
            producer_epoch: 0,
            base_sequence,
        }
    }

    #[test]
    fn without_idempotence_nothing_is_stamped() {
        let mut sequencer = Sequencer::new(false);
        assert_eq!(sequencer.stamp(3), ProducerStamp::NONE);
        assert!(sequencer.ready_to_send(Some(1)));
        sequencer.refused(1);
        assert_eq!(sequencer.restamp_from(), None);
    }

    #[test]
    fn nothing_is_sent_before_the_producer_id() {
        let mut sequencer = Sequencer::new(true);
        assert_eq!(sequencer.stamp(3), ProducerStamp::NONE);
        assert!(!sequencer.ready_to_send(Some(1)));
        assert_eq!(sequencer.restamp_from(), Some(0));
        // The batches sealed meanwhile get their stamps when the id arrives.
        let stamps = sequencer.adopt_identity((7, 0), [(1, 3), (2, 2)]);
        assert_eq!(stamps, [(1, stamp(7, 0)), (2, stamp(7, 3))]);
        assert_eq!(sequencer.order_barrier(), None);
        assert!(sequencer.ready_to_send(Some(1)));
        assert_eq!(sequencer.stamp(1), stamp(7, 5));
    }

    #[test]
    fn sequences_advance_by_record_count_and_wrap_to_zero() {
        let mut sequencer = Sequencer::new(true);
        sequencer.adopt_identity((7, 0), []);
        sequencer.next_sequence = i32::MAX - 4;
        assert_eq!(sequencer.stamp(3), stamp(7, i32::MAX - 4));
        assert_eq!(sequencer.stamp(3), stamp(7, i32::MAX - 1));
        // i32::MAX - 1 + 3 wraps past i32::MAX to 1.
        assert_eq!(sequencer.stamp(1), stamp(7, 1));
    }

    #[test]
    fn a_refused_batch_and_later_ones_are_restamped_behind_an_order_barrier() {
        // After OUT_OF_ORDER_SEQUENCE or UNKNOWN_PRODUCER_ID on batch 3 (see `delivery`).
        let mut sequencer = Sequencer::new(true);
        sequencer.adopt_identity((7, 0), []);
        for count in [2, 3, 4, 1] {
            sequencer.stamp(count);
        }
        sequencer.refused(3);
        // A later refusal does not move the re-stamp point forward; an earlier one does.
        sequencer.refused(4);
        assert_eq!(sequencer.restamp_from(), Some(3));
        let stamps = sequencer.adopt_identity((8, 0), [(2, 3), (3, 4), (4, 1)]);
        assert_eq!(stamps, [(3, stamp(8, 0)), (4, stamp(8, 4))]);
        assert_eq!(sequencer.restamp_from(), None);
        assert_eq!(sequencer.identity(), Some((8, 0)));
        // Batch 2 keeps its old stamp; 3 and 4 wait until it is acknowledged.
        assert_eq!(sequencer.order_barrier(), Some(3));
        assert!(sequencer.ready_to_send(Some(2)));
        assert_eq!(sequencer.order_barrier(), Some(3));
        assert!(sequencer.ready_to_send(Some(3)));
        assert_eq!(sequencer.order_barrier(), None);
        assert_eq!(sequencer.stamp(1), stamp(8, 5));
    }

    #[test]
    fn restamping_from_the_oldest_batch_needs_no_barrier() {
        let mut sequencer = Sequencer::new(true);
        sequencer.adopt_identity((7, 0), []);
        sequencer.stamp(5);
        sequencer.refused(1);
        let stamps = sequencer.adopt_identity((8, 0), [(1, 5)]);
        assert_eq!(stamps, [(1, stamp(8, 0))]);
        assert_eq!(sequencer.order_barrier(), None);
    }
}
