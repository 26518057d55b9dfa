//! Retention decisions: which leading segments of a log may be deleted. Pure: takes facts about
//! the segments and `now`, returns a count.

/// What retention needs to know of one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFacts {
    /// Bytes in the segment.
    pub size: u64,
    /// Largest record timestamp in it, -1 if it holds no records.
    pub max_timestamp: i64,
}

/// A topic's retention limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Keep segments holding a record newer than this many milliseconds.
    pub retention_ms: Option<u64>,
    /// Keep the log at or above this size, deleting the oldest segments beyond it.
    pub retention_bytes: Option<u64>,
}

/// How many leading segments to delete. The last (active) segment is never deleted. By time, a
/// segment goes once its newest record is older than `retention_ms`; by size, the oldest go
/// while the log would still hold at least `retention_bytes` without them (Kafka's rules). A
/// segment goes if either rule says so, and only whole prefixes are deleted.
pub fn segments_to_delete(segments: &[SegmentFacts], policy: RetentionPolicy, now_ms: i64) -> usize {
    let deletable = segments.len().saturating_sub(1);
    let by_time = policy.retention_ms.map_or(0, |retention_ms| {
        let cutoff = now_ms.saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX));
        segments[..deletable]
            .iter()
            .take_while(|s| s.max_timestamp < cutoff)
            .count()
    });
    let by_size = policy.retention_bytes.map_or(0, |retention_bytes| {
        let mut total: u64 = segments.iter().map(|s| s.size).sum();
        segments[..deletable]
            .iter()
            .take_while(|s| {
                let keep = total - s.size >= retention_bytes;
                if keep {
                    total -= s.size;
                }
                keep
            })
            .count()
    });
    by_time.max(by_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(size: u64, max_timestamp: i64) -> SegmentFacts {
        SegmentFacts { size, max_timestamp }
    }

    #[test]
    fn time_retention_deletes_old_prefix_but_never_the_active_segment() {
        let segments = [segment(10, 100), segment(10, 200), segment(10, 900), segment(10, 50)];
        let policy = RetentionPolicy {
            retention_ms: Some(500),
            retention_bytes: None,
        };
        // cutoff = 1000 - 500 = 500: the first two are older, the third is not; the prefix stops.
        assert_eq!(segments_to_delete(&segments, policy, 1000), 2);
        // Everything is old, but the active (last) segment stays.
        assert_eq!(segments_to_delete(&segments, policy, 10_000), 3);
    }

    #[test]
    fn size_retention_keeps_at_least_the_limit() {
        let segments = [segment(100, 0), segment(100, 0), segment(100, 0), segment(50, 0)];
        let policy = RetentionPolicy {
            retention_ms: None,
            retention_bytes: Some(150),
        };
        // 350 total: dropping the first leaves 250 >= 150, the second 150 >= 150, the third 50 < 150.
        assert_eq!(segments_to_delete(&segments, policy, 0), 2);
        let unlimited = RetentionPolicy::default();
        assert_eq!(segments_to_delete(&segments, unlimited, i64::MAX), 0);
    }
}
