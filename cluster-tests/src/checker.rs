//! Checks a history (see [`crate::history`]) for the anomalies a log must never show, each with
//! examples:
//!
//! - **lost write**: a send was acknowledged, a later offset of its partition was read, but its
//!   value never was;
//! - **unseen**: a send was acknowledged and its value was never read, not even by the final
//!   read after healing (reported when nothing later was read either);
//! - **duplicate**: one value at two offsets;
//! - **inconsistent offset**: one offset with two values (across readers, or reader vs. ack);
//! - **poll skip** / **nonmonotonic poll**: a consumer's next record is beyond / not after the
//!   one before it, without a seek in between;
//! - **nonmonotonic send**: one producer's later send to a partition acknowledged at an earlier
//!   offset than an earlier send's;
//! - **replica divergence**: after healing, replicas of a partition hold different logs;
//! - for consumer groups (the rules exactly: [`groups`]): **committed-offset regression**,
//!   **double ownership**, **group unseen** (an acknowledged value no member of a group ever
//!   polled), and poll skips / nonmonotonic polls within one member's hold of a partition.
//!
//! Records returned to group members count as reads everywhere above (inconsistent offsets,
//! duplicates, lost writes).

mod groups;

pub use groups::{GroupStats, LOSS_GRACE_MS};

use crate::history::{Event, Operation, Outcome};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// One anomaly, with what shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// Acknowledged, a later offset read, never read itself.
    LostWrite {
        /// Partition.
        partition: u32,
        /// Acknowledged offset.
        offset: u64,
        /// Value.
        value: String,
        /// Highest offset read in the partition.
        read_up_to: u64,
    },
    /// Acknowledged, never read, nothing after it read either.
    Unseen {
        /// Partition.
        partition: u32,
        /// Acknowledged offset.
        offset: u64,
        /// Value.
        value: String,
    },
    /// One value at several offsets.
    Duplicate {
        /// Value.
        value: String,
        /// Where it was read.
        at: Vec<(u32, u64)>,
    },
    /// One offset with several values.
    InconsistentOffset {
        /// Partition.
        partition: u32,
        /// Offset.
        offset: u64,
        /// Values read (or acknowledged) there.
        values: Vec<String>,
    },
    /// A consumer jumped forward without a seek.
    PollSkip {
        /// Consumer.
        process: u32,
        /// Partition.
        partition: u32,
        /// Offset expected next.
        expected: u64,
        /// Offset returned.
        got: u64,
    },
    /// A consumer went back (or repeated) without a seek.
    NonmonotonicPoll {
        /// Consumer.
        process: u32,
        /// Partition.
        partition: u32,
        /// Offset returned before.
        previous: u64,
        /// Offset returned next.
        got: u64,
    },
    /// A producer's later send landed before an earlier one.
    NonmonotonicSend {
        /// Producer.
        process: u32,
        /// Partition.
        partition: u32,
        /// Earlier send: value and offset.
        earlier: (String, u64),
        /// Later send: value and offset.
        later: (String, u64),
    },
    /// Replicas of a partition differ after healing.
    ReplicaDivergence {
        /// Partition.
        partition: u32,
        /// Broker → digest.
        digests: Vec<(u64, String)>,
    },
    /// A successful commit moved a group's committed offset of a partition back below what an
    /// earlier successful commit (acknowledged before this one was sent) stored.
    CommitRegression {
        /// Group.
        group: String,
        /// Partition.
        partition: u32,
        /// The member process whose commit went back.
        process: u32,
        /// What it committed.
        offset: u64,
        /// The earlier commit: offset, and the member process that made it.
        earlier: (u64, u32),
    },
    /// A member was assigned a partition its holder later revoked in an orderly way.
    DoubleOwnership {
        /// Group.
        group: String,
        /// Partition.
        partition: u32,
        /// The member process that held it.
        holder: u32,
        /// The member process assigned it meanwhile.
        newcomer: u32,
        /// Milliseconds: the holder assigned it, the newcomer assigned it, the holder revoked it.
        times_ms: (u64, u64, u64),
    },
    /// Acknowledged, and no member of a group that joined ever polled it.
    GroupUnseen {
        /// Group.
        group: String,
        /// Partition.
        partition: u32,
        /// Acknowledged offset.
        offset: u64,
        /// Value.
        value: String,
    },
}

impl Anomaly {
    /// The anomaly's kind, for summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::LostWrite { .. } => "lost write",
            Anomaly::Unseen { .. } => "unseen",
            Anomaly::Duplicate { .. } => "duplicate",
            Anomaly::InconsistentOffset { .. } => "inconsistent offset",
            Anomaly::PollSkip { .. } => "poll skip",
            Anomaly::NonmonotonicPoll { .. } => "nonmonotonic poll",
            Anomaly::NonmonotonicSend { .. } => "nonmonotonic send",
            Anomaly::ReplicaDivergence { .. } => "replica divergence",
            Anomaly::CommitRegression { .. } => "committed-offset regression",
            Anomaly::DoubleOwnership { .. } => "double ownership",
            Anomaly::GroupUnseen { .. } => "group unseen",
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sends invoked / acknowledged / failed / unknown.
    pub sends: (usize, usize, usize, usize),
    /// Records returned by polls and final reads.
    pub records_read: usize,
    /// What consumer-group members did (all zero without groups).
    pub groups: GroupStats,
    /// Every anomaly found.
    pub anomalies: Vec<Anomaly>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Anomaly counts by kind.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for anomaly in &self.anomalies {
            *counts.entry(anomaly.kind()).or_default() += 1;
        }
        counts
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (invoked, acked, failed, unknown) = self.sends;
        writeln!(
            f,
            "sends: {invoked} invoked, {acked} acknowledged, {failed} failed, {unknown} unknown; {} records read",
            self.records_read
        )?;
        if self.groups != GroupStats::default() {
            let groups = &self.groups;
            let (assigned, revoked, lost) = groups.changes;
            let (invoked, ok, failed, unknown) = groups.commits;
            writeln!(
                f,
                "groups: {} joins; {assigned} assigned, {revoked} revoked, {lost} lost; {} records polled; \
                 commits: {invoked} invoked, {ok} ok, {failed} failed, {unknown} unknown",
                groups.joins, groups.records
            )?;
        }
        if self.is_clean() {
            return writeln!(f, "no anomalies");
        }
        for (kind, count) in self.counts() {
            writeln!(f, "{kind}: {count}")?;
            for example in self.anomalies.iter().filter(|a| a.kind() == kind).take(3) {
                writeln!(f, "  e.g. {example:?}")?;
            }
        }
        Ok(())
    }
}

/// Checks `events` (in the order they happened).
pub fn check(events: &[Event]) -> Report {
    let mut report = Report::default();
    // Everything read: (partition, offset) → values, and value → places.
    let mut at_offset: BTreeMap<(u32, u64), BTreeSet<String>> = BTreeMap::new();
    let mut places: HashMap<String, BTreeSet<(u32, u64)>> = HashMap::new();
    let mut highest_read: HashMap<u32, u64> = HashMap::new();
    let mut observe = |partition: u32, offset: u64, value: &str, report: &mut Report| {
        report.records_read += 1;
        at_offset
            .entry((partition, offset))
            .or_default()
            .insert(value.to_string());
        places.entry(value.to_string()).or_default().insert((partition, offset));
        let highest = highest_read.entry(partition).or_insert(offset);
        *highest = (*highest).max(offset);
    };
    // Acknowledged sends, per producer in invoke order: (partition, value) → offset.
    let mut invoke_order: HashMap<u32, Vec<(u32, String)>> = HashMap::new();
    let mut acked: HashMap<(u32, String), u64> = HashMap::new();
    let mut acked_list: Vec<(u32, u64, String)> = Vec::new();
    // Consumers: (process, partition) → offset expected next (None: unknown until the first).
    let mut expected_next: HashMap<(u32, u32), Option<u64>> = HashMap::new();
    let mut last_returned: HashMap<(u32, u32), u64> = HashMap::new();
    let mut replicas: BTreeMap<u32, BTreeMap<u64, String>> = BTreeMap::new();

    for event in events {
        match (&event.operation, event.outcome) {
            (Operation::Send { partition, value, .. }, Outcome::Invoke) => {
                report.sends.0 += 1;
                invoke_order
                    .entry(event.process)
                    .or_default()
                    .push((*partition, value.clone()));
            }
            (
                Operation::Send {
                    partition,
                    value,
                    offset,
                },
                Outcome::Ok,
            ) => {
                report.sends.1 += 1;
                if let Some(offset) = offset {
                    acked.insert((event.process, value.clone()), *offset);
                    acked_list.push((*partition, *offset, value.clone()));
                }
            }
            (Operation::Send { .. }, Outcome::Fail) => report.sends.2 += 1,
            (Operation::Send { .. }, Outcome::Info) => report.sends.3 += 1,
            (Operation::Seek { partition, offset }, Outcome::Ok) => {
                expected_next.insert((event.process, *partition), Some(*offset));
                last_returned.remove(&(event.process, *partition));
            }
            (Operation::Poll { records }, Outcome::Ok) => {
                for seen in records {
                    observe(seen.partition, seen.offset, &seen.value, &mut report);
                    let key = (event.process, seen.partition);
                    if let Some(previous) = last_returned.get(&key) {
                        if seen.offset <= *previous {
                            report.anomalies.push(Anomaly::NonmonotonicPoll {
                                process: event.process,
                                partition: seen.partition,
                                previous: *previous,
                                got: seen.offset,
                            });
                        }
                    }
                    if let Some(Some(expected)) = expected_next.get(&key) {
                        if seen.offset > *expected {
                            report.anomalies.push(Anomaly::PollSkip {
                                process: event.process,
                                partition: seen.partition,
                                expected: *expected,
                                got: seen.offset,
                            });
                        }
                    }
                    last_returned.insert(key, seen.offset);
                    expected_next.insert(key, Some(seen.offset + 1));
                }
            }
            (Operation::GroupPoll { records, .. }, Outcome::Ok) => {
                // Order within a member's holds is `groups`' to check.
                for seen in records {
                    observe(seen.partition, seen.offset, &seen.value, &mut report);
                }
            }
            (Operation::FinalRead { partition, records }, Outcome::Ok) => {
                for (offset, value) in records {
                    observe(*partition, *offset, value, &mut report);
                }
            }
            (
                Operation::ReplicaLog {
                    partition,
                    broker,
                    digest,
                },
                Outcome::Ok,
            ) => {
                replicas.entry(*partition).or_default().insert(*broker, digest.clone());
            }
            _ => {}
        }
    }

    // Acknowledgements disagreeing with reads, and acknowledged values never read.
    for (partition, offset, value) in &acked_list {
        let read_here = at_offset.get(&(*partition, *offset));
        if let Some(values) = read_here {
            if !values.contains(value) {
                let mut all: Vec<String> = values.iter().cloned().collect();
                all.push(format!("{value} (acknowledged)"));
                report.anomalies.push(Anomaly::InconsistentOffset {
                    partition: *partition,
                    offset: *offset,
                    values: all,
                });
            }
        }
        if places.contains_key(value) {
            continue;
        }
        match highest_read.get(partition) {
            Some(highest) if highest > offset => report.anomalies.push(Anomaly::LostWrite {
                partition: *partition,
                offset: *offset,
                value: value.clone(),
                read_up_to: *highest,
            }),
            _ => report.anomalies.push(Anomaly::Unseen {
                partition: *partition,
                offset: *offset,
                value: value.clone(),
            }),
        }
    }
    for ((partition, offset), values) in &at_offset {
        if values.len() > 1 {
            report.anomalies.push(Anomaly::InconsistentOffset {
                partition: *partition,
                offset: *offset,
                values: values.iter().cloned().collect(),
            });
        }
    }
    let mut duplicates: Vec<(&String, &BTreeSet<(u32, u64)>)> = places.iter().filter(|(_, at)| at.len() > 1).collect();
    duplicates.sort();
    for (value, at) in duplicates {
        report.anomalies.push(Anomaly::Duplicate {
            value: value.clone(),
            at: at.iter().copied().collect(),
        });
    }
    // Per producer and partition, acknowledged offsets must follow invoke order.
    let mut producers: Vec<&u32> = invoke_order.keys().collect();
    producers.sort();
    for process in producers {
        let mut last: HashMap<u32, (String, u64)> = HashMap::new();
        for (partition, value) in &invoke_order[process] {
            let Some(offset) = acked.get(&(*process, value.clone())) else {
                continue;
            };
            if let Some((earlier_value, earlier_offset)) = last.get(partition) {
                if offset <= earlier_offset {
                    report.anomalies.push(Anomaly::NonmonotonicSend {
                        process: *process,
                        partition: *partition,
                        earlier: (earlier_value.clone(), *earlier_offset),
                        later: (value.clone(), *offset),
                    });
                }
            }
            last.insert(*partition, (value.clone(), *offset));
        }
    }
    groups::check_groups(events, &acked_list, &mut report);
    for (partition, digests) in replicas {
        let distinct: BTreeSet<&String> = digests.values().collect();
        if distinct.len() > 1 {
            report.anomalies.push(Anomaly::ReplicaDivergence {
                partition,
                digests: digests.into_iter().collect(),
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Seen;

    fn event(process: u32, outcome: Outcome, operation: Operation) -> Event {
        Event {
            time_ms: 0,
            process,
            outcome,
            operation,
        }
    }

    fn send(process: u32, partition: u32, value: &str, offset: Option<u64>) -> Vec<Event> {
        let invoke = Operation::Send {
            partition,
            value: value.into(),
            offset: None,
        };
        let ok = Operation::Send {
            partition,
            value: value.into(),
            offset,
        };
        vec![event(process, Outcome::Invoke, invoke), event(process, Outcome::Ok, ok)]
    }

    fn poll(process: u32, records: &[(u32, u64, &str)]) -> Event {
        event(
            process,
            Outcome::Ok,
            Operation::Poll {
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

    fn final_read(partition: u32, records: &[(u64, &str)]) -> Event {
        event(
            99,
            Outcome::Ok,
            Operation::FinalRead {
                partition,
                records: records.iter().map(|(o, v)| (*o, v.to_string())).collect(),
            },
        )
    }

    fn seek(process: u32, partition: u32, offset: u64) -> Event {
        event(process, Outcome::Ok, Operation::Seek { partition, offset })
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        check(events).anomalies.iter().map(Anomaly::kind).collect()
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let mut events = Vec::new();
        events.extend(send(1, 0, "a", Some(0)));
        events.extend(send(1, 0, "b", Some(1)));
        events.push(seek(2, 0, 0));
        events.push(poll(2, &[(0, 0, "a"), (0, 1, "b")]));
        events.push(final_read(0, &[(0, "a"), (1, "b")]));
        let report = check(&events);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.sends, (2, 2, 0, 0));
    }

    #[test]
    fn an_acknowledged_value_missing_below_what_was_read_is_lost() {
        let mut events = send(1, 0, "a", Some(0));
        events.extend(send(1, 0, "b", Some(1)));
        events.push(final_read(0, &[(1, "b")]));
        assert_eq!(kinds(&events), vec!["lost write"]);
    }

    #[test]
    fn an_acknowledged_value_never_read_at_all_is_unseen() {
        let mut events = send(1, 0, "a", Some(0));
        events.push(final_read(0, &[]));
        assert_eq!(kinds(&events), vec!["unseen"]);
    }

    #[test]
    fn one_value_at_two_offsets_is_a_duplicate() {
        let mut events = send(1, 0, "a", Some(0));
        events.push(final_read(0, &[(0, "a"), (1, "a")]));
        assert_eq!(kinds(&events), vec!["duplicate"]);
    }

    #[test]
    fn two_values_at_one_offset_are_inconsistent() {
        let events = vec![poll(2, &[(0, 0, "a")]), final_read(0, &[(0, "b")])];
        assert!(kinds(&events).contains(&"inconsistent offset"));
        // An acknowledgement that disagrees with what is read there.
        let mut acked = send(1, 0, "x", Some(0));
        acked.push(final_read(0, &[(0, "y")]));
        assert!(kinds(&acked).contains(&"inconsistent offset"));
    }

    #[test]
    fn consumer_jumps_and_rewinds_without_a_seek_are_caught_and_seeks_are_respected() {
        let skip = vec![seek(2, 0, 0), poll(2, &[(0, 0, "a"), (0, 2, "c")])];
        assert_eq!(kinds(&skip), vec!["poll skip"]);
        let back = vec![poll(2, &[(0, 5, "f"), (0, 3, "d")])];
        assert_eq!(kinds(&back), vec!["nonmonotonic poll"]);
        let sought = vec![poll(2, &[(0, 5, "f")]), seek(2, 0, 3), poll(2, &[(0, 3, "d")])];
        assert!(check(&sought).is_clean());
    }

    #[test]
    fn a_later_send_at_an_earlier_offset_is_nonmonotonic() {
        let mut events = send(1, 0, "a", Some(5));
        events.extend(send(1, 0, "b", Some(4)));
        events.push(final_read(0, &[(4, "b"), (5, "a")]));
        assert_eq!(kinds(&events), vec!["nonmonotonic send"]);
    }

    #[test]
    fn replicas_with_different_logs_diverge() {
        let replica = |broker: u64, digest: &str| {
            event(
                99,
                Outcome::Ok,
                Operation::ReplicaLog {
                    partition: 0,
                    broker,
                    digest: digest.into(),
                },
            )
        };
        let events = vec![replica(1, "aa"), replica(2, "aa"), replica(3, "ab")];
        assert_eq!(kinds(&events), vec!["replica divergence"]);
    }

    #[test]
    fn failed_and_unknown_sends_are_not_required_to_appear() {
        let events = vec![
            event(
                1,
                Outcome::Invoke,
                Operation::Send {
                    partition: 0,
                    value: "a".into(),
                    offset: None,
                },
            ),
            event(
                1,
                Outcome::Info,
                Operation::Send {
                    partition: 0,
                    value: "a".into(),
                    offset: None,
                },
            ),
            final_read(0, &[]),
        ];
        let report = check(&events);
        assert!(report.is_clean());
        assert_eq!(report.sends, (1, 0, 0, 1));
    }

    #[test]
    fn histories_round_trip_through_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut events = send(1, 0, "a", Some(0));
        events.push(poll(2, &[(0, 0, "a")]));
        events.push(final_read(0, &[(0, "a")]));
        crate::history::write_jsonl(&path, &events).unwrap();
        assert_eq!(crate::history::read_jsonl(&path).unwrap(), events);
    }
}
