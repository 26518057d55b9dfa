//! The consumer-group half of the checker: what the members of a group recorded (assignments,
//! polls, commits) against what the producers got acknowledged. Pure: events in, anomalies out.
//!
//! # The rules
//! - **committed-offset regression**: a commit of group `g` for partition `p` that succeeded
//!   (`ok`) with offset `o`, although it was *invoked after* another commit of `g` for `p` had
//!   succeeded with an offset above `o`. Only successful commits count on either side (a failed
//!   or unanswered one may or may not have been applied); commits that overlap in time are not
//!   compared (the coordinator may have applied them in either order). The nemesis never resets
//!   offsets administratively, so nothing may move a group's committed offset back.
//! - **double ownership**: member B is assigned `p` (its `on_assigned`) while member A still
//!   holds `p` — A's last change for `p` was an assignment — and A then gives `p` up in an
//!   *orderly* way (`on_revoked`): the coordinator handed `p` on before its owner released it.
//!   Not flagged:
//!   - A's hold ends with `on_lost`: a fenced member (a zombie) learns it lost its partitions
//!     only after the coordinator moved them on, so that overlap is expected;
//!   - A records a loss (of any partitions, even none) within [`LOSS_GRACE_MS`] after the
//!     revocation: it revoked from a view the coordinator had already left behind (it had
//!     been fenced and did not know yet), and the loss shows the fencing;
//!   - A never gives `p` up before the history ends.
//!
//!   The rule compares the order of events, not group epochs: callbacks run inside `poll`,
//!   where a member's epoch cannot be read, so the epochs recorded are informative only.
//! - **group poll skip / nonmonotonic group poll**: within one hold of `p` by one member,
//!   each record returned must directly follow the one before (the log's offsets are dense).
//!   Reported as the plain consumers' `poll skip` / `nonmonotonic poll`, with the member's
//!   process. A new hold may start anywhere (at the committed offset).
//! - **group unseen**: a send was acknowledged, and no member of a group that joined ever
//!   polled its value. Only for histories with a group in them.

use super::{Anomaly, Report};
use crate::history::{AssignmentChange, Event, Operation, Outcome};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// How long after an orderly revocation a loss still shows that the member revoking had been
/// fenced already: above the nemesis members' 6 s session timeout (the member's own loss rule)
/// plus a heartbeat's backoff.
pub const LOSS_GRACE_MS: u64 = 15_000;

/// What the group members did, for summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Successful subscribes (joins, rejoins after a close).
    pub joins: usize,
    /// Listener callbacks: assigned, revoked, lost.
    pub changes: (usize, usize, usize),
    /// Records returned by group members' polls.
    pub records: usize,
    /// Commits invoked / ok / failed / unknown.
    pub commits: (usize, usize, usize, usize),
}

/// A member holding a partition, since when.
#[derive(Debug, Clone, Copy)]
struct Hold {
    since_ms: u64,
}

/// B was assigned a partition A still held.
#[derive(Debug, Clone)]
struct Overlap {
    group: String,
    partition: u32,
    holder: u32,
    newcomer: u32,
    newcomer_assigned_ms: u64,
    holder_assigned_ms: u64,
}

/// Checks the group operations of `events`; `acknowledged` is every acknowledged send
/// (partition, offset, value).
pub(super) fn check_groups(events: &[Event], acknowledged: &[(u32, u64, String)], report: &mut Report) {
    let mut stats = GroupStats::default();
    let mut joined: BTreeSet<String> = BTreeSet::new();
    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    // (group, partition) → highest successfully committed offset, and by whom.
    let mut committed: HashMap<(String, u32), (u64, u32)> = HashMap::new();
    // (group, process) → what was committed when its commit in flight was invoked.
    let mut at_invoke: HashMap<(String, u32), HashMap<u32, (u64, u32)>> = HashMap::new();
    let mut holds: HashMap<(String, u32), BTreeMap<u32, Hold>> = HashMap::new();
    let mut overlaps: Vec<Overlap> = Vec::new();
    // Overlaps whose holder revoked: (overlap, revoked at), excused by a loss soon after.
    let mut revoked_overlaps: Vec<(Overlap, u64)> = Vec::new();
    // (group, process, partition) → last offset returned in the current hold.
    let mut last_polled: HashMap<(String, u32, u32), u64> = HashMap::new();

    for event in events {
        let process = event.process;
        match (&event.operation, event.outcome) {
            (Operation::GroupSubscribe { group, .. }, Outcome::Ok) => {
                stats.joins += 1;
                joined.insert(group.clone());
            }
            (
                Operation::Assignment {
                    group,
                    change,
                    partitions,
                    ..
                },
                _,
            ) => {
                match change {
                    AssignmentChange::Assigned => stats.changes.0 += 1,
                    AssignmentChange::Revoked => stats.changes.1 += 1,
                    AssignmentChange::Lost => stats.changes.2 += 1,
                }
                if *change == AssignmentChange::Lost {
                    // A loss shows the member had been fenced: its recent revocations came from
                    // a stale view.
                    revoked_overlaps.retain(|(overlap, revoked_ms)| {
                        !(overlap.holder == process
                            && overlap.group == *group
                            && event.time_ms.saturating_sub(*revoked_ms) <= LOSS_GRACE_MS)
                    });
                }
                for partition in partitions {
                    let key = (group.clone(), *partition);
                    last_polled.remove(&(group.clone(), process, *partition));
                    let holders = holds.entry(key).or_default();
                    match change {
                        AssignmentChange::Assigned => {
                            for (holder, hold) in holders.iter().filter(|(holder, _)| **holder != process) {
                                overlaps.push(Overlap {
                                    group: group.clone(),
                                    partition: *partition,
                                    holder: *holder,
                                    newcomer: process,
                                    newcomer_assigned_ms: event.time_ms,
                                    holder_assigned_ms: hold.since_ms,
                                });
                            }
                            holders.insert(
                                process,
                                Hold {
                                    since_ms: event.time_ms,
                                },
                            );
                        }
                        AssignmentChange::Revoked | AssignmentChange::Lost => {
                            holders.remove(&process);
                            let (ended, open): (Vec<Overlap>, Vec<Overlap>) = overlaps.drain(..).partition(|overlap| {
                                overlap.holder == process && overlap.group == *group && overlap.partition == *partition
                            });
                            overlaps = open;
                            if *change == AssignmentChange::Revoked {
                                revoked_overlaps.extend(ended.into_iter().map(|overlap| (overlap, event.time_ms)));
                            }
                        }
                    }
                }
            }
            (Operation::GroupPoll { group, records, .. }, Outcome::Ok) => {
                stats.records += records.len();
                let values = seen.entry(group.clone()).or_default();
                for record in records {
                    values.insert(record.value.clone());
                    let key = (group.clone(), process, record.partition);
                    if let Some(previous) = last_polled.get(&key) {
                        if record.offset <= *previous {
                            report.anomalies.push(Anomaly::NonmonotonicPoll {
                                process,
                                partition: record.partition,
                                previous: *previous,
                                got: record.offset,
                            });
                        } else if record.offset > previous + 1 {
                            report.anomalies.push(Anomaly::PollSkip {
                                process,
                                partition: record.partition,
                                expected: previous + 1,
                                got: record.offset,
                            });
                        }
                    }
                    last_polled.insert(key, record.offset);
                }
            }
            (Operation::Commit { group, offsets, .. }, Outcome::Invoke) => {
                stats.commits.0 += 1;
                let before = offsets
                    .iter()
                    .filter_map(|(partition, _)| {
                        committed
                            .get(&(group.clone(), *partition))
                            .map(|done| (*partition, *done))
                    })
                    .collect();
                at_invoke.insert((group.clone(), process), before);
            }
            (Operation::Commit { group, offsets, .. }, Outcome::Ok) => {
                stats.commits.1 += 1;
                let before = at_invoke.remove(&(group.clone(), process)).unwrap_or_default();
                for (partition, offset) in offsets {
                    if let Some((earlier, by)) = before.get(partition) {
                        if offset < earlier {
                            report.anomalies.push(Anomaly::CommitRegression {
                                group: group.clone(),
                                partition: *partition,
                                process,
                                offset: *offset,
                                earlier: (*earlier, *by),
                            });
                        }
                    }
                    let highest = committed
                        .entry((group.clone(), *partition))
                        .or_insert((*offset, process));
                    if *offset > highest.0 {
                        *highest = (*offset, process);
                    }
                }
            }
            (Operation::Commit { group, .. }, outcome) => {
                if outcome == Outcome::Fail {
                    stats.commits.2 += 1;
                } else {
                    stats.commits.3 += 1;
                }
                at_invoke.remove(&(group.clone(), process));
            }
            _ => {}
        }
    }

    for (overlap, revoked_ms) in revoked_overlaps {
        report.anomalies.push(Anomaly::DoubleOwnership {
            group: overlap.group,
            partition: overlap.partition,
            holder: overlap.holder,
            newcomer: overlap.newcomer,
            times_ms: (overlap.holder_assigned_ms, overlap.newcomer_assigned_ms, revoked_ms),
        });
    }
    for group in &joined {
        let values = seen.get(group);
        for (partition, offset, value) in acknowledged {
            if !values.is_some_and(|values| values.contains(value)) {
                report.anomalies.push(Anomaly::GroupUnseen {
                    group: group.clone(),
                    partition: *partition,
                    offset: *offset,
                    value: value.clone(),
                });
            }
        }
    }
    report.groups = stats;
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::*;
    use crate::history::Seen;

    const G: &str = "g";

    fn at(time_ms: u64, process: u32, outcome: Outcome, operation: Operation) -> Event {
        Event {
            time_ms,
            process,
            outcome,
            operation,
        }
    }

    fn joined(process: u32) -> Event {
        at(
            0,
            process,
            Outcome::Ok,
            Operation::GroupSubscribe {
                group: G.into(),
                member: format!("m{process}"),
            },
        )
    }

    fn change(time_ms: u64, process: u32, change: AssignmentChange, partitions: &[u32]) -> Event {
        at(
            time_ms,
            process,
            Outcome::Ok,
            Operation::Assignment {
                group: G.into(),
                change,
                partitions: partitions.to_vec(),
                epoch: 1,
            },
        )
    }

    fn assigned(time_ms: u64, process: u32, partitions: &[u32]) -> Event {
        change(time_ms, process, AssignmentChange::Assigned, partitions)
    }

    fn revoked(time_ms: u64, process: u32, partitions: &[u32]) -> Event {
        change(time_ms, process, AssignmentChange::Revoked, partitions)
    }

    fn lost(time_ms: u64, process: u32, partitions: &[u32]) -> Event {
        change(time_ms, process, AssignmentChange::Lost, partitions)
    }

    fn commit(process: u32, outcome: Outcome, offsets: &[(u32, u64)]) -> Event {
        at(
            0,
            process,
            outcome,
            Operation::Commit {
                group: G.into(),
                epoch: 1,
                offsets: offsets.to_vec(),
                code: (outcome == Outcome::Fail).then(|| "FencedMemberEpoch".to_string()),
            },
        )
    }

    fn group_poll(process: u32, records: &[(u32, u64, &str)]) -> Event {
        at(
            0,
            process,
            Outcome::Ok,
            Operation::GroupPoll {
                group: G.into(),
                epoch: 1,
                records: records
                    .iter()
                    .map(|(partition, offset, value)| Seen {
                        partition: *partition,
                        offset: *offset,
                        value: value.to_string(),
                    })
                    .collect(),
            },
        )
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        check(events).anomalies.iter().map(Anomaly::kind).collect()
    }

    #[test]
    fn an_orderly_hand_over_is_clean() {
        let events = vec![
            joined(1),
            assigned(10, 1, &[0, 1]),
            group_poll(1, &[(0, 0, "a"), (0, 1, "b")]),
            commit(1, Outcome::Invoke, &[(0, 2)]),
            commit(1, Outcome::Ok, &[(0, 2)]),
            joined(2),
            revoked(20, 1, &[1]),
            assigned(30, 2, &[1]),
            commit(2, Outcome::Invoke, &[(1, 0)]),
            commit(2, Outcome::Ok, &[(1, 0)]),
            revoked(40, 1, &[0]),
            revoked(41, 2, &[1]),
        ];
        let report = check(&events);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.groups.changes, (2, 3, 0));
        assert_eq!(report.groups.commits, (2, 2, 0, 0));
    }

    #[test]
    fn a_successful_commit_below_an_earlier_successful_one_is_a_regression() {
        let events = vec![
            commit(1, Outcome::Invoke, &[(0, 10)]),
            commit(1, Outcome::Ok, &[(0, 10)]),
            commit(2, Outcome::Invoke, &[(0, 7)]),
            commit(2, Outcome::Ok, &[(0, 7)]),
        ];
        assert_eq!(kinds(&events), vec!["committed-offset regression"]);
        // The same commit of the same member moving back is one too.
        let own = vec![
            commit(1, Outcome::Invoke, &[(0, 10), (1, 4)]),
            commit(1, Outcome::Ok, &[(0, 10), (1, 4)]),
            commit(1, Outcome::Invoke, &[(0, 11), (1, 3)]),
            commit(1, Outcome::Ok, &[(0, 11), (1, 3)]),
        ];
        assert_eq!(kinds(&own), vec!["committed-offset regression"]);
    }

    #[test]
    fn failed_unanswered_and_concurrent_commits_do_not_count_as_regressions() {
        // A higher commit that failed or was not answered sets no floor.
        let failed = vec![
            commit(1, Outcome::Invoke, &[(0, 10)]),
            commit(1, Outcome::Fail, &[(0, 10)]),
            commit(3, Outcome::Invoke, &[(0, 12)]),
            commit(3, Outcome::Info, &[(0, 12)]),
            commit(2, Outcome::Invoke, &[(0, 7)]),
            commit(2, Outcome::Ok, &[(0, 7)]),
        ];
        assert!(check(&failed).is_clean());
        // A failed lower commit after a successful higher one is no regression either.
        let refused = vec![
            commit(1, Outcome::Invoke, &[(0, 10)]),
            commit(1, Outcome::Ok, &[(0, 10)]),
            commit(2, Outcome::Invoke, &[(0, 7)]),
            commit(2, Outcome::Fail, &[(0, 7)]),
        ];
        assert!(check(&refused).is_clean());
        // Invoked before the higher one was acknowledged: either order was possible.
        let concurrent = vec![
            commit(2, Outcome::Invoke, &[(0, 7)]),
            commit(1, Outcome::Invoke, &[(0, 10)]),
            commit(1, Outcome::Ok, &[(0, 10)]),
            commit(2, Outcome::Ok, &[(0, 7)]),
        ];
        assert!(check(&concurrent).is_clean());
        // Equal is fine, and other partitions are independent.
        let equal = vec![
            commit(1, Outcome::Invoke, &[(0, 10)]),
            commit(1, Outcome::Ok, &[(0, 10)]),
            commit(2, Outcome::Invoke, &[(0, 10), (1, 2)]),
            commit(2, Outcome::Ok, &[(0, 10), (1, 2)]),
        ];
        assert!(check(&equal).is_clean());
    }

    #[test]
    fn a_partition_assigned_before_its_owner_revoked_it_is_double_ownership() {
        let events = vec![assigned(10, 1, &[0, 1]), assigned(20, 2, &[1]), revoked(30, 1, &[1])];
        assert_eq!(kinds(&events), vec!["double ownership"]);
        let report = check(&events);
        assert_eq!(
            report.anomalies[0],
            Anomaly::DoubleOwnership {
                group: G.into(),
                partition: 1,
                holder: 1,
                newcomer: 2,
                times_ms: (10, 20, 30),
            }
        );
        // A revocation at close, long after, with no loss: still flagged.
        let at_close = vec![assigned(10, 1, &[0]), assigned(20, 2, &[0]), revoked(60_000, 1, &[0])];
        assert_eq!(kinds(&at_close), vec!["double ownership"]);
    }

    #[test]
    fn a_zombie_losing_its_partition_after_the_reassignment_is_expected() {
        let lost_late = vec![assigned(10, 1, &[0]), assigned(20, 2, &[0]), lost(30, 1, &[0])];
        assert!(check(&lost_late).is_clean());
        // Revoked from a stale view, then the loss of the rest shows the member was fenced.
        let stale = vec![
            assigned(10, 1, &[0, 1]),
            assigned(20, 2, &[0]),
            revoked(30, 1, &[0]),
            lost(1_000, 1, &[1]),
        ];
        assert!(check(&stale).is_clean());
        let fenced_with_nothing_left = vec![
            assigned(10, 1, &[0]),
            assigned(20, 2, &[0]),
            revoked(30, 1, &[0]),
            lost(1_000, 1, &[]),
        ];
        assert!(check(&fenced_with_nothing_left).is_clean());
        // ...but a loss long after the revocation excuses nothing.
        let late_loss = vec![
            assigned(10, 1, &[0, 1]),
            assigned(20, 2, &[0]),
            revoked(30, 1, &[0]),
            lost(30 + LOSS_GRACE_MS + 1, 1, &[1]),
        ];
        assert_eq!(kinds(&late_loss), vec!["double ownership"]);
        // A hold never given up is not judged.
        let open = vec![assigned(10, 1, &[0]), assigned(20, 2, &[0])];
        assert!(check(&open).is_clean());
    }

    #[test]
    fn a_member_taking_a_partition_back_after_giving_it_up_is_clean() {
        let events = vec![
            assigned(10, 1, &[0]),
            revoked(20, 1, &[0]),
            assigned(30, 2, &[0]),
            lost(40, 2, &[0]),
            assigned(50, 1, &[0]),
            revoked(60, 1, &[0]),
        ];
        assert!(check(&events).is_clean());
    }

    #[test]
    fn group_polls_must_be_dense_within_a_hold_and_may_restart_with_a_new_one() {
        let skip = vec![assigned(0, 1, &[0]), group_poll(1, &[(0, 3, "d"), (0, 5, "f")])];
        assert_eq!(kinds(&skip), vec!["poll skip"]);
        let back = vec![
            assigned(0, 1, &[0]),
            group_poll(1, &[(0, 3, "d")]),
            group_poll(1, &[(0, 3, "d")]),
        ];
        assert_eq!(kinds(&back), vec!["nonmonotonic poll"]);
        let rewound = vec![
            assigned(0, 1, &[0]),
            group_poll(1, &[(0, 3, "d"), (0, 4, "e")]),
            lost(1, 1, &[0]),
            assigned(2, 1, &[0]),
            group_poll(1, &[(0, 3, "d")]),
        ];
        assert!(check(&rewound).is_clean());
    }

    #[test]
    fn every_acknowledged_value_must_reach_a_group_that_joined() {
        let send = |value: &str, offset| {
            vec![
                at(
                    0,
                    7,
                    Outcome::Invoke,
                    Operation::Send {
                        partition: 0,
                        value: value.into(),
                        offset: None,
                    },
                ),
                at(
                    0,
                    7,
                    Outcome::Ok,
                    Operation::Send {
                        partition: 0,
                        value: value.into(),
                        offset: Some(offset),
                    },
                ),
            ]
        };
        let final_read = at(
            0,
            99,
            Outcome::Ok,
            Operation::FinalRead {
                partition: 0,
                records: vec![(0, "a".into()), (1, "b".into())],
            },
        );
        let mut events = send("a", 0);
        events.extend(send("b", 1));
        events.push(final_read.clone());
        assert!(check(&events).is_clean(), "no group: nothing required of one");
        events.push(joined(1));
        events.push(assigned(0, 1, &[0]));
        events.push(group_poll(1, &[(0, 0, "a")]));
        assert_eq!(kinds(&events), vec!["group unseen"]);
        events.push(group_poll(1, &[(0, 1, "b")]));
        assert!(check(&events).is_clean());
    }

    #[test]
    fn group_operations_round_trip_and_lines_written_before_them_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let events = vec![
            joined(1),
            assigned(1, 1, &[0]),
            group_poll(1, &[(0, 0, "a")]),
            commit(1, Outcome::Invoke, &[(0, 1)]),
            commit(1, Outcome::Fail, &[(0, 1)]),
        ];
        crate::history::write_jsonl(&path, &events).unwrap();
        assert_eq!(crate::history::read_jsonl(&path).unwrap(), events);
        let old = r#"{"time_ms":5,"process":1,"outcome":"ok","f":"send","partition":0,"value":"a","offset":3}"#;
        let commit_without_code =
            r#"{"time_ms":6,"process":2,"outcome":"ok","f":"commit","group":"g","epoch":3,"offsets":[[0,4]]}"#;
        std::fs::write(&path, format!("{old}\n{commit_without_code}\n")).unwrap();
        let read = crate::history::read_jsonl(&path).unwrap();
        assert_eq!(
            read[0].operation,
            Operation::Send {
                partition: 0,
                value: "a".into(),
                offset: Some(3)
            }
        );
        assert_eq!(
            read[1].operation,
            Operation::Commit {
                group: "g".into(),
                epoch: 3,
                offsets: vec![(0, 4)],
                code: None
            }
        );
    }
}
