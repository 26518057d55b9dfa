//! The delivery rules of one partition's sealed batches: which may be sent now, which expired,
//! and what an error means for a batch — retry after a backoff, re-stamp, or give up.
//!
//! Order is the point of most rules. Batches are sent oldest first and nothing later overtakes
//! a batch that may not go yet; while a batch is being retried no new batch goes out (otherwise
//! five later batches could land behind a retry whose first attempt was written, pushing it out
//! of the five batches the broker remembers, and its retry could no longer be matched to its
//! offset). A batch's `delivery_timeout` counts from when its first record was queued.
//!
//! Pure: a batch's [`Delivery`] progress, error codes and `now` go in, decisions come out. The
//! partition task sends, sleeps and answers the records' futures.

use crate::error::ClientError;
use crate::retry::Backoff;
use proto::v1::ErrorCode;
use std::time::{Duration, Instant};

/// Where one sealed batch stands.
#[derive(Debug)]
pub(super) struct Delivery {
    /// The batch's id: ids grow in sealing (= sequence) order.
    pub(super) id: u64,
    /// When its first record was queued: `delivery_timeout` counts from here.
    pub(super) created: Instant,
    /// An attempt is out.
    pub(super) in_flight: bool,
    /// Not sent (again) before this instant: a backoff.
    pub(super) not_before: Instant,
    /// Attempts made.
    pub(super) attempts: u32,
    /// Whether some attempt may have reached the broker (so the batch may be in the log).
    pub(super) maybe_written: bool,
    /// The error of the last attempt, while the batch is being retried.
    pub(super) last_error: Option<ClientError>,
}

impl Delivery {
    /// A batch just sealed at `now`, not sent yet.
    pub(super) fn new(id: u64, created: Instant, now: Instant) -> Self {
        Delivery {
            id,
            created,
            in_flight: false,
            not_before: now,
            attempts: 0,
            maybe_written: false,
            last_error: None,
        }
    }

    /// An attempt goes out.
    pub(super) fn start_attempt(&mut self) {
        self.in_flight = true;
        self.attempts += 1;
        self.maybe_written = true;
    }
}

/// What an error answer means for the batch it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorVerdict {
    /// `DUPLICATE_SEQUENCE`: the batch was written long ago; its offset is no longer known.
    AlreadyWritten,
    /// Send it again, not before this instant.
    Retry {
        /// End of the backoff.
        not_before: Instant,
    },
    /// It was refused, so it is not in the log, and nothing after it can be: re-stamp it and
    /// the later batches under a new producer id and send them again.
    Restamp,
    /// Give up on it.
    Fail {
        /// A retriable error whose retry would end past `delivery_timeout`: the batch may or
        /// may not be written (a delivery timeout). Otherwise a refusal.
        timed_out: bool,
        /// The batches after it must not wait for it: re-stamp them (a refusal, idempotence on).
        restamp_later: bool,
    },
}

/// The delivery rules of a producer's configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct DeliveryRules {
    /// Batches carry producer stamps.
    pub(super) idempotent: bool,
    /// Attempts out at once, per partition.
    pub(super) max_in_flight: usize,
    /// From the first record queued to the batch's outcome.
    pub(super) delivery_timeout: Duration,
    /// One attempt at most.
    pub(super) request_timeout: Duration,
    /// Waits between attempts of one batch.
    pub(super) backoff: Backoff,
}

impl DeliveryRules {
    /// The batches to send now, as positions in `batches` (oldest first), given `in_flight`
    /// attempts already out and the sequencer's order barrier.
    pub(super) fn sendable<'a>(
        &self,
        batches: impl Iterator<Item = &'a Delivery> + Clone,
        in_flight: usize,
        barrier: Option<u64>,
        now: Instant,
    ) -> Vec<usize> {
        let recovering = batches.clone().any(|b| b.last_error.is_some());
        let mut out = in_flight;
        let mut picked = Vec::new();
        for (index, batch) in batches.enumerate() {
            if out >= self.max_in_flight {
                break;
            }
            if batch.in_flight {
                continue;
            }
            let behind_barrier = barrier.is_some_and(|barrier| batch.id >= barrier);
            if batch.not_before > now || (recovering && batch.attempts == 0) || behind_barrier {
                // Keep order: nothing later goes first.
                break;
            }
            picked.push(index);
            out += 1;
        }
        picked
    }

    /// The timeout of an attempt starting `now`: `request_timeout`, or less if the batch's
    /// delivery timeout ends sooner (at least 1 ms).
    pub(super) fn attempt_timeout(&self, batch: &Delivery, now: Instant) -> Duration {
        let remaining = self
            .delivery_timeout
            .saturating_sub(now.saturating_duration_since(batch.created));
        self.request_timeout.min(remaining).max(Duration::from_millis(1))
    }

    /// The first batch (position in `batches`, oldest first) that waited past the delivery
    /// timeout without an attempt out. Batches are in creation order, so the scan stops at the
    /// first one not in flight that is still in time.
    pub(super) fn first_expired<'a>(&self, batches: impl Iterator<Item = &'a Delivery>, now: Instant) -> Option<usize> {
        for (index, batch) in batches.enumerate() {
            if batch.in_flight {
                continue;
            }
            return (now.saturating_duration_since(batch.created) >= self.delivery_timeout).then_some(index);
        }
        None
    }

    /// What to do with `batch` after an attempt failed at `now` with `code` (`None`: no broker
    /// answered), `retriable` per the client's rule. `earlier_unacked`: an older batch of the
    /// partition is still unacknowledged.
    pub(super) fn on_error(
        &self,
        batch: &Delivery,
        code: Option<ErrorCode>,
        retriable: bool,
        earlier_unacked: bool,
        now: Instant,
    ) -> ErrorVerdict {
        if code == Some(ErrorCode::DuplicateSequence) {
            return ErrorVerdict::AlreadyWritten;
        }
        // A sequence gap behind an unacknowledged batch heals once that one is written: retry.
        // On the oldest batch it means the broker lost or never had this producer's state.
        let sequence_gap =
            self.idempotent && matches!(code, Some(ErrorCode::OutOfOrderSequence | ErrorCode::UnknownProducerId));
        let retriable = retriable || (sequence_gap && earlier_unacked);
        let age = now.saturating_duration_since(batch.created);
        if retriable {
            if let Some(wait) = self.backoff.retry_after(batch.attempts, age, self.delivery_timeout) {
                return ErrorVerdict::Retry { not_before: now + wait };
            }
        }
        if sequence_gap {
            return ErrorVerdict::Restamp;
        }
        ErrorVerdict::Fail {
            timed_out: retriable,
            restamp_later: self.idempotent && !retriable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn rules(idempotent: bool) -> DeliveryRules {
        DeliveryRules {
            idempotent,
            max_in_flight: 5,
            delivery_timeout: ms(1000),
            request_timeout: ms(300),
            backoff: Backoff::new(ms(10), ms(100)),
        }
    }

    fn broker(code: ErrorCode) -> ClientError {
        ClientError::Broker {
            code,
            message: String::new(),
        }
    }

    /// `count` batches sealed at `t0`, ids from 1.
    fn batches(t0: Instant, count: u64) -> Vec<Delivery> {
        (1..=count).map(|id| Delivery::new(id, t0, t0)).collect()
    }

    #[test]
    fn batches_go_out_in_order_up_to_max_in_flight() {
        let t0 = Instant::now();
        let mut queue = batches(t0, 7);
        assert_eq!(rules(true).sendable(queue.iter(), 0, None, t0), [0, 1, 2, 3, 4]);
        for batch in &mut queue[..2] {
            batch.start_attempt();
        }
        assert_eq!(rules(true).sendable(queue.iter(), 2, None, t0), [2, 3, 4]);
        // A batch waiting out its backoff holds back every later one.
        queue[3].not_before = t0 + ms(5);
        assert_eq!(rules(true).sendable(queue.iter(), 2, None, t0), [2]);
        assert_eq!(rules(true).sendable(queue.iter(), 2, None, t0 + ms(5)), [2, 3, 4]);
    }

    #[test]
    fn no_new_batch_goes_out_while_one_is_retried() {
        let t0 = Instant::now();
        let mut queue = batches(t0, 3);
        queue[0].attempts = 1;
        queue[0].last_error = Some(broker(ErrorCode::NotLeader));
        assert_eq!(rules(true).sendable(queue.iter(), 0, None, t0), [0]);
    }

    #[test]
    fn restamped_batches_wait_behind_the_order_barrier() {
        let t0 = Instant::now();
        let queue = batches(t0, 4);
        assert_eq!(rules(true).sendable(queue.iter(), 0, Some(3), t0), [0, 1]);
    }

    #[test]
    fn an_attempt_never_outlives_the_delivery_timeout() {
        let t0 = Instant::now();
        let batch = Delivery::new(1, t0, t0);
        assert_eq!(rules(true).attempt_timeout(&batch, t0), ms(300));
        assert_eq!(rules(true).attempt_timeout(&batch, t0 + ms(900)), ms(100));
        assert_eq!(rules(true).attempt_timeout(&batch, t0 + ms(5000)), ms(1));
    }

    #[test]
    fn batches_expire_at_the_delivery_timeout_unless_in_flight() {
        let t0 = Instant::now();
        let mut queue = batches(t0, 2);
        queue.push(Delivery::new(3, t0 + ms(500), t0 + ms(500)));
        assert_eq!(rules(true).first_expired(queue.iter(), t0 + ms(999)), None);
        assert_eq!(rules(true).first_expired(queue.iter(), t0 + ms(1000)), Some(0));
        // An attempt out is waited for; the next one not in flight is looked at.
        queue[0].start_attempt();
        assert_eq!(rules(true).first_expired(queue.iter(), t0 + ms(1000)), Some(1));
        queue[1].start_attempt();
        // Batch 3 is younger: the scan stops there.
        assert_eq!(rules(true).first_expired(queue.iter(), t0 + ms(1000)), None);
        assert_eq!(rules(true).first_expired(queue.iter(), t0 + ms(1500)), Some(2));
    }

    #[test]
    fn retriable_errors_back_off_by_the_attempt_count() {
        let t0 = Instant::now();
        let mut batch = Delivery::new(1, t0, t0);
        batch.attempts = 1;
        let retry = |batch: &Delivery, now| rules(true).on_error(batch, Some(ErrorCode::NotLeader), true, false, now);
        assert_eq!(
            retry(&batch, t0),
            ErrorVerdict::Retry {
                not_before: t0 + ms(10)
            }
        );
        batch.attempts = 3;
        assert_eq!(
            retry(&batch, t0),
            ErrorVerdict::Retry {
                not_before: t0 + ms(40)
            }
        );
        batch.attempts = 9;
        assert_eq!(
            retry(&batch, t0),
            ErrorVerdict::Retry {
                not_before: t0 + ms(100)
            }
        );
        // A retry that would end past the delivery timeout is a delivery timeout now.
        let late = ErrorVerdict::Fail {
            timed_out: true,
            restamp_later: false,
        };
        assert_eq!(retry(&batch, t0 + ms(900)), late);
        // No broker answered: retriable as well.
        assert_eq!(
            rules(true).on_error(&batch, None, true, false, t0),
            ErrorVerdict::Retry {
                not_before: t0 + ms(100)
            }
        );
    }

    #[test]
    fn a_refusal_fails_the_batch_and_restamps_later_ones() {
        let t0 = Instant::now();
        let mut batch = Delivery::new(1, t0, t0);
        batch.attempts = 1;
        let code = Some(ErrorCode::RecordTooLarge);
        assert_eq!(
            rules(true).on_error(&batch, code, false, true, t0),
            ErrorVerdict::Fail {
                timed_out: false,
                restamp_later: true
            }
        );
        assert_eq!(
            rules(false).on_error(&batch, code, false, true, t0),
            ErrorVerdict::Fail {
                timed_out: false,
                restamp_later: false
            }
        );
    }

    #[test]
    fn a_sequence_gap_is_retried_behind_an_older_batch_and_restamped_otherwise() {
        let t0 = Instant::now();
        let mut batch = Delivery::new(2, t0, t0);
        batch.attempts = 1;
        for code in [ErrorCode::OutOfOrderSequence, ErrorCode::UnknownProducerId] {
            let error = broker(code);
            let verdict = |earlier_unacked, now| {
                rules(true).on_error(&batch, error.code(), error.is_retriable(), earlier_unacked, now)
            };
            assert_eq!(
                verdict(true, t0),
                ErrorVerdict::Retry {
                    not_before: t0 + ms(10)
                }
            );
            assert_eq!(verdict(false, t0), ErrorVerdict::Restamp);
            // Past the deadline, still re-stamped rather than failed: it is not in the log.
            assert_eq!(verdict(true, t0 + ms(995)), ErrorVerdict::Restamp);
            // Without idempotence it is a plain refusal.
            assert_eq!(
                rules(false).on_error(&batch, error.code(), error.is_retriable(), false, t0),
                ErrorVerdict::Fail {
                    timed_out: false,
                    restamp_later: false
                }
            );
        }
    }

    #[test]
    fn a_duplicate_sequence_means_written() {
        let t0 = Instant::now();
        let batch = Delivery::new(1, t0, t0);
        let code = Some(ErrorCode::DuplicateSequence);
        assert_eq!(
            rules(true).on_error(&batch, code, false, false, t0),
            ErrorVerdict::AlreadyWritten
        );
    }
}
