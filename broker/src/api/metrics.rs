//! What clients write and read through this broker, counted where the API answers, per topic:
//! bytes and records accepted by Produce (duplicates of an idempotent retry are not counted
//! again) and bytes and records returned by Fetch. Refused requests are counted by `answer`
//! (`broker_request_errors_total{api, code}`).
//!
//! The `topic` label is capped ([`crate::metrics::labels`]): the first [`MAX_LABELLED_TOPICS`]
//! topics this process serves get their own series, every later one is summed under
//! `topic="_other"`, so the series never grow with the number of topics; there is no partition
//! label (per-partition figures: `topic describe`).

use crate::metrics::labels::{CappedLabels, OTHER};

/// How many topics get a `topic` label of their own on one broker process.
pub const MAX_LABELLED_TOPICS: usize = 100;

static TOPICS: CappedLabels = CappedLabels::new(MAX_LABELLED_TOPICS);

const PRODUCED_BYTES: &str = "broker_produced_bytes_total";
const PRODUCED_RECORDS: &str = "broker_produced_records_total";
const FETCHED_BYTES: &str = "broker_fetched_bytes_total";
const FETCHED_RECORDS: &str = "broker_fetched_records_total";
const COUNTERS: [&str; 4] = [PRODUCED_BYTES, PRODUCED_RECORDS, FETCHED_BYTES, FETCHED_RECORDS];

/// The label of `topic`, starting its series at zero when it is new (so a rate sees the first
/// increment).
fn topic_label(topic: &str) -> String {
    let (label, new) = TOPICS.label(topic);
    if new {
        for name in COUNTERS {
            metrics::counter!(name, "topic" => label.clone()).absolute(0);
        }
    }
    label
}

/// A produced batch was appended (leader side).
pub(super) fn produced(topic: &str, bytes: usize, records: u32) {
    let label = topic_label(topic);
    metrics::counter!(PRODUCED_BYTES, "topic" => label.clone()).increment(bytes as u64);
    metrics::counter!(PRODUCED_RECORDS, "topic" => label).increment(u64::from(records));
}

/// A fetch returned `bytes` of record batches holding `records` records.
pub(super) fn fetched(topic: &str, bytes: usize, records: u64) {
    let label = topic_label(topic);
    metrics::counter!(FETCHED_BYTES, "topic" => label.clone()).increment(bytes as u64);
    metrics::counter!(FETCHED_RECORDS, "topic" => label).increment(records);
}

/// Registers the counters with their help texts, their `_other` series at zero.
pub fn describe() {
    let counters = [
        (
            PRODUCED_BYTES,
            metrics::Unit::Bytes,
            "Bytes of record batches appended by Produce on this broker (as leader), per topic.",
        ),
        (
            PRODUCED_RECORDS,
            metrics::Unit::Count,
            "Records appended by Produce on this broker (as leader), per topic.",
        ),
        (
            FETCHED_BYTES,
            metrics::Unit::Bytes,
            "Bytes of record batches returned by Fetch, per topic.",
        ),
        (
            FETCHED_RECORDS,
            metrics::Unit::Count,
            "Records in the batches returned by Fetch, per topic.",
        ),
    ];
    for (name, unit, help) in counters {
        metrics::describe_counter!(name, unit, help);
        metrics::counter!(name, "topic" => OTHER).absolute(0);
    }
    metrics::describe_counter!(
        "broker_request_errors_total",
        metrics::Unit::Count,
        "Requests refused, per RPC family and wire error code (docs/error-codes.md)."
    );
}
