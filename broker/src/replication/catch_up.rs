//! Vote holding after lost storage: the rule ([`CatchUpRule`]) for when a replica that lost
//! entries it had acknowledged holds them again, and whom it may vote for until then. Pure:
//! values of the log in, decisions out.

use super::types::{LogId, PartitionRaft};
use crate::storage::{LostAcknowledged, StoredVote};

/// When a replica that lost acknowledged entries holds everything it had acknowledged again,
/// and whom it may vote for until then.
///
/// A committed entry the replica lost is, by Raft's leader completeness, in the log of every
/// leader since; so the replica holds it again once it has applied (that is, matched a leader's
/// log through) either the lost entry's index, or any entry of a later leader — whose log has
/// every entry of earlier leaders before its own. Until then it does not campaign, and it votes
/// only for a candidate whose last entry is at or after the lost one in Raft's log order: such
/// a log holds everything the replica had (log matching), so the vote cannot help elect a
/// leader without a committed entry — and two replicas that lost entries do not stall a
/// partition whose third replica has them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CatchUpRule {
    /// Applying an entry at this index or beyond is enough.
    index: u64,
    /// Applying an entry of a leader after this one (term, node) is enough.
    leader: (u64, u64),
}

impl CatchUpRule {
    pub(crate) fn after(lost: LostAcknowledged, vote: Option<StoredVote>) -> CatchUpRule {
        match lost {
            LostAcknowledged::Through(id) => CatchUpRule {
                index: id.index.0,
                leader: (id.term, id.leader_node),
            },
            // The mark is unreadable: anything up to the last term this replica voted in may
            // be missing, so only a leader elected after that will do.
            LostAcknowledged::Unknown => CatchUpRule {
                index: u64::MAX,
                leader: (vote.map_or(0, |v| v.term), u64::MAX),
            },
        }
    }

    pub(crate) fn is_met(&self, metrics: &openraft::RaftMetrics<PartitionRaft>) -> bool {
        metrics.last_applied.as_ref().is_some_and(|applied| {
            applied.index >= self.index || (applied.leader_id.term, applied.leader_id.node_id) > self.leader
        })
    }

    /// Whether a candidate whose last entry is `last` holds everything the replica lost.
    pub(crate) fn candidate_is_safe(&self, last: Option<&LogId>) -> bool {
        last.is_some_and(|last| {
            let leader = (last.leader_id.term, last.leader_id.node_id);
            leader > self.leader || (leader == self.leader && last.index >= self.index)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::types::log_id_of;
    use crate::storage::{EntryId, RaftIndex};

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        log_id_of(&EntryId {
            term,
            leader_node: node,
            index: RaftIndex(index),
        })
    }

    #[test]
    fn a_replica_that_lost_entries_votes_only_for_logs_that_hold_them() {
        let lost = EntryId {
            term: 5,
            leader_node: 2,
            index: RaftIndex(100),
        };
        let rule = CatchUpRule::after(LostAcknowledged::Through(lost), None);
        assert!(rule.candidate_is_safe(Some(&log_id(5, 2, 100))));
        assert!(rule.candidate_is_safe(Some(&log_id(5, 2, 140))));
        assert!(rule.candidate_is_safe(Some(&log_id(6, 1, 90))), "a later leader's log");
        assert!(!rule.candidate_is_safe(Some(&log_id(5, 2, 99))));
        assert!(!rule.candidate_is_safe(Some(&log_id(4, 3, 500))));
        assert!(!rule.candidate_is_safe(None));

        // Unknown loss: only a log with an entry of a term after the replica's last vote.
        let vote = StoredVote {
            term: 7,
            node: 1,
            committed: false,
        };
        let rule = CatchUpRule::after(LostAcknowledged::Unknown, Some(vote));
        assert!(!rule.candidate_is_safe(Some(&log_id(7, 3, 1_000))));
        assert!(rule.candidate_is_safe(Some(&log_id(8, 1, 10))));
    }
}
