//! The leader's admission check for idempotent batches: the committed [`ProducerTable`] plus
//! the batches this leader has proposed in its current term but not yet applied. Together they
//! say whether a batch is the producer's next one (propose it), a retry of one already in the
//! log (answer with its offset) or of one still in flight (wait for it), or breaks the rules.
//!
//! Why a leader-side check and not only the state machine: offsets are assigned as entries enter
//! the log, so a duplicate that reached the log would take offsets. Checking before proposing,
//! under one lock per partition, keeps duplicates out of the log. It is sound because a leader
//! admits nothing until an entry of its own term is applied — by then the table reflects every
//! entry its predecessors committed — and, after its term changes or a proposal fails, admits
//! nothing until every proposal it handed to Raft has resolved (a proposal made under one term
//! can land in the log after the next term's first entry).

use super::producer_state::{judge, sequence_at_or_before, BatchIdentity, ProducerTable, SequenceVerdict};
use crate::storage::Offset;
use std::collections::{HashMap, VecDeque};

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Propose it (and record it as in flight).
    Propose,
    /// Already committed at this offset.
    Duplicate(Offset),
    /// A retry of a batch still in flight: wait until it is applied, then ask again.
    AwaitInFlight,
    /// An earlier batch of the producer has not arrived yet (requests can overtake each
    /// other): wait a little, then ask again; if it never comes, refuse with `then`.
    AwaitGap {
        /// The refusal if the gap stays.
        then: SequenceVerdict,
    },
    /// Refuse it.
    Refuse(SequenceVerdict),
}

#[derive(Debug, Default)]
struct InFlightProducer {
    epoch: i16,
    /// (first, last) sequences proposed and not yet seen applied, in proposal order.
    batches: VecDeque<(i32, i32)>,
}

/// Batches proposed by this leader in `term` and not yet applied.
#[derive(Debug, Default)]
pub struct InFlightBatches {
    term: u64,
    producers: HashMap<i64, InFlightProducer>,
    /// Set when a proposal failed or the term changed: which proposals reached the log (and in
    /// which term) is unknown, so nothing is admitted until every outstanding proposal has
    /// resolved (applied, so in the table, or refused) — then the table alone is authoritative.
    must_drain: bool,
    /// Proposals handed to Raft whose outcome is not known yet.
    outstanding: usize,
}

impl InFlightBatches {
    /// A proposal failed after it was handed to Raft (refused, or its outcome is unknown):
    /// forget the in-flight view and admit nothing until every outstanding proposal resolved.
    pub fn proposal_failed(&mut self) {
        self.producers.clear();
        self.must_drain = true;
    }

    /// A proposal's outcome arrived (applied or refused).
    pub fn resolved(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
    }

    /// Decides on `batch` for a leader in `term`, given the committed `table`.
    pub fn admit(&mut self, term: u64, table: &ProducerTable, batch: &BatchIdentity) -> Admission {
        if self.term != term {
            // A proposal made under the old term may still land in the log — even after this
            // leader's first entry of the new term — so the view is dropped and admission waits
            // until every outstanding proposal has resolved.
            self.producers.clear();
            self.term = term;
            self.must_drain = true;
        }
        if self.must_drain {
            if self.outstanding > 0 {
                return Admission::AwaitInFlight;
            }
            self.must_drain = false;
        }
        let committed = table.get(batch.producer_id);
        if let Some(in_flight) = self.producers.get_mut(&batch.producer_id) {
            if let Some(committed) = committed {
                if committed.epoch > in_flight.epoch {
                    in_flight.batches.clear();
                } else if committed.epoch == in_flight.epoch {
                    if let Some(last) = committed.last_sequence() {
                        while in_flight
                            .batches
                            .front()
                            .is_some_and(|(_, proposed_last)| sequence_at_or_before(*proposed_last, last))
                        {
                            in_flight.batches.pop_front();
                        }
                    }
                }
            }
            if in_flight.batches.is_empty() {
                self.producers.remove(&batch.producer_id);
            }
        }
        if let SequenceVerdict::Duplicate(offset) = table.check(batch) {
            return Admission::Duplicate(offset);
        }
        let in_flight = self.producers.get(&batch.producer_id);
        if let Some(in_flight) = in_flight {
            if in_flight.epoch == batch.epoch
                && in_flight.batches.contains(&(batch.first_sequence, batch.last_sequence))
            {
                return Admission::AwaitInFlight;
            }
        }
        let known = match in_flight {
            Some(in_flight) => Some((in_flight.epoch, in_flight.batches.back().map(|(_, last)| *last))),
            None => committed.map(|entry| (entry.epoch, entry.last_sequence())),
        };
        match judge(known, batch) {
            SequenceVerdict::Append => Admission::Propose,
            gap @ (SequenceVerdict::Gap { .. } | SequenceVerdict::UnknownProducer) => Admission::AwaitGap { then: gap },
            refused => Admission::Refuse(refused),
        }
    }

    /// Records that `batch` was proposed.
    pub fn proposed(&mut self, batch: &BatchIdentity) {
        self.outstanding += 1;
        let entry = self.producers.entry(batch.producer_id).or_default();
        if entry.epoch != batch.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        entry.batches.push_back((batch.first_sequence, batch.last_sequence));
    }

    /// Forgets a proposal that never reached the Raft core.
    pub fn withdraw(&mut self, batch: &BatchIdentity) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if let Some(entry) = self.producers.get_mut(&batch.producer_id) {
            entry
                .batches
                .retain(|b| *b != (batch.first_sequence, batch.last_sequence));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, count: i32) -> BatchIdentity {
        BatchIdentity::new(9, 0, first, count)
    }

    #[test]
    fn pipelined_batches_are_admitted_in_order_and_retries_wait_or_dedupe() {
        let mut table = ProducerTable::default();
        let mut in_flight = InFlightBatches::default();
        assert_eq!(in_flight.admit(3, &table, &batch(0, 10)), Admission::Propose);
        in_flight.proposed(&batch(0, 10));
        // The next batch is admitted while the first is still in flight.
        assert_eq!(in_flight.admit(3, &table, &batch(10, 10)), Admission::Propose);
        in_flight.proposed(&batch(10, 10));
        // A batch that overtook its predecessor waits for it.
        assert_eq!(
            in_flight.admit(3, &table, &batch(30, 10)),
            Admission::AwaitGap {
                then: SequenceVerdict::Gap { expected: 20 }
            }
        );
        // A retry of an in-flight batch waits; once applied it is a duplicate.
        assert_eq!(in_flight.admit(3, &table, &batch(0, 10)), Admission::AwaitInFlight);
        table.record(&batch(0, 10), Offset(500));
        assert_eq!(
            in_flight.admit(3, &table, &batch(0, 10)),
            Admission::Duplicate(Offset(500))
        );
        assert_eq!(in_flight.admit(3, &table, &batch(20, 10)), Admission::Propose);
    }

    #[test]
    fn a_first_batch_overtaken_by_the_second_is_waited_for() {
        let table = ProducerTable::default();
        let mut in_flight = InFlightBatches::default();
        assert_eq!(
            in_flight.admit(1, &table, &batch(10, 10)),
            Admission::AwaitGap {
                then: SequenceVerdict::UnknownProducer
            }
        );
        assert_eq!(in_flight.admit(1, &table, &batch(0, 10)), Admission::Propose);
        in_flight.proposed(&batch(0, 10));
        assert_eq!(in_flight.admit(1, &table, &batch(10, 10)), Admission::Propose);
    }

    #[test]
    fn a_new_term_waits_for_the_old_terms_proposals_then_forgets_them() {
        let table = ProducerTable::default();
        let mut in_flight = InFlightBatches::default();
        assert_eq!(in_flight.admit(3, &table, &batch(0, 10)), Admission::Propose);
        in_flight.proposed(&batch(0, 10));
        // The old proposal may still land in the new term's log: wait until it resolves.
        assert_eq!(in_flight.admit(4, &table, &batch(0, 10)), Admission::AwaitInFlight);
        assert_eq!(in_flight.admit(4, &table, &batch(10, 10)), Admission::AwaitInFlight);
        // It was refused (never appended): the retry is proposed afresh.
        in_flight.resolved();
        in_flight.proposal_failed();
        assert_eq!(in_flight.admit(4, &table, &batch(0, 10)), Admission::Propose);
    }

    #[test]
    fn an_in_flight_view_behind_a_newer_committed_epoch_is_dropped() {
        let mut table = ProducerTable::default();
        let mut in_flight = InFlightBatches::default();
        in_flight.admit(1, &table, &batch(0, 1));
        in_flight.proposed(&batch(0, 1));
        table.record(&BatchIdentity::new(9, 1, 0, 1), Offset(0));
        assert_eq!(
            in_flight.admit(1, &table, &batch(1, 1)),
            Admission::Refuse(SequenceVerdict::Fenced { current: 1 })
        );
    }
}
