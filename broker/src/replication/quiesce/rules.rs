//! The quiescence rules as pure functions: values in (including `now`), decisions out; no
//! clock, no locks, no Raft node. The async code in [`groups`](super::groups) and
//! [`leader`](super::leader) gathers the values and carries the decisions out.
//!
//! - [`follower_agrees`]: whether a follower goes quiet when its leader proposes it.
//! - [`answer_candidate`]: what a quiet replica does with a (pre-)vote request — including the
//!   refusal window ([`REFUSAL_LIMIT`]).
//! - [`successor`]: which follower campaigns first when a quiet group's leader dies.

use super::Quiet;
use crate::replication::types::{LogId, Vote};
use std::time::Duration;
use tokio::time::Instant;

/// How long a quiet follower refuses candidates for a leader it hears pings from but no append:
/// a leader alive enough to ping but not reaching this group (its core stopped, a link fault
/// the pings do not share) must not keep the group leaderless. A live leader woken by the
/// candidate reaches the group well within it.
pub(crate) const REFUSAL_LIMIT: Duration = Duration::from_millis(750);

/// A leader's proposal to quiesce one group, as a follower received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuiesceProposal {
    /// The proposing leader.
    pub leader: u64,
    /// The leader's vote.
    pub vote: Vote,
    /// The leader's last (applied) entry.
    pub last: LogId,
}

/// What a follower knows of one group when a quiesce proposal for it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FollowerView {
    /// This broker runs the failure detector (without it nothing would wake the group if its
    /// leader died).
    pub runs_failure_detector: bool,
    /// The replica's votes are held (it lost acknowledged entries).
    pub votes_held: bool,
    /// The replica is a follower.
    pub is_follower: bool,
    /// Its vote.
    pub vote: Vote,
    /// The leader it follows.
    pub current_leader: Option<u64>,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Its last applied entry.
    pub last_applied: Option<LogId>,
}

/// Whether a follower agrees to quiesce: it runs the failure detector, is not held from
/// elections, follows the proposing leader under the same committed vote, and holds exactly
/// the leader's last entry and has applied it (so it knows the commit).
pub(crate) fn follower_agrees(view: &FollowerView, proposal: &QuiesceProposal) -> bool {
    view.runs_failure_detector
        && !view.votes_held
        && view.is_follower
        && view.vote == proposal.vote
        && view.vote.committed
        && view.current_leader == Some(proposal.leader)
        && view.last_log_index == Some(proposal.last.index)
        && view.last_applied == Some(proposal.last)
}

/// A (pre-)vote request, as the quiet-group rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidacy {
    /// The candidate's node id.
    pub candidate: u64,
    /// The candidate campaigns because the leader handed it the leadership.
    pub leadership_transfer: bool,
}

/// What a replica of a quiet group does with a (pre-)vote request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CandidateAnswer {
    /// Refuse, and wake at once: this is the quiet leader, and the candidate should hear from it.
    RefuseAndWake,
    /// Refuse and stay quiet: the leader is alive. `since` is when this spell of refusals began
    /// (to keep, so the refusals lapse after [`REFUSAL_LIMIT`]).
    Refuse {
        /// The first refusal of the spell.
        since: Instant,
    },
    /// Wake (a follower's timers restart later, so as not to split the vote) and let openraft's
    /// rules decide the vote.
    WakeAndVote,
}

/// The vote rule of a quiet group. The quiet leader refuses every candidate (and wakes) except
/// one it handed the leadership to. A quiet follower refuses while its leader is alive
/// (`leader_alive`: its pings reached us lately), unless the candidate is that leader or was
/// handed the leadership, and only for [`REFUSAL_LIMIT`] from the first refusal with no append
/// from the leader since (`quiet.refusing_since`); otherwise it wakes and votes.
pub(crate) fn answer_candidate(
    quiet: &Quiet,
    leader_alive: bool,
    candidacy: Candidacy,
    now: Instant,
) -> CandidateAnswer {
    if quiet.leading {
        return if candidacy.leadership_transfer {
            CandidateAnswer::WakeAndVote
        } else {
            CandidateAnswer::RefuseAndWake
        };
    }
    let since = quiet.refusing_since.unwrap_or(now);
    let within_window = now.saturating_duration_since(since) < REFUSAL_LIMIT;
    if leader_alive && !candidacy.leadership_transfer && candidacy.candidate != quiet.leader && within_window {
        CandidateAnswer::Refuse { since }
    } else {
        CandidateAnswer::WakeAndVote
    }
}

/// Whether `me` campaigns when `leader` dies: it is the [`successor`], and the voters alive as
/// this broker sees them (itself included) are a majority. A broker that sees no majority
/// alive cannot win an election, and is most likely the one that is cut off or stalled — a
/// stall past the dead-after time makes it see every peer dead at once; campaigning then for
/// every group it follows only loads the others.
pub(crate) fn campaigns_after_death(voters: &[u64], leader: u64, me: u64, alive: impl Fn(u64) -> bool) -> bool {
    let alive_or_me = |voter: u64| voter == me || alive(voter);
    let live = voters.iter().filter(|voter| alive_or_me(**voter)).count();
    live * 2 > voters.len() && successor(voters, leader, alive_or_me) == Some(me)
}

/// The voter that campaigns first when `leader` dies: the next one after it in id order whose
/// broker is `alive` (as this broker's failure detector sees it: with two brokers of a group
/// dead, the third must not wait for one of them).
pub(crate) fn successor(voters: &[u64], leader: u64, alive: impl Fn(u64) -> bool) -> Option<u64> {
    let mut sorted = voters.to_vec();
    sorted.sort_unstable();
    let position = sorted.iter().position(|v| *v == leader)?;
    (1..sorted.len())
        .map(|step| sorted[(position + step) % sorted.len()])
        .find(|voter| alive(*voter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::types::log_id_of;
    use crate::storage::{EntryId, RaftIndex};

    fn entry(term: u64, leader: u64, index: u64) -> LogId {
        log_id_of(&EntryId {
            term,
            leader_node: leader,
            index: RaftIndex(index),
        })
    }

    fn proposal() -> QuiesceProposal {
        QuiesceProposal {
            leader: 1,
            vote: Vote::new_committed(3, 1),
            last: entry(3, 1, 40),
        }
    }

    /// A follower of leader 1 in term 3 that holds and applied entry 40.
    fn in_step() -> FollowerView {
        FollowerView {
            runs_failure_detector: true,
            votes_held: false,
            is_follower: true,
            vote: Vote::new_committed(3, 1),
            current_leader: Some(1),
            last_log_index: Some(40),
            last_applied: Some(entry(3, 1, 40)),
        }
    }

    #[test]
    fn a_follower_in_step_with_its_leader_agrees_to_quiesce() {
        assert!(follower_agrees(&in_step(), &proposal()));
    }

    #[test]
    fn a_follower_refuses_to_quiesce_unless_every_condition_holds() {
        let cases = [
            (
                FollowerView {
                    runs_failure_detector: false,
                    ..in_step()
                },
                "no failure detector: nothing would wake it",
            ),
            (
                FollowerView {
                    votes_held: true,
                    ..in_step()
                },
                "held from elections",
            ),
            (
                FollowerView {
                    is_follower: false,
                    ..in_step()
                },
                "not a follower",
            ),
            (
                FollowerView {
                    vote: Vote::new_committed(4, 2),
                    ..in_step()
                },
                "another vote",
            ),
            (
                FollowerView {
                    vote: Vote::new(3, 1),
                    ..in_step()
                },
                "the same vote, not committed",
            ),
            (
                FollowerView {
                    current_leader: Some(2),
                    ..in_step()
                },
                "follows another leader",
            ),
            (
                FollowerView {
                    last_log_index: Some(41),
                    ..in_step()
                },
                "holds an entry past the leader's last",
            ),
            (
                FollowerView {
                    last_applied: Some(entry(3, 1, 39)),
                    ..in_step()
                },
                "has not applied the leader's last entry",
            ),
        ];
        for (view, why) in cases {
            assert!(!follower_agrees(&view, &proposal()), "{why}");
        }
    }

    fn quiet(leading: bool, refusing_since: Option<Instant>) -> Quiet {
        Quiet {
            leader: 1,
            leading,
            vote_json: Default::default(),
            voters: vec![1, 2, 3],
            me: 2,
            refusing_since,
            awaiting_leader: false,
        }
    }

    const CANDIDATE: Candidacy = Candidacy {
        candidate: 3,
        leadership_transfer: false,
    };

    #[test]
    fn a_quiet_follower_refuses_candidates_while_its_leader_is_alive() {
        let now = Instant::now();
        assert_eq!(
            answer_candidate(&quiet(false, None), true, CANDIDATE, now),
            CandidateAnswer::Refuse { since: now },
            "the first refusal starts the spell"
        );
        assert_eq!(
            answer_candidate(&quiet(false, None), false, CANDIDATE, now),
            CandidateAnswer::WakeAndVote,
            "a dead leader's group votes"
        );
        let transfer = Candidacy {
            leadership_transfer: true,
            ..CANDIDATE
        };
        assert_eq!(
            answer_candidate(&quiet(false, None), true, transfer, now),
            CandidateAnswer::WakeAndVote,
            "a leadership transfer is never refused"
        );
        let the_leader = Candidacy {
            candidate: 1,
            ..CANDIDATE
        };
        assert_eq!(
            answer_candidate(&quiet(false, None), true, the_leader, now),
            CandidateAnswer::WakeAndVote,
            "the quiet leader itself campaigning is never refused"
        );
    }

    #[test]
    fn refusals_lapse_750_ms_after_the_first() {
        let first = Instant::now();
        let refusing = quiet(false, Some(first));
        let just_before = first + REFUSAL_LIMIT - Duration::from_millis(1);
        assert_eq!(
            answer_candidate(&refusing, true, CANDIDATE, just_before),
            CandidateAnswer::Refuse { since: first },
            "the spell keeps its start"
        );
        assert_eq!(
            answer_candidate(&refusing, true, CANDIDATE, first + REFUSAL_LIMIT),
            CandidateAnswer::WakeAndVote,
            "a leader that pings but never reaches the group does not keep it leaderless"
        );
        assert_eq!(REFUSAL_LIMIT, Duration::from_millis(750));
    }

    #[test]
    fn a_quiet_leader_refuses_and_wakes_unless_it_handed_the_leadership_over() {
        let now = Instant::now();
        assert_eq!(
            answer_candidate(&quiet(true, None), false, CANDIDATE, now),
            CandidateAnswer::RefuseAndWake
        );
        let transfer = Candidacy {
            leadership_transfer: true,
            ..CANDIDATE
        };
        assert_eq!(
            answer_candidate(&quiet(true, None), false, transfer, now),
            CandidateAnswer::WakeAndVote
        );
    }

    #[test]
    fn a_broker_that_sees_no_live_majority_does_not_campaign() {
        // Voters 1, 2, 3; leader 3 dead.
        assert!(campaigns_after_death(&[1, 2, 3], 3, 1, |v| v != 3));
        assert!(
            !campaigns_after_death(&[1, 2, 3], 3, 2, |v| v != 3),
            "not the successor"
        );
        assert!(
            !campaigns_after_death(&[1, 2, 3], 3, 1, |_| false),
            "sees every peer dead: stalled or cut off, it would not win"
        );
        // Five voters, leader 2 and its successor 3 dead: 4 campaigns, three of five alive.
        assert!(campaigns_after_death(&[1, 2, 3, 4, 5], 2, 4, |v| v != 2 && v != 3));
    }

    #[test]
    fn the_next_live_voter_after_the_leader_campaigns_first() {
        let all = |_| true;
        assert_eq!(successor(&[3, 1, 2], 1, all), Some(2));
        assert_eq!(successor(&[3, 1, 2], 3, all), Some(1), "wraps around");
        assert_eq!(successor(&[1], 1, all), None, "nobody else");
        assert_eq!(successor(&[1, 2], 5, all), None, "the leader is not a voter");
        assert_eq!(
            successor(&[1, 2, 3, 4, 5], 2, |v| v != 3),
            Some(4),
            "a dead voter is skipped"
        );
        assert_eq!(successor(&[1, 2, 3], 3, |v| v == 3), None, "nobody else alive");
    }
}
