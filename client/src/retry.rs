//! The client's one retry rule: exponential backoff, capped, optionally jittered, within a
//! deadline.
//!
//! Every retrying loop of the client — the [`Cluster`](crate::Cluster)'s calls, the producer's
//! metadata lookups and its batch resends — asks [`Backoff`] how long to wait after a failure
//! and whether that wait still ends before its deadline. It is pure: failures, elapsed time and
//! the deadline go in, a wait (or "give up") comes out; the callers own the clock and the sleep.

use std::time::Duration;

/// Kafka's retry jitter (KIP-580): each wait is within ±20 % of the doubled one (and never above
/// the cap).
pub const RETRY_JITTER: f64 = 0.2;

/// How long and how often the [`Cluster`](crate::Cluster) retries retriable errors.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up once this much time has passed since the call began.
    pub deadline: Duration,
    /// First backoff; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(30),
            // Kafka's retry.backoff.ms is 100 ms; a leader change is the common retriable error
            // and a long backoff would add directly to the failover time a producer sees.
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        }
    }
}

impl RetryPolicy {
    /// The backoff this policy retries with.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::jittered(self.initial_backoff, self.max_backoff)
    }
}

/// The wait before each retry: `initial` after the first failure, doubling after each further
/// one, never more than `max`. With jitter, each wait is scaled by a factor drawn from
/// `[1 - jitter, 1 + jitter]` (then capped), so clients that failed together do not retry in
/// step; the factor is a hash of a seed and the failure count, so it is reproducible.
///
/// The client's loops use [`Backoff::jittered`]: Kafka's ±20 % (KIP-580), seeded per loop, so
/// producers that lost the same leader spread their retries instead of arriving together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    seed: u64,
}

impl Backoff {
    /// Doubling from `initial` up to `max` with Kafka's jitter ([`RETRY_JITTER`]), from a seed
    /// drawn for this backoff: what the client's retry loops use.
    pub fn jittered(initial: Duration, max: Duration) -> Backoff {
        use std::hash::BuildHasher;
        // RandomState is keyed afresh per instance: a cheap, std-only source of a seed.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
        Backoff::new(initial, max).with_jitter(RETRY_JITTER, seed)
    }

    /// Doubling from `initial` up to `max`, without jitter.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            jitter: 0.0,
            seed: 0,
        }
    }

    /// The same, each wait scaled by a factor within `1 ± fraction` (`fraction` is clamped to
    /// `0..=1`), drawn from `seed` and the failure count.
    pub fn with_jitter(self, fraction: f64, seed: u64) -> Backoff {
        Backoff {
            jitter: if fraction.is_nan() {
                0.0
            } else {
                fraction.clamp(0.0, 1.0)
            },
            seed,
            ..self
        }
    }

    /// The wait after the `failures`-th failure in a row (1 for the first): `initial ×
    /// 2^(failures-1)`, jittered, and at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        // 2^31 × any wait above a nanosecond is past any sensible cap; the exponent stops there
        // so the multiplication cannot overflow into a panic.
        let exponent = failures.saturating_sub(1).min(31);
        let doubled = self.initial.checked_mul(1 << exponent).unwrap_or(Duration::MAX);
        // Capped before the jitter too, so waits at the cap still spread (over [max·(1−j), max])
        // instead of every client retrying in step once the cap is reached.
        let capped = doubled.min(self.max);
        let jittered = if self.jitter > 0.0 {
            let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit_sample(self.seed, failures);
            Duration::try_from_secs_f64(capped.as_secs_f64() * factor).unwrap_or(Duration::MAX)
        } else {
            capped
        };
        jittered.min(self.max)
    }

    /// Whether to retry after the `failures`-th failure, `elapsed` into an operation that must
    /// be over by `deadline`: `Some(wait)` if the wait ends before the deadline, `None` to give
    /// up now (a retry could not be answered in time anyway).
    pub fn retry_after(&self, failures: u32, elapsed: Duration, deadline: Duration) -> Option<Duration> {
        let wait = self.delay(failures);
        (elapsed.saturating_add(wait) < deadline).then_some(wait)
    }
}

/// A number in `[0, 1)` from `seed` and `failures` (splitmix64): spread, not secrecy.
fn unit_sample(seed: u64, failures: u32) -> f64 {
    let mut x = seed ^ u64::from(failures).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_the_first_wait() {
        let backoff = Backoff::new(ms(10), ms(1000));
        let waits: Vec<Duration> = (1..=7).map(|n| backoff.delay(n)).collect();
        assert_eq!(waits, [ms(10), ms(20), ms(40), ms(80), ms(160), ms(320), ms(640)]);
        // Zero failures (nothing failed yet) waits like the first.
        assert_eq!(backoff.delay(0), ms(10));
    }

    #[test]
    fn stops_at_the_cap() {
        let backoff = Backoff::new(ms(10), ms(1000));
        assert_eq!(backoff.delay(8), ms(1000));
        assert_eq!(backoff.delay(9), ms(1000));
        assert_eq!(backoff.delay(u32::MAX), ms(1000));
        // A cap that is not a power-of-two multiple of the first wait is reached exactly.
        let backoff = Backoff::new(ms(10), ms(100));
        assert_eq!(backoff.delay(4), ms(80));
        assert_eq!(backoff.delay(5), ms(100));
        // A huge cap is never overflowed into a panic.
        let backoff = Backoff::new(Duration::from_secs(1), Duration::MAX);
        assert_eq!(backoff.delay(40), Duration::from_secs(1 << 31));
    }

    #[test]
    fn the_cluster_policy_defaults_are_10ms_doubling_to_100ms_with_kafkas_jitter() {
        let backoff = RetryPolicy::default().backoff();
        let plain = [ms(10), ms(20), ms(40), ms(80), ms(100), ms(100)];
        for (failures, plain) in (1..=6).zip(plain) {
            let wait = backoff.delay(failures);
            assert!(
                wait >= plain.mul_f64(1.0 - RETRY_JITTER) && wait <= plain.mul_f64(1.0 + RETRY_JITTER).min(ms(100)),
                "{failures}: {wait:?}"
            );
        }
        // Two loops' seeds differ, so their waits do (with overwhelming likelihood), at the cap
        // too: clients that keep failing do not retry in step.
        for failures in [3, 9] {
            let waits: std::collections::HashSet<Duration> = (0..20)
                .map(|_| RetryPolicy::default().backoff().delay(failures))
                .collect();
            assert!(
                waits.len() > 1,
                "every loop drew the same wait after {failures} failures"
            );
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_under_the_cap() {
        for seed in 0..500 {
            let backoff = Backoff::new(ms(100), ms(1000)).with_jitter(0.2, seed);
            for failures in 1..=4 {
                let plain = ms(100) * (1 << (failures - 1));
                let wait = backoff.delay(failures);
                assert!(
                    wait >= plain.mul_f64(0.8) && wait <= plain.mul_f64(1.2),
                    "{seed}/{failures}: {wait:?}"
                );
            }
            // At the cap the waits still spread, over [80 %, 100 %] of it.
            let at_cap = backoff.delay(5);
            assert!(at_cap >= ms(800) && at_cap <= ms(1000), "{seed}: {at_cap:?}");
        }
    }

    #[test]
    fn jitter_spreads_and_is_reproducible() {
        let waits: std::collections::HashSet<Duration> = (0..100)
            .map(|seed| Backoff::new(ms(100), ms(1000)).with_jitter(0.5, seed).delay(1))
            .collect();
        assert!(waits.len() > 50, "only {} distinct waits", waits.len());
        let backoff = Backoff::new(ms(100), ms(1000)).with_jitter(0.5, 42);
        assert_eq!(backoff.delay(3), backoff.delay(3));
        // Out-of-range fractions are clamped: never a negative factor.
        let wild = Backoff::new(ms(100), ms(1000)).with_jitter(7.0, 1);
        assert!(wild.delay(1) <= ms(200));
        assert_eq!(Backoff::new(ms(100), ms(1000)).with_jitter(0.0, 9).delay(2), ms(200));
    }

    #[test]
    fn retries_only_while_the_wait_ends_before_the_deadline() {
        let backoff = Backoff::new(ms(10), ms(1000));
        assert_eq!(backoff.retry_after(1, ms(0), ms(100)), Some(ms(10)));
        assert_eq!(backoff.retry_after(3, ms(59), ms(100)), Some(ms(40)));
        // Ending exactly at the deadline is too late.
        assert_eq!(backoff.retry_after(3, ms(60), ms(100)), None);
        assert_eq!(backoff.retry_after(1, ms(200), ms(100)), None);
        assert_eq!(backoff.retry_after(1, Duration::MAX, ms(100)), None);
    }
}
