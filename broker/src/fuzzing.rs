//! Entry points for fuzzing the broker's decoders of untrusted bytes — log frames, whole
//! segment files at recovery, the Raft transport's messages, configuration — each taking
//! arbitrary input and required never to panic. The coverage-guided targets under `fuzz/` call
//! them, and so does a short proptest run in the default test run (`tests/fuzz_decoders.rs`).
//! The client-facing request decoders are `proto::fuzzing`'s.

use crate::node::BrokerConfig;
use crate::storage::segment::{segment_stem, OpenMode, Segment};
use crate::storage::{Offset, OpenFiles, RaftIndex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// One frame as the segment scanner reads it.
pub fn frame(data: &[u8]) {
    let _ = crate::storage::frame::decode_frame(data);
}

/// A segment file holding `data`, opened as recovery after a crash opens an active segment
/// (every frame scanned, a bad tail cut).
pub fn segment(data: &[u8]) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "broker-fuzz-segment-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let first = RaftIndex(1);
    if std::fs::write(dir.join(format!("{}.log", segment_stem(first))), data).is_ok() {
        let files = OpenFiles::new(4);
        let _ = Segment::open(&dir, first, Offset(0), 0, 4096, OpenMode::ScanAll, &files);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A message of the Raft transport (`kind` picks which).
pub fn raft(kind: u8, data: &[u8]) {
    crate::replication::raft_service::decode_untrusted(kind, data);
}

/// A broker config file, and a topic's configs as `key=value` lines.
pub fn config(text: &str) {
    if let Ok(mut config) = toml::from_str::<BrokerConfig>(text) {
        let _ = config.validate();
    }
    let configs: HashMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.trim().to_string()))
        .collect();
    let _ = crate::storage::settings::log_config_from_map(&configs);
}
