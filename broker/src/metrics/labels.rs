//! Label values chosen by users — topic names, consumer group ids — capped per process
//! ([`CappedLabels`]): the first `max` values seen get a series of their own for the life of the
//! process, every later one is summed under [`OTHER`]. Values are kept, never reassigned: the
//! exporter never drops a series (reassigning would grow the series without bound), and a
//! counter must not move from one series to another.

use std::collections::BTreeSet;
use std::sync::RwLock;

/// The label value of everything past the cap (and of a value actually named so).
pub const OTHER: &str = "_other";

/// A capped set of label values.
#[derive(Debug)]
pub struct CappedLabels {
    max: usize,
    labelled: RwLock<BTreeSet<String>>,
}

impl CappedLabels {
    /// At most `max` values get a label of their own.
    pub const fn new(max: usize) -> CappedLabels {
        CappedLabels {
            max,
            labelled: RwLock::new(BTreeSet::new()),
        }
    }

    /// The label of `value` — its own while it has one or a slot is free (then it keeps it),
    /// else [`OTHER`] — and whether it was given out just now (the caller may start its series
    /// at zero, so a rate sees its first increment).
    pub fn label(&self, value: &str) -> (String, bool) {
        if self.labelled.read().unwrap_or_else(|p| p.into_inner()).contains(value) {
            return (value.to_string(), false);
        }
        let mut labelled = self.labelled.write().unwrap_or_else(|p| p.into_inner());
        if labelled.contains(value) {
            return (value.to_string(), false);
        }
        if value == OTHER || labelled.len() >= self.max {
            return (OTHER.to_string(), false);
        }
        labelled.insert(value.to_string());
        (value.to_string(), true)
    }

    /// The values that have a label of their own.
    pub fn labelled(&self) -> Vec<String> {
        self.labelled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_values_keep_their_label_and_the_rest_share_one() {
        let labels = CappedLabels::new(2);
        assert_eq!(labels.label("a"), ("a".to_string(), true));
        assert_eq!(labels.label("a"), ("a".to_string(), false));
        assert_eq!(
            labels.label(OTHER),
            (OTHER.to_string(), false),
            "never a slot of its own"
        );
        assert_eq!(labels.label("b"), ("b".to_string(), true));
        assert_eq!(labels.label("c"), (OTHER.to_string(), false));
        assert_eq!(labels.label("b"), ("b".to_string(), false));
        assert_eq!(labels.labelled(), vec!["a".to_string(), "b".to_string()]);
    }
}
