//! Leadership and ISR changes of the partition replicas this broker hosts, counted by sampling:
//! one task per broker reads every hosted replica's [`Leadership`] (term, leader, ISR) once per
//! [`SAMPLE_INTERVAL`], compares it with the previous sample and counts what changed:
//!
//! - `broker_leader_changes_total`: a replica saw its partition's leader become a different
//!   known leader (a spell without a known leader in between counts once, and not at all if the
//!   same leader comes back);
//! - `broker_leader_elections_won_total`: a replica here became leader of a term it had not led;
//! - `broker_isr_shrinks_total` / `broker_isr_expands_total`: on a partition led here, one per
//!   replica that left / joined the ISR between two samples of the same term.
//!
//! Sampling rather than hooks on every Raft state change keeps openraft inside `replication`
//! and costs one task per broker, not one per partition (a broker may host 10,000 replicas).
//! The price: a change undone within one interval (a leader elected and deposed, a follower
//! dropping out of the ISR and back) can be missed. The ISR a new leader reports before its
//! followers first answer lacks them, so a term's first sample is only the baseline for the
//! next; ISR changes before that second sample are not counted.
//!
//! The pure part ([`LeadershipTracker`]) is tested below; [`sample_forever`] is the task.

use super::PartitionManager;
use crate::replication::{IsrBounds, Leadership};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often every hosted replica's leadership is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Replicas sampled between yields to the runtime, so a broker with thousands of replicas does
/// not hold a worker thread for the whole round.
const REPLICAS_PER_YIELD: usize = 256;

/// The counters and their help texts.
const COUNTERS: [(&str, &str); 4] = [
    (
        "broker_leader_changes_total",
        "Hosted partition replicas that saw their partition's leader change to a different known leader (sampled every second).",
    ),
    (
        "broker_leader_elections_won_total",
        "Partition replicas on this broker that became leader of a new term (sampled every second).",
    ),
    (
        "broker_isr_shrinks_total",
        "Replicas that left the in-sync replicas of a partition this broker leads (sampled every second).",
    ),
    (
        "broker_isr_expands_total",
        "Replicas that joined the in-sync replicas of a partition this broker leads (sampled every second).",
    ),
];

/// Registers the counters with their help texts, at zero.
pub fn describe() {
    for (name, help) in COUNTERS {
        metrics::describe_counter!(name, metrics::Unit::Count, help);
        metrics::counter!(name).absolute(0);
    }
}

/// What changed between two samples, summed over replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Replicas whose known leader became a different one.
    pub leader_changes: u64,
    /// Replicas that became leader of a term they had not been seen leading.
    pub elections_won: u64,
    /// Replicas that left the ISR of a partition led here.
    pub isr_shrinks: u64,
    /// Replicas that joined the ISR of a partition led here.
    pub isr_expands: u64,
}

impl std::ops::AddAssign for Changes {
    fn add_assign(&mut self, other: Changes) {
        self.leader_changes += other.leader_changes;
        self.elections_won += other.elections_won;
        self.isr_shrinks += other.isr_shrinks;
        self.isr_expands += other.isr_expands;
    }
}

/// What a replica's ISR was, as far as it can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IsrSeen {
    /// The replica did not lead at the last sample.
    NotLeading,
    /// It led in `term` for the first sample: what it reported is not trusted yet.
    FirstSample { term: u64 },
    /// It led in `term` and reported `isr` at the last sample.
    Baseline { term: u64, isr: Vec<u64> },
}

/// What is remembered of one replica between samples.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Remembered {
    /// The last leader the replica knew, kept through spells without a known leader.
    known_leader: Option<u64>,
    /// The last term in which it was seen leading.
    led_term: Option<u64>,
    isr: IsrSeen,
}

/// Compares one replica's sample with what was remembered of it (`None`: its first sample,
/// which is only a baseline for leader changes, but counts an election it already won — a
/// replica leads only terms it won in this process).
fn observe(previous: Option<&Remembered>, now: &Leadership) -> (Remembered, Changes) {
    let mut changes = Changes::default();
    let known_before = previous.and_then(|p| p.known_leader);
    if let (Some(before), Some(leader)) = (known_before, now.leader) {
        if before != leader {
            changes.leader_changes = 1;
        }
    }
    let led_before = previous.and_then(|p| p.led_term);
    if now.is_leader && led_before != Some(now.term) {
        changes.elections_won = 1;
    }
    let isr = if !now.is_leader {
        IsrSeen::NotLeading
    } else {
        match previous.map(|p| &p.isr) {
            Some(IsrSeen::Baseline { term, isr }) if *term == now.term => {
                changes.isr_shrinks = isr.iter().filter(|id| !now.isr.contains(id)).count() as u64;
                changes.isr_expands = now.isr.iter().filter(|id| !isr.contains(id)).count() as u64;
                IsrSeen::Baseline {
                    term: now.term,
                    isr: now.isr.clone(),
                }
            }
            Some(IsrSeen::FirstSample { term }) if *term == now.term => IsrSeen::Baseline {
                term: now.term,
                isr: now.isr.clone(),
            },
            _ => IsrSeen::FirstSample { term: now.term },
        }
    };
    let remembered = Remembered {
        known_leader: now.leader.or(known_before),
        led_term: if now.is_leader { Some(now.term) } else { led_before },
        isr,
    };
    (remembered, changes)
}

/// The previous sample of every hosted replica, by Raft group (never reused, so a re-created
/// topic's replicas start afresh).
#[derive(Debug, Default)]
pub struct LeadershipTracker {
    previous: HashMap<u64, Remembered>,
}

impl LeadershipTracker {
    /// Takes a sample of every hosted replica (group, leadership) and returns what changed since
    /// the previous one. Replicas missing from `samples` are forgotten (no longer hosted).
    pub fn observe_round(&mut self, samples: Vec<(u64, Leadership)>) -> Changes {
        let mut next = HashMap::with_capacity(samples.len());
        let mut changes = Changes::default();
        for (group, now) in samples {
            let (remembered, changed) = observe(self.previous.get(&group), &now);
            changes += changed;
            next.insert(group, remembered);
        }
        self.previous = next;
        changes
    }
}

/// Samples every hosted replica every [`SAMPLE_INTERVAL`] and adds what changed to the
/// counters, until the task is dropped.
pub async fn sample_forever(partitions: Arc<PartitionManager>, bounds: IsrBounds) {
    let mut tracker = LeadershipTracker::default();
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let replicas = partitions.replicas();
        let mut samples = Vec::with_capacity(replicas.len());
        for (i, (_, replica)) in replicas.into_iter().enumerate() {
            if i > 0 && i % REPLICAS_PER_YIELD == 0 {
                tokio::task::yield_now().await;
            }
            samples.push((replica.group(), replica.leadership(bounds)));
        }
        let changes = tracker.observe_round(samples);
        let values = [
            changes.leader_changes,
            changes.elections_won,
            changes.isr_shrinks,
            changes.isr_expands,
        ];
        for ((name, _), value) in COUNTERS.iter().zip(values) {
            if value > 0 {
                metrics::counter!(*name).increment(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(term: u64, leader: Option<u64>) -> Leadership {
        Leadership {
            term,
            leader,
            is_leader: false,
            isr: Vec::new(),
        }
    }

    fn leader(term: u64, isr: &[u64]) -> Leadership {
        Leadership {
            term,
            leader: Some(1),
            is_leader: true,
            isr: isr.to_vec(),
        }
    }

    /// Feeds one replica's samples in order and sums what they changed.
    fn run(samples: &[Leadership]) -> Changes {
        let mut tracker = LeadershipTracker::default();
        let mut total = Changes::default();
        for sample in samples {
            total += tracker.observe_round(vec![(7, sample.clone())]);
        }
        total
    }

    #[test]
    fn a_leader_change_counts_once_across_a_spell_without_a_leader() {
        let changes = run(&[
            follower(1, Some(2)),
            follower(2, None),
            follower(2, Some(3)),
            follower(2, Some(3)),
        ]);
        assert_eq!(changes.leader_changes, 1);
        assert_eq!(changes.elections_won, 0);
    }

    #[test]
    fn the_same_leader_coming_back_or_first_becoming_known_is_no_change() {
        assert_eq!(
            run(&[follower(1, Some(2)), follower(2, None), follower(3, Some(2))]).leader_changes,
            0
        );
        assert_eq!(run(&[follower(1, None), follower(1, Some(2))]).leader_changes, 0);
    }

    #[test]
    fn an_election_counts_once_per_term_led_and_a_leader_seen_first_counts() {
        let changes = run(&[
            leader(1, &[1]),
            leader(1, &[1, 2, 3]),
            follower(1, None), // lease lapsed, same term
            leader(1, &[1, 2, 3]),
            follower(2, Some(2)),
            leader(3, &[1]),
        ]);
        assert_eq!(changes.elections_won, 2, "terms 1 and 3");
        assert_eq!(changes.leader_changes, 2, "1 → 2 → 1");
    }

    #[test]
    fn isr_changes_are_counted_per_replica_from_a_terms_second_sample_on() {
        let changes = run(&[
            leader(1, &[1]),       // just elected: followers not heard from yet
            leader(1, &[1, 2, 3]), // baseline
            leader(1, &[1, 3]),    // 2 left
            leader(1, &[1]),       // 3 left
            leader(1, &[1, 2, 3]), // both back
        ]);
        assert_eq!((changes.isr_shrinks, changes.isr_expands), (2, 2));
    }

    #[test]
    fn a_new_term_or_a_lapse_starts_the_isr_afresh() {
        let changes = run(&[
            leader(1, &[1, 2, 3]),
            leader(1, &[1, 2, 3]),
            leader(2, &[1]),
            leader(2, &[1, 2, 3]),
            follower(2, None),
            leader(2, &[1, 2]),
            leader(2, &[1, 2, 3]),
            leader(2, &[1, 2]),
        ]);
        assert_eq!(
            (changes.isr_shrinks, changes.isr_expands),
            (1, 0),
            "only the last sample's"
        );
    }

    #[test]
    fn replicas_no_longer_hosted_are_forgotten() {
        let mut tracker = LeadershipTracker::default();
        tracker.observe_round(vec![(1, follower(1, Some(2))), (2, leader(1, &[1]))]);
        tracker.observe_round(vec![(2, leader(1, &[1]))]);
        assert_eq!(tracker.previous.len(), 1);
        // Hosted here again (moved away and back): its first sample is a baseline again.
        let changes = tracker.observe_round(vec![(1, follower(2, Some(3))), (2, leader(1, &[1]))]);
        assert_eq!(changes, Changes::default());
    }
}
