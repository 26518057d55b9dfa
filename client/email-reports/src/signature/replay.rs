//! The Mailgun replay cache: the tokens of requests already *accepted*, so the same signature
//! block cannot be used twice.
//!
//! Mailgun's signature covers only `timestamp ++ token`, not the body: whoever has seen one
//! signed request could attach its signature block to any `event-data` until the timestamp
//! leaves the window. Remembering accepted tokens for the window closes that.
//!
//! **Acceptance, not verification, consumes a token.** A request that verified but then got a
//! 503 (the cluster could not take the write) is retried by Mailgun with the same body; had the
//! verification consumed the token, the retry would be refused as a replay and the event lost.
//! So the verifier only *looks* ([`ReplayCache::contains`]) and the HTTP layer *records*
//! ([`ReplayCache::record`], via `Verifier::mark_accepted`) after the write it answers 2xx for.
//! The cost: two copies of one request racing each other can both pass. For an authentic
//! duplicate the events' dedup ids absorb it.
//!
//! **Bounded:** at most `capacity` tokens; entries leave when their timestamp is older than the
//! window (a token that old is refused by the window anyway), and the oldest inserted go first
//! when full. Capacity below (peak accepted Mailgun POSTs per second × window) weakens the
//! replay defence for the oldest tokens, never refuses a fresh request.
//!
//! **Concurrency:** one `Mutex`, held for a hash lookup or insert and never across IO, so
//! `verify` can take `&self` from many handler tasks.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use super::freshness::MAX_FUTURE_SKEW_SECS;

/// The accepted tokens of the last window, bounded.
#[derive(Debug)]
pub(super) struct ReplayCache {
    capacity: usize,
    max_age_secs: i64,
    state: Mutex<Tokens>,
}

#[derive(Debug, Default)]
struct Tokens {
    present: HashSet<String>,
    /// `(signature timestamp, token)` in insertion order: the eviction order.
    order: VecDeque<(i64, String)>,
}

impl ReplayCache {
    pub(super) fn new(capacity: usize, max_age_secs: i64) -> Self {
        ReplayCache {
            capacity,
            max_age_secs,
            state: Mutex::new(Tokens::default()),
        }
    }

    /// Whether an accepted request already used `token`.
    pub(super) fn contains(&self, token: &str) -> bool {
        self.lock().present.contains(token)
    }

    /// Remembers `token` (signed at `timestamp`) as used. Idempotent.
    pub(super) fn record(&self, token: &str, timestamp: i64, now_unix_secs: i64) {
        let mut tokens = self.lock();
        // Tokens signed before this can no longer pass the window, so need not be remembered.
        // Insertion order is nearly timestamp order; a late-inserted older token merely stays a
        // little longer.
        let horizon = now_unix_secs
            .saturating_sub(self.max_age_secs)
            .saturating_sub(MAX_FUTURE_SKEW_SECS);
        while tokens.order.front().is_some_and(|(signed_at, _)| *signed_at < horizon) {
            tokens.evict_oldest();
        }
        if tokens.present.contains(token) {
            return;
        }
        while !tokens.order.is_empty() && tokens.order.len() >= self.capacity {
            tokens.evict_oldest();
        }
        tokens.present.insert(token.to_owned());
        tokens.order.push_back((timestamp, token.to_owned()));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().order.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        // Every mutation leaves both collections consistent before it can panic, so a poisoned
        // lock still guards valid state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Tokens {
    fn evict_oldest(&mut self) {
        if let Some((_, token)) = self.order.pop_front() {
            self.present.remove(&token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_recognises_tokens() {
        let cache = ReplayCache::new(10, 600);
        assert!(!cache.contains("a"));
        cache.record("a", 1000, 1000);
        assert!(cache.contains("a"));
        cache.record("a", 1000, 1001);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn tokens_older_than_the_window_are_forgotten() {
        let cache = ReplayCache::new(10, 600);
        cache.record("old", 1000, 1000);
        cache.record("new", 1500, 1500);
        // At 1661 "old" (signed at 1000) is past 600 s + the 60 s skew allowance.
        cache.record("newer", 1661, 1661);
        assert!(!cache.contains("old"));
        assert!(cache.contains("new") && cache.contains("newer"));
    }

    #[test]
    fn capacity_evicts_the_oldest_first() {
        let cache = ReplayCache::new(2, 600);
        cache.record("a", 1000, 1000);
        cache.record("b", 1000, 1000);
        cache.record("c", 1000, 1000);
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains("a"));
        assert!(cache.contains("b") && cache.contains("c"));
    }
}
