//! Metrics of the consumer groups this broker coordinates (the groups of the
//! `__consumer_offsets` partitions it leads): `broker_group_members{group}` and
//! `broker_group_lag{group}`, sampled when `/metrics` is scraped, and
//! `broker_group_rebalances_total{group}`, counted when this coordinator commits a change that
//! bumps a group's epoch.
//!
//! The `group` label is chosen by users, so its values are capped ([`GroupLabels`]): the first
//! [`MAX_LABELLED_GROUPS`] groups this broker reports get a series of their own for the life of
//! the process, and every later group is summed under `group="_other"`. Labels are kept, not
//! reassigned, because the exporter never drops a series (reassigning would grow the series
//! without bound) and a counter must not move between series. The `_other` series exist from
//! start, at zero.

use crate::metrics::labels::{CappedLabels, OTHER};
use std::collections::BTreeMap;

/// How many groups get a `group` label of their own on one broker process.
pub const MAX_LABELLED_GROUPS: usize = 100;

/// The label value of every group past the cap (and of a group actually named so).
pub const OTHER_GROUPS: &str = OTHER;

const MEMBERS: &str = "broker_group_members";
const LAG: &str = "broker_group_lag";
const REBALANCES: &str = "broker_group_rebalances_total";

/// Registers the metrics with their help texts and their `_other` series at zero.
pub fn describe() {
    metrics::describe_gauge!(
        MEMBERS,
        metrics::Unit::Count,
        "Members of each consumer group this broker coordinates (groups past the label cap summed under group=\"_other\")."
    );
    metrics::describe_gauge!(
        LAG,
        metrics::Unit::Count,
        "Records between each coordinated group's committed offsets and the high watermarks, over the committed partitions with a replica on this broker."
    );
    metrics::describe_counter!(
        REBALANCES,
        metrics::Unit::Count,
        "Group epoch bumps (membership or subscription changes) committed by this broker as the group's coordinator."
    );
    metrics::gauge!(MEMBERS, "group" => OTHER_GROUPS).set(0.0);
    metrics::gauge!(LAG, "group" => OTHER_GROUPS).set(0.0);
    metrics::counter!(REBALANCES, "group" => OTHER_GROUPS).absolute(0);
}

/// One coordinated group as a scrape sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFigures {
    /// The group id.
    pub group_id: String,
    /// Its members.
    pub members: u64,
    /// Its committed-offset lag (see `GroupCoordinator::group_figures` for which partitions).
    pub lag: u64,
}

/// The groups that have a `group` label of their own on this broker.
#[derive(Debug)]
pub struct GroupLabels {
    labels: CappedLabels,
}

impl Default for GroupLabels {
    fn default() -> Self {
        GroupLabels {
            labels: CappedLabels::new(MAX_LABELLED_GROUPS),
        }
    }
}

impl GroupLabels {
    /// The label of `group_id`: its own while it has one or a slot is free (then it keeps it),
    /// else [`OTHER_GROUPS`].
    pub fn label(&self, group_id: &str) -> String {
        let (label, new) = self.labels.label(group_id);
        if new {
            // The new counter series starts at zero, so a rate sees its first increment.
            metrics::counter!(REBALANCES, "group" => label.clone()).absolute(0);
        }
        label
    }

    /// Sums `groups` per label: every labelled group (zero if it is no longer coordinated
    /// here, so its gauges do not keep a stale value) and [`OTHER_GROUPS`]. Labels are handed
    /// out in the order of `groups`.
    fn totals(&self, groups: &[GroupFigures]) -> BTreeMap<String, (u64, u64)> {
        let mut totals: BTreeMap<String, (u64, u64)> = self
            .labels
            .labelled()
            .into_iter()
            .map(|group| (group, (0, 0)))
            .collect();
        totals.insert(OTHER_GROUPS.to_string(), (0, 0));
        for group in groups {
            let total = totals.entry(self.label(&group.group_id)).or_default();
            total.0 += group.members;
            total.1 += group.lag;
        }
        totals
    }
}

/// Sets the gauges from the groups coordinated here (sorted by group id, so that when slots are
/// free the groups present at the first scrape get them by name).
pub fn record(labels: &GroupLabels, groups: &[GroupFigures]) {
    for (label, (members, lag)) in labels.totals(groups) {
        metrics::gauge!(MEMBERS, "group" => label.clone()).set(members as f64);
        metrics::gauge!(LAG, "group" => label).set(lag as f64);
    }
}

/// This coordinator committed a change of `group_id` that bumped its epoch by `bumps`.
pub fn rebalanced(labels: &GroupLabels, group_id: &str, bumps: u64) {
    metrics::counter!(REBALANCES, "group" => labels.label(group_id)).increment(bumps);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(group_id: &str, members: u64, lag: u64) -> GroupFigures {
        GroupFigures {
            group_id: group_id.into(),
            members,
            lag,
        }
    }

    #[test]
    fn groups_past_the_cap_are_summed_under_other_and_labels_are_kept() {
        let labels = GroupLabels::default();
        let mut groups: Vec<GroupFigures> = (0..MAX_LABELLED_GROUPS + 2)
            .map(|i| figures(&format!("g{i:03}"), 1, 10))
            .collect();
        let totals = labels.totals(&groups);
        assert_eq!(totals.len(), MAX_LABELLED_GROUPS + 1);
        assert_eq!(totals["g000"], (1, 10));
        assert_eq!(totals[OTHER_GROUPS], (2, 20), "the last two by name");
        // A group that sorts first but came later does not take a label; one that went away
        // keeps its label at zero.
        groups.remove(0);
        groups.insert(0, figures("a-late-comer", 3, 5));
        let totals = labels.totals(&groups);
        assert_eq!(totals.len(), MAX_LABELLED_GROUPS + 1);
        assert_eq!(totals["g000"], (0, 0));
        assert_eq!(totals[OTHER_GROUPS], (5, 25));
    }

    #[test]
    fn a_group_named_like_the_overflow_label_is_summed_into_it() {
        let labels = GroupLabels::default();
        let totals = labels.totals(&[figures(OTHER_GROUPS, 2, 7), figures("g", 1, 1)]);
        assert_eq!(totals[OTHER_GROUPS], (2, 7));
        assert_eq!(totals["g"], (1, 1));
        assert_eq!(labels.label(OTHER_GROUPS), OTHER_GROUPS);
    }
}
