//! Offsets as values: when an auto-commit is due, which positions need committing, where a
//! newly assigned partition starts, and what a refused commit asks of the member. Pure: no
//! tokio, no IO, no clock.

use super::membership::Partition;
use crate::consumer::{OffsetReset, SeekTo};
use proto::v1::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Whether the periodic auto-commit is due at the start of a `poll`: auto-commit is on and
/// `interval` has passed since the last one.
pub(crate) fn auto_commit_due(enabled: bool, last: Instant, now: Instant, interval: Duration) -> bool {
    enabled && now.saturating_duration_since(last) >= interval
}

/// The positions to commit: those of `partitions` (every position if `None`) that differ
/// from what the group is known to hold. A position is the next offset to consume.
pub(crate) fn offsets_to_commit(
    positions: &BTreeMap<Partition, u64>,
    committed: &BTreeMap<Partition, u64>,
    partitions: Option<&[Partition]>,
) -> Vec<(Partition, u64)> {
    positions
        .iter()
        .filter(|(tp, _)| partitions.is_none_or(|only| only.contains(tp)))
        .filter(|(tp, offset)| committed.get(*tp) != Some(*offset))
        .map(|(tp, offset)| (tp.clone(), *offset))
        .collect()
}

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// At the group's committed offset.
    Committed(u64),
    /// Nothing committed: where `auto_offset_reset` says.
    Reset(SeekTo),
    /// Nothing committed and `auto_offset_reset` is `None`: an error for the application.
    NoPosition,
}

/// Where a partition with `committed` (if any) starts under `reset`.
pub(crate) fn start_at(committed: Option<u64>, reset: OffsetReset) -> StartAt {
    match (committed, reset) {
        (Some(offset), _) => StartAt::Committed(offset),
        (None, OffsetReset::Earliest) => StartAt::Reset(SeekTo::Earliest),
        (None, OffsetReset::Latest) => StartAt::Reset(SeekTo::Latest),
        (None, OffsetReset::None) => StartAt::NoPosition,
    }
}

/// Whether a commit refused with `code` means the member should heartbeat at once: its epoch
/// is stale (the heartbeat brings the current one) or it is no longer a member (the heartbeat
/// finds out, and `poll` then reports the partitions lost).
pub(crate) fn commit_needs_heartbeat(code: Option<ErrorCode>) -> bool {
    matches!(
        code,
        Some(ErrorCode::StaleMemberEpoch | ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch)
    )
}

/// Records what the group now holds after a successful commit of `offsets`. An older commit
/// that completes after a newer one does not move a partition back.
pub(crate) fn remember_committed(committed: &mut BTreeMap<Partition, u64>, offsets: &[(Partition, u64)]) {
    for (tp, offset) in offsets {
        let slot = committed.entry(tp.clone()).or_insert(*offset);
        *slot = (*slot).max(*offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: u32) -> Partition {
        (topic.to_string(), partition)
    }

    #[test]
    fn auto_commit_is_due_once_the_interval_has_passed() {
        let last = Instant::now();
        let interval = Duration::from_secs(5);
        assert!(!auto_commit_due(
            true,
            last,
            last + Duration::from_millis(4999),
            interval
        ));
        assert!(auto_commit_due(true, last, last + interval, interval));
        assert!(!auto_commit_due(false, last, last + interval * 10, interval));
        // A clock that reads earlier than `last` is never due (no underflow).
        assert!(!auto_commit_due(true, last + interval, last, interval));
    }

    #[test]
    fn commits_only_positions_that_moved_and_only_of_the_partitions_asked() {
        let positions: BTreeMap<Partition, u64> = [(tp("a", 0), 10), (tp("a", 1), 5), (tp("b", 0), 7)].into();
        let committed: BTreeMap<Partition, u64> = [(tp("a", 0), 10), (tp("a", 1), 3)].into();
        assert_eq!(
            offsets_to_commit(&positions, &committed, None),
            [(tp("a", 1), 5), (tp("b", 0), 7)]
        );
        assert_eq!(
            offsets_to_commit(&positions, &committed, Some(&[tp("b", 0), tp("a", 0)])),
            [(tp("b", 0), 7)]
        );
        assert!(offsets_to_commit(&positions, &positions, None).is_empty());
    }

    #[test]
    fn a_committed_offset_wins_over_the_reset_rule() {
        assert_eq!(start_at(Some(42), OffsetReset::Latest), StartAt::Committed(42));
        assert_eq!(start_at(Some(0), OffsetReset::None), StartAt::Committed(0));
        assert_eq!(start_at(None, OffsetReset::Earliest), StartAt::Reset(SeekTo::Earliest));
        assert_eq!(start_at(None, OffsetReset::Latest), StartAt::Reset(SeekTo::Latest));
        assert_eq!(start_at(None, OffsetReset::None), StartAt::NoPosition);
    }

    #[test]
    fn stale_or_lost_membership_asks_for_a_heartbeat() {
        assert!(commit_needs_heartbeat(Some(ErrorCode::StaleMemberEpoch)));
        assert!(commit_needs_heartbeat(Some(ErrorCode::UnknownMemberId)));
        assert!(commit_needs_heartbeat(Some(ErrorCode::FencedMemberEpoch)));
        assert!(!commit_needs_heartbeat(Some(ErrorCode::PartitionNotAssigned)));
        assert!(!commit_needs_heartbeat(None));
    }

    #[test]
    fn a_late_older_commit_does_not_move_a_partition_back() {
        let mut committed = BTreeMap::new();
        remember_committed(&mut committed, &[(tp("a", 0), 10)]);
        remember_committed(&mut committed, &[(tp("a", 0), 8), (tp("a", 1), 1)]);
        assert_eq!(committed, [(tp("a", 0), 10), (tp("a", 1), 1)].into());
    }
}
