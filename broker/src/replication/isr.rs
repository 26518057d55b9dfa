//! In-sync replicas: which followers are close enough to the leader to count as caught up.
//! Pure: takes the leader's view of each follower (matched index, time since its last
//! acknowledgement) and the bounds, returns the set.

use std::time::Duration;

/// The leader's view of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerProgress {
    /// Node id.
    pub node: u64,
    /// Highest log index known to match the leader's log.
    pub matched_index: Option<u64>,
    /// Time since the follower last acknowledged anything, if it ever did.
    pub since_last_ack: Option<Duration>,
}

/// Bounds for being in sync (Kafka's `replica.lag.time.max.ms`, plus an entry bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrBounds {
    /// Most entries a follower may trail the leader's last entry by.
    pub max_lag_entries: u64,
    /// Longest a follower may go without acknowledging.
    pub max_lag_time: Duration,
}

impl Default for IsrBounds {
    fn default() -> Self {
        IsrBounds {
            max_lag_entries: 10_000,
            max_lag_time: Duration::from_secs(10),
        }
    }
}

/// The in-sync replicas: the leader itself plus every follower within both bounds, sorted.
pub fn in_sync_replicas(
    leader: u64,
    leader_last_index: Option<u64>,
    followers: &[FollowerProgress],
    bounds: IsrBounds,
) -> Vec<u64> {
    let last = leader_last_index.unwrap_or(0);
    let mut isr: Vec<u64> = followers
        .iter()
        .filter(|f| f.node != leader)
        .filter(|f| {
            let caught_up = match f.matched_index {
                Some(matched) => last.saturating_sub(matched) <= bounds.max_lag_entries,
                None => leader_last_index.is_none(),
            };
            let responsive = f.since_last_ack.is_some_and(|ago| ago <= bounds.max_lag_time);
            caught_up && responsive
        })
        .map(|f| f.node)
        .collect();
    isr.push(leader);
    isr.sort_unstable();
    isr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(node: u64, matched: Option<u64>, ago_ms: Option<u64>) -> FollowerProgress {
        FollowerProgress {
            node,
            matched_index: matched,
            since_last_ack: ago_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn lagging_or_silent_followers_leave_the_isr() {
        let bounds = IsrBounds {
            max_lag_entries: 100,
            max_lag_time: Duration::from_secs(10),
        };
        let followers = [
            follower(2, Some(950), Some(50)),      // in sync
            follower(3, Some(800), Some(50)),      // too far behind
            follower(4, Some(1000), Some(20_000)), // silent too long
            follower(5, None, None),               // never answered
        ];
        assert_eq!(in_sync_replicas(1, Some(1000), &followers, bounds), vec![1, 2]);
    }
}
