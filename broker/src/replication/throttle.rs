//! The catch-up throttle: bytes per second a broker's partition leaders send to the learners a
//! replica move adds, copying a partition's log. One bucket per broker, shared by all its
//! leaders' learners; appends to voters never wait on it, so the copy of a moving partition
//! cannot starve the producers of the partitions it shares disks and links with (Kafka's
//! `leader.replication.throttled.rate`).
//!
//! The sender waits before an append to a learner goes out (`network`'s replication stream),
//! so the wait is never mistaken for a slow answer; which targets are learners of which group
//! the reassignment driver says ([`CatchUpThrottle::set_learners`]), as it adds them and until
//! they vote. A token bucket: up to one second's worth may pass at once, after which each
//! append waits until the rate has paid for it. Off (no wait) unless a rate is set. (A learner
//! that needs a snapshot — its leader's log purged past where it stands — gets it unthrottled.)

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A per-broker rate limit on learners' appends. Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct CatchUpThrottle {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bytes per second; 0 = off.
    rate: AtomicU64,
    /// Bytes that may pass now (negative: owed), and when that was computed.
    bucket: Mutex<Option<(f64, Instant)>>,
    /// Per group led here, the targets still copying its log.
    learners: Mutex<HashMap<u64, BTreeSet<u64>>>,
}

impl CatchUpThrottle {
    /// Sets the rate in bytes per second (`None`: off, appends pass at once).
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        let rate = bytes_per_sec.unwrap_or(0);
        if self.inner.rate.swap(rate, Ordering::Relaxed) != rate {
            *self.inner.bucket.lock().expect("throttle bucket") = None;
            tracing::info!(bytes_per_sec = ?bytes_per_sec, "replica catch-up throttle");
        }
    }

    /// The rate in bytes per second, if set.
    pub fn rate(&self) -> Option<u64> {
        match self.inner.rate.load(Ordering::Relaxed) {
            0 => None,
            rate => Some(rate),
        }
    }

    /// `learners` of `group` copy its log from this broker (empty: none does any more).
    pub fn set_learners(&self, group: u64, learners: BTreeSet<u64>) {
        let mut all = self.inner.learners.lock().expect("throttled learners");
        if learners.is_empty() {
            all.remove(&group);
        } else {
            all.insert(group, learners);
        }
    }

    /// Forgets the learners of every group but `moving`.
    pub fn retain_groups(&self, moving: &BTreeSet<u64>) {
        self.inner
            .learners
            .lock()
            .expect("throttled learners")
            .retain(|group, _| moving.contains(group));
    }

    /// Whether appends to `target` in `group` wait on the throttle: a rate is set and
    /// `target` copies the group's log as a learner. (Asked before an append's size is
    /// counted, so an unthrottled append costs one atomic load.)
    pub fn applies_to(&self, group: u64, target: u64) -> bool {
        self.rate().is_some()
            && self
                .inner
                .learners
                .lock()
                .expect("throttled learners")
                .get(&group)
                .is_some_and(|learners| learners.contains(&target))
    }

    /// Waits until `bytes` may pass: until the bucket is out of debt, then takes them (into
    /// debt if they are more than it holds) and waits for that debt to be paid — so even one
    /// append larger than a second's worth goes no faster than the rate. Dropped while it
    /// waits, the append gives its bytes back (it was not sent). An append that carries no
    /// entries (a heartbeat, a commit index) copies nothing and never waits: held behind the
    /// copy's debt, a learner's heartbeats would go quiet for seconds.
    pub async fn admit(&self, bytes: u64) {
        let Some(rate) = self.rate() else {
            return;
        };
        if bytes == 0 {
            return;
        }
        let rate = rate as f64;
        loop {
            let owed = {
                let mut bucket = self.inner.bucket.lock().expect("throttle bucket");
                let available = Self::refilled(&bucket, rate);
                if available >= 0.0 {
                    let left = available - bytes as f64;
                    *bucket = Some((left, Instant::now()));
                    break;
                }
                *bucket = Some((available, Instant::now()));
                -available
            };
            tokio::time::sleep(Duration::from_secs_f64(owed / rate)).await;
        }
        let refund = Refund {
            throttle: self,
            bytes: Some(bytes),
        };
        let owed = -Self::refilled(&self.inner.bucket.lock().expect("throttle bucket"), rate);
        if owed > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(owed / rate)).await;
        }
        refund.keep();
    }

    /// What the bucket holds now: what it held, plus the rate since, up to a second's worth.
    fn refilled(bucket: &Option<(f64, Instant)>, rate: f64) -> f64 {
        match bucket {
            Some((available, since)) => (available + since.elapsed().as_secs_f64() * rate).min(rate),
            None => rate,
        }
    }
}

/// Gives an admission's bytes back unless kept (the append it paid for was never sent).
struct Refund<'a> {
    throttle: &'a CatchUpThrottle,
    bytes: Option<u64>,
}

impl Refund<'_> {
    fn keep(mut self) {
        self.bytes = None;
    }
}

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        if let Some(bytes) = self.bytes {
            // Negative bytes: the charge undone.
            if let Some(rate) = self.throttle.rate() {
                let mut bucket = self.throttle.inner.bucket.lock().expect("throttle bucket");
                let available = CatchUpThrottle::refilled(&bucket, rate as f64);
                *bucket = Some(((available + bytes as f64).min(rate as f64), Instant::now()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_one_seconds_burst_bytes_pass_at_the_rate() {
        let throttle = CatchUpThrottle::default();
        let started = Instant::now();
        throttle.admit(10 << 20).await;
        // (Bounds far from the waits they tell apart: the machine may be slow, never early.)
        assert!(started.elapsed() < Duration::from_secs(5), "off: no wait");

        throttle.set_rate(Some(1 << 20));
        let started = Instant::now();
        throttle.admit(1 << 20).await;
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "the first second's worth passes at once"
        );
        for _ in 0..2 {
            throttle.admit(1 << 18).await;
        }
        // Half a MiB past the burst at 1 MiB/s: at least half a second (a sleep never ends early).
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );

        throttle.set_rate(None);
        let started = Instant::now();
        throttle.admit(100 << 20).await;
        assert!(started.elapsed() < Duration::from_secs(5), "lifted: no wait");
    }

    #[tokio::test]
    async fn an_append_without_entries_passes_while_the_bucket_is_in_debt() {
        let throttle = CatchUpThrottle::default();
        throttle.set_rate(Some(1 << 20));
        // A second's worth, then ten more: the bucket owes 10 s.
        throttle.admit(1 << 20).await;
        let paying = tokio::spawn({
            let throttle = throttle.clone();
            async move { throttle.admit(10 << 20).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        throttle.admit(0).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a heartbeat waited for the copy's debt"
        );
        paying.abort();
    }

    #[tokio::test]
    async fn only_learners_wait() {
        let throttle = CatchUpThrottle::default();
        throttle.set_learners(7, [4].into());
        assert!(!throttle.applies_to(7, 4), "no rate: nobody waits");
        throttle.set_rate(Some(1));
        assert!(throttle.applies_to(7, 4));
        assert!(!throttle.applies_to(7, 2), "a voter of group 7");
        assert!(!throttle.applies_to(8, 4), "4 in another group");
        throttle.retain_groups(&BTreeSet::new());
        assert!(!throttle.applies_to(7, 4), "forgotten");
        // The bucket's one byte goes at once; then 100 bytes at 1 byte/s.
        throttle.admit(1).await;
        let waited = tokio::time::timeout(Duration::from_millis(200), throttle.admit(100)).await;
        assert!(waited.is_err(), "a learner waits");
    }
}
