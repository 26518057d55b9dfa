//! Storage metrics, recorded through the `metrics` facade (served on the broker's admin
//! endpoint, `/metrics`, when it has one: `crate::metrics`). Only the IO shells call these; the pure codecs record nothing.

/// A frame failed validation outside a torn tail.
pub fn corrupt_frame() {
    metrics::counter!("storage_corrupt_frames_total").increment(1);
}

/// Recovery cut a torn write off the end of a log.
pub fn torn_tail_truncated() {
    metrics::counter!("storage_torn_tail_truncations_total").increment(1);
}

/// A missing or stale index was rebuilt from its log.
pub fn index_rebuilt() {
    metrics::counter!("storage_index_rebuilds_total").increment(1);
}

/// Bytes of frames appended.
pub fn appended(bytes: u64) {
    metrics::counter!("storage_appended_bytes_total").increment(bytes);
}

/// One group-commit round of the flush worker: the files it synced and how long their fsyncs
/// took together (what an acks=all write waits for on this broker).
pub fn flush_round(files_synced: u64, duration: std::time::Duration) {
    metrics::counter!("storage_flush_rounds_total").increment(1);
    metrics::counter!("storage_fsyncs_total").increment(files_synced);
    metrics::histogram!("storage_flush_round_duration_seconds").record(duration);
}

/// An fsync failed; the log concerned is now failed.
pub fn fsync_failed() {
    metrics::counter!("storage_fsync_errors_total").increment(1);
}

/// An append met a full disk (or no file handles) and waits to retry.
pub fn append_retried() {
    metrics::counter!("storage_append_retries_total").increment(1);
}

/// A produce was refused because the data directory's free space is below the floor.
pub fn write_refused_low_space() {
    metrics::counter!("storage_writes_refused_low_space_total").increment(1);
}

/// Files the open-file budget holds open now.
pub fn open_files(count: usize) {
    metrics::gauge!("storage_open_files").set(count as f64);
}

/// The budget reopened a file it had closed.
pub fn file_reopened() {
    metrics::counter!("storage_file_reopens_total").increment(1);
}

/// The budget closed least-recently-used files to stay within its capacity.
pub fn files_evicted(count: u64) {
    metrics::counter!("storage_file_evictions_total").increment(count);
}

/// Registers every storage metric with its help text and a zero value, so a scrape shows all
/// of them from the start (an alert on `rate(storage_fsync_errors_total[5m])` needs the series
/// before the first error). Called once by the node after it installs the recorder.
pub fn describe() {
    let counters = [
        (
            "storage_corrupt_frames_total",
            "Frames that failed validation outside a torn tail.",
        ),
        (
            "storage_torn_tail_truncations_total",
            "Torn writes cut off a log's end at recovery.",
        ),
        (
            "storage_index_rebuilds_total",
            "Missing or stale indexes rebuilt from their log.",
        ),
        (
            "storage_appended_bytes_total",
            "Bytes of frames appended to partition logs.",
        ),
        ("storage_flush_rounds_total", "Group-commit rounds of the flush worker."),
        ("storage_fsyncs_total", "Files fdatasync'ed by the flush worker."),
        (
            "storage_fsync_errors_total",
            "Failed fsyncs (the log concerned refuses writes).",
        ),
        (
            "storage_append_retries_total",
            "Appends retried after a full disk or too many open files.",
        ),
        (
            "storage_writes_refused_low_space_total",
            "Produce requests refused because free space was below min_free_bytes.",
        ),
        (
            "storage_file_reopens_total",
            "Log files reopened after the open-file budget had closed them.",
        ),
        (
            "storage_file_evictions_total",
            "Log files closed to keep within the open-file budget (max_open_files).",
        ),
    ];
    for (name, help) in counters {
        metrics::describe_counter!(name, metrics::Unit::Count, help);
        metrics::counter!(name).absolute(0);
    }
    metrics::describe_gauge!(
        "storage_open_files",
        metrics::Unit::Count,
        "Log files held open by the open-file budget (at most max_open_files)."
    );
    metrics::gauge!("storage_open_files").set(0.0);
    metrics::describe_histogram!(
        "storage_flush_round_duration_seconds",
        metrics::Unit::Seconds,
        "How long a group-commit round's fsyncs took together."
    );
    let _ = metrics::histogram!("storage_flush_round_duration_seconds");
}
