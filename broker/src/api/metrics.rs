//! What clients write and read through this broker, counted where the API answers: bytes and
//! records accepted by Produce (duplicates of an idempotent retry are not counted again) and
//! bytes returned by Fetch. Refused requests are counted by `answer`
//! (`broker_request_errors_total{api, code}`). No topic or partition label: totals per broker,
//! so the series do not grow with partitions (per-partition figures: `topic describe`).

/// A produced batch was appended (leader side).
pub(super) fn produced(bytes: usize, records: u32) {
    metrics::counter!("broker_produced_bytes_total").increment(bytes as u64);
    metrics::counter!("broker_produced_records_total").increment(u64::from(records));
}

/// A fetch returned `bytes` of record batches.
pub(super) fn fetched(bytes: usize) {
    metrics::counter!("broker_fetched_bytes_total").increment(bytes as u64);
}

/// Registers the counters with their help texts, at zero.
pub fn describe() {
    let counters = [
        (
            "broker_produced_bytes_total",
            metrics::Unit::Bytes,
            "Bytes of record batches appended by Produce on this broker (as leader).",
        ),
        (
            "broker_produced_records_total",
            metrics::Unit::Count,
            "Records appended by Produce on this broker (as leader).",
        ),
        (
            "broker_fetched_bytes_total",
            metrics::Unit::Bytes,
            "Bytes of record batches returned by Fetch.",
        ),
    ];
    for (name, unit, help) in counters {
        metrics::describe_counter!(name, unit, help);
        metrics::counter!(name).absolute(0);
    }
    metrics::describe_counter!(
        "broker_request_errors_total",
        metrics::Unit::Count,
        "Requests refused, per RPC family and wire error code (docs/error-codes.md)."
    );
}
