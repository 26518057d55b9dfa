//! Crash recovery, corruption, retention and bad-input behaviour of the segment log, each
//! against real files. The documented behaviour is in docs/architecture.md ("Recovery rules").

use broker::storage::frame::FRAME_HEADER_LEN;
use broker::storage::{
    EntryId, EntryKind, FlushWorker, FsyncPolicy, LogConfig, LostAcknowledged, NewEntry, Offset, RaftIndex, SegmentLog,
    StorageError,
};
use bytes::Bytes;
use proptest::prelude::*;
use proto::record_batch::{encode_batch, ProducerStamp, Record};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;

fn batch(records: usize, timestamp: i64, value_size: usize) -> Bytes {
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            timestamp: timestamp + i as i64,
            value: Some(Bytes::from(vec![b'v'; value_size])),
            ..Record::default()
        })
        .collect();
    encode_batch(&records, ProducerStamp::NONE)
}

fn data_entry(index: u64, records: usize, timestamp: i64, value_size: usize) -> NewEntry {
    NewEntry {
        id: EntryId {
            term: 1,
            leader_node: 1,
            index: RaftIndex(index),
        },
        kind: EntryKind::Data,
        body: batch(records, timestamp, value_size),
    }
}

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        fsync: FsyncPolicy::Never,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, flush: &FlushWorker, config: LogConfig) -> broker::storage::StorageResult<SegmentLog> {
    SegmentLog::open(dir, config, flush.handle(), T0).map(|(log, _)| log)
}

/// Appends `count` data entries of 2 records each, one per append, timestamps 1 s apart.
fn fill(log: &mut SegmentLog, count: u64, value_size: usize) {
    for i in 0..count {
        let entry = data_entry(i, 2, T0 + i as i64 * 1000, value_size);
        log.append(vec![entry], T0, Box::new(|r| r.unwrap())).unwrap();
    }
}

/// A log in a fresh directory holding `count` entries written by [`fill`].
fn filled_log(config: LogConfig, count: u64, value_size: usize) -> (tempfile::TempDir, FlushWorker, SegmentLog) {
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    let mut log = open(dir.path(), &flush, config).unwrap();
    fill(&mut log, count, value_size);
    (dir, flush, log)
}

/// [`config`] with 1 MiB segments under `fsync = always`.
fn fsync_always() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Always,
        ..config(1 << 20)
    }
}

/// Like [`filled_log`] (50-byte values) under `fsync = always`, returning once every append was
/// reported durable — so the acknowledged mark names the last entry.
fn durably_filled_log(count: u64) -> (tempfile::TempDir, FlushWorker, SegmentLog) {
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    let mut log = open(dir.path(), &flush, fsync_always()).unwrap();
    let (tx, rx) = mpsc::channel();
    for i in 0..count {
        let tx = tx.clone();
        let entry = data_entry(i, 2, T0 + i as i64 * 1000, 50);
        log.append(
            vec![entry],
            T0,
            Box::new(move |result| {
                result.unwrap();
                tx.send(()).unwrap();
            }),
        )
        .unwrap();
    }
    for _ in 0..count {
        rx.recv_timeout(Duration::from_secs(60)).expect("durable");
    }
    (dir, flush, log)
}

/// Byte position of each frame in a segment file that holds entries `first..` of `fill`.
fn frame_positions(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut positions = Vec::new();
    let mut at = 0usize;
    while at + 4 <= bytes.len() {
        positions.push(at as u64);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    positions
}

fn flip_bit(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bit_flip_in_the_tail_frame_is_cut_as_a_torn_write() {
    let (dir, flush, log) = filled_log(config(1 << 20), 20, 50);
    let path = log.segments()[0].path.clone();
    drop(log);
    let last = *frame_positions(&path).last().unwrap();
    flip_bit(&path, last + FRAME_HEADER_LEN as u64 + 10);
    let len_before = std::fs::metadata(&path).unwrap().len();

    let (mut log, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(report.truncated_bytes, len_before - last);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        last,
        "the torn frame is cut off"
    );
    assert_eq!(log.last_entry_id().unwrap().index, RaftIndex(18));
    assert_eq!(log.log_end_offset(), Offset(38));
    // The log continues where the intact prefix ends.
    log.append(vec![data_entry(19, 2, T0, 50)], T0, Box::new(|r| r.unwrap()))
        .unwrap();
    assert_eq!(log.read_entries(RaftIndex(0), RaftIndex(100)).unwrap().len(), 20);
}

fn entry_id(index: u64) -> EntryId {
    EntryId {
        term: 1,
        leader_node: 1,
        index: RaftIndex(index),
    }
}

fn truncate_file(path: &Path, length: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(length)
        .unwrap();
}

#[test]
fn losing_entries_that_were_reported_durable_is_told_apart_from_a_torn_unreported_write() {
    // A crash in the middle of a write: the partial frame was never reported durable.
    let (dir, flush, log) = durably_filled_log(20);
    let path = log.segments()[0].path.clone();
    drop(log);
    let bytes = std::fs::read(&path).unwrap();
    let last = *frame_positions(&path).last().unwrap() as usize;
    let mut torn = bytes.clone();
    torn.extend_from_slice(&bytes[last..last + 30]);
    std::fs::write(&path, &torn).unwrap();
    let (log, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(report.truncated_bytes, 30);
    assert_eq!(report.lost_acknowledged, None, "nothing reported durable is missing");
    drop(log);

    // Storage loses the end of a frame that was reported durable.
    truncate_file(&path, last as u64 + 7);
    let (log, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(log.last_entry_id(), Some(entry_id(18)));
    assert_eq!(report.lost_acknowledged, Some(LostAcknowledged::Through(entry_id(19))));
    drop(log);
    // Still missing on the next open: the mark is not forgotten until the entry is back.
    let (mut log, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(report.lost_acknowledged, Some(LostAcknowledged::Through(entry_id(19))));
    log.append(vec![data_entry(19, 2, T0, 50)], T0, Box::new(|r| r.unwrap()))
        .unwrap();
    drop(log);
    let (_, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(report.lost_acknowledged, None, "caught up again");
}

#[test]
fn only_fsync_always_moves_the_mark_and_a_cut_behind_the_mark_loses_nothing_acknowledged() {
    // Ten entries reported durable under fsync=always, ten more under fsync=never (reported
    // before any fsync, so not acknowledged in the mark's sense).
    let (dir, flush, log) = durably_filled_log(10);
    drop(log);
    let mut log = open(dir.path(), &flush, config(1 << 20)).unwrap();
    for i in 10..20 {
        log.append(vec![data_entry(i, 2, T0, 50)], T0, Box::new(|r| r.unwrap()))
            .unwrap();
    }
    let path = log.segments()[0].path.clone();
    drop(log);
    // A bit flips in entry 15: entries 15.. are cut, but the mark (entry 9) is still held.
    flip_bit(&path, frame_positions(&path)[15] + FRAME_HEADER_LEN as u64 + 3);
    let (log, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert!(report.corrupt_bytes_cut > 0);
    assert_eq!(log.last_entry_id(), Some(entry_id(14)));
    assert_eq!(
        report.lost_acknowledged, None,
        "nothing reported durable under fsync=always is missing"
    );
}

#[test]
fn entries_raft_replaced_are_not_mistaken_for_lost_ones() {
    let (dir, flush, mut log) = durably_filled_log(20);
    log.truncate_after(Some(RaftIndex(9))).unwrap();
    drop(log);
    let (log, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(log.last_entry_id(), Some(entry_id(9)));
    assert_eq!(report.lost_acknowledged, None);
}

#[test]
fn a_committed_entry_beyond_the_recovered_log_is_reported_and_clamped() {
    let (dir, flush, mut log) = filled_log(config(1 << 20), 20, 50);
    log.save_committed(Some(entry_id(19)));
    log.close().unwrap();
    let path = log.segments()[0].path.clone();
    drop(log);
    // Both the mark and the remembered commit are gone: only the commit index says what was lost.
    std::fs::remove_file(dir.path().join("acknowledged.mark")).unwrap();
    truncate_file(&path, frame_positions(&path)[15]);
    let (log, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(report.lost_acknowledged, Some(LostAcknowledged::Through(entry_id(19))));
    assert_eq!(
        log.committed(),
        Some(entry_id(14)),
        "Raft is not asked to re-apply entries that are gone"
    );
}

#[test]
fn a_damaged_acknowledged_mark_means_unknown_loss() {
    let (dir, flush, log) = filled_log(config(1 << 20), 5, 50);
    drop(log);
    std::fs::write(dir.path().join("acknowledged.mark"), b"garbage").unwrap();
    let (_, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(report.lost_acknowledged, Some(LostAcknowledged::Unknown));
}

#[test]
fn bit_flip_in_the_middle_of_the_active_segment_cuts_from_there_and_reports_the_loss() {
    let (dir, flush, log) = durably_filled_log(20);
    let path = log.segments()[0].path.clone();
    drop(log);
    let fifth = frame_positions(&path)[5];
    flip_bit(&path, fifth + FRAME_HEADER_LEN as u64 + 3);
    let size_before = std::fs::metadata(&path).unwrap().len();

    let (log, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    // Entries after a corrupt one cannot be used without it: the replica gets them back from
    // its peers, and the report says it lost entries it had acknowledged.
    assert_eq!(report.corrupt_bytes_cut, size_before - fifth);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.last_entry_id(), Some(entry_id(4)));
    assert_eq!(report.lost_acknowledged, Some(LostAcknowledged::Through(entry_id(19))));
    drop(log);

    // Without a mark (a directory from before marks), the loss is still reported, as unknown.
    let (dir, flush, log) = durably_filled_log(20);
    let path = log.segments()[0].path.clone();
    drop(log);
    std::fs::remove_file(dir.path().join("acknowledged.mark")).unwrap();
    flip_bit(&path, frame_positions(&path)[5] + FRAME_HEADER_LEN as u64 + 3);
    let (_, report) = SegmentLog::open(dir.path(), config(1 << 20), flush.handle(), T0).unwrap();
    assert_eq!(report.lost_acknowledged, Some(LostAcknowledged::Unknown));
}

#[test]
fn bit_flip_in_a_sealed_segment_is_an_error_on_read_and_other_data_stays_readable() {
    let (dir, flush, log) = filled_log(config(1024), 30, 100);
    let segments = log.segments();
    assert!(segments.len() >= 4, "small segments roll: {}", segments.len());
    drop(log);
    flip_bit(&segments[0].path, FRAME_HEADER_LEN as u64 + 20);

    let log = open(dir.path(), &flush, config(1024)).unwrap();
    let second_start = segments[1].first_index;
    assert!(matches!(
        log.read_entries(RaftIndex(0), RaftIndex(1)),
        Err(StorageError::Corrupt { .. })
    ));
    assert!(matches!(
        log.read_batches(Offset(0), 1 << 20, Offset(u64::MAX)),
        Err(StorageError::Corrupt { .. })
    ));
    let rest = log.read_entries(second_start, RaftIndex(30)).unwrap();
    assert_eq!(rest.len() as u64, 30 - second_start.0);
}

#[test]
fn truncated_and_deleted_index_files_are_rebuilt_identically() {
    let (dir, flush, mut log) = filled_log(config(4096), 60, 100);
    let segments = log.segments();
    log.close().unwrap();
    drop(log);
    assert!(segments.len() >= 3);
    let index_of = |i: usize, ext: &str| segments[i].path.with_extension(ext);
    let original_index = std::fs::read(index_of(0, "index")).unwrap();
    let original_time = std::fs::read(index_of(0, "timeindex")).unwrap();
    assert!(original_index.len() >= 40, "index has entries");
    assert!(
        !index_of(segments.len() - 1, "index").exists(),
        "the active segment's index lives in memory until the segment is sealed"
    );

    // Sealed segment 0: index cut mid-entry, time index deleted.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(index_of(0, "index"))
        .unwrap();
    file.set_len(original_index.len() as u64 / 2 + 3).unwrap();
    std::fs::remove_file(index_of(0, "timeindex")).unwrap();
    // Sealed segment 1: index deleted.
    std::fs::remove_file(index_of(1, "index")).unwrap();

    let (log, report) = SegmentLog::open(dir.path(), config(4096), flush.handle(), T0).unwrap();
    // The two sealed segments count as repaired; the active segment's index is rebuilt by
    // every open (it is written only when the segment is sealed or the log closed).
    assert_eq!(report.rebuilt_indexes, 2, "{report:?}");
    assert_eq!(std::fs::read(index_of(0, "index")).unwrap(), original_index);
    assert_eq!(std::fs::read(index_of(0, "timeindex")).unwrap(), original_time);
    assert!(index_of(1, "index").exists(), "a rebuilt sealed index is written back");
    // Lookups through the rebuilt indexes find every offset.
    for offset in [0u64, 1, 37, 64, 119] {
        let batches = log.read_batches(Offset(offset), 1, Offset(u64::MAX)).unwrap();
        let first = &batches[0];
        assert!(
            first.base_offset.0 <= offset && offset < first.base_offset.0 + 2,
            "offset {offset}"
        );
    }
}

#[test]
fn time_retention_deletes_old_segments_and_moves_the_log_start() {
    let config = LogConfig {
        retention_ms: Some(20_000),
        ..config(1024)
    };
    // Entry i has timestamps T0 + i s.
    let (dir, flush, mut log) = filled_log(config.clone(), 40, 100);
    let before = log.segments();
    // At T0 + 45 s, records older than T0 + 25 s are expired.
    let now = T0 + 45_000;
    let point = log.enforce_retention(now).unwrap().expect("something expires");
    let after = log.segments();
    assert!(after.len() < before.len());
    assert_eq!(after[0].first_index.0, point.index.0 + 1, "whole segments go");
    for gone in &before[..before.len() - after.len()] {
        assert!(!gone.path.exists(), "{} deleted", gone.path.display());
    }
    // Every entry of a deleted segment was older than the cutoff; the first kept segment has
    // a record newer than it.
    assert!(point.index.0 < 25);
    let start = log.log_start_offset();
    assert_eq!(start, Offset((point.index.0 + 1) * 2));
    assert!(matches!(
        log.read_batches(Offset(start.0 - 1), 1, Offset(u64::MAX)),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        log.read_batches(start, 1, Offset(u64::MAX)).unwrap()[0].base_offset,
        start
    );
    // The purge survives a restart.
    drop(log);
    let log = open(dir.path(), &flush, config).unwrap();
    assert_eq!(log.log_start_offset(), start);
    // Far in the future everything but the active segment goes.
    let mut log = log;
    log.enforce_retention(T0 + 10_000_000).unwrap();
    assert_eq!(log.segments().len(), 1);
    assert_eq!(log.log_end_offset(), Offset(80));
}

#[test]
fn segments_roll_by_record_time_even_within_one_append() {
    // A follower catching up appends many entries at once: they roll as if written one by one.
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    let config = LogConfig {
        segment_ms: 5_000,
        ..config(1 << 30)
    };
    let mut log = open(dir.path(), &flush, config).unwrap();
    let entries: Vec<NewEntry> = (0..20).map(|i| data_entry(i, 2, T0 + i as i64 * 1000, 10)).collect();
    log.append(entries, T0, Box::new(|r| r.unwrap())).unwrap();
    let firsts: Vec<u64> = log.segments().iter().map(|s| s.first_index.0).collect();
    assert_eq!(firsts, vec![0, 5, 10, 15], "a segment per 5 s of record time");
}

#[test]
fn an_aged_active_segment_is_sealed_so_retention_can_delete_it() {
    let config = LogConfig {
        segment_ms: 1_000,
        retention_ms: Some(2_000),
        ..config(1 << 20)
    };
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    let mut log = open(dir.path(), &flush, config.clone()).unwrap();
    for i in 0..3 {
        let entry = data_entry(i, 2, T0, 10);
        log.append(vec![entry], T0, Box::new(|r| r.unwrap())).unwrap();
    }
    let later = T0 + 10_000;
    assert_eq!(log.retention_point(later), None, "the active segment is never deleted");
    assert!(!log.roll_if_aged(T0 + 500).unwrap(), "not old enough yet");
    assert!(log.roll_if_aged(later).unwrap());
    assert!(
        !log.roll_if_aged(later).unwrap(),
        "an empty active segment is not rolled again"
    );
    let (point, log_start) = log.retention_point(later).expect("the sealed segment expired");
    assert_eq!((point.index, log_start), (RaftIndex(2), Offset(6)));
    log.purge(point, None).unwrap();
    assert_eq!(log.log_start_offset(), Offset(6));
    assert_eq!(log.log_end_offset(), Offset(6));
    // Writing goes on right after the purged entries, and survives a restart.
    log.append(vec![data_entry(3, 2, later, 10)], later, Box::new(|r| r.unwrap()))
        .unwrap();
    assert_eq!(
        log.read_batches(Offset(6), 1, Offset(u64::MAX)).unwrap()[0].base_offset,
        Offset(6)
    );
    drop(log);
    let log = open(dir.path(), &flush, config).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (Offset(6), Offset(8)));
}

#[test]
fn size_retention_keeps_the_log_at_or_above_the_limit() {
    let config = LogConfig {
        retention_bytes: Some(3000),
        ..config(1024)
    };
    let (_dir, _flush, mut log) = filled_log(config, 40, 100);
    let total = |log: &SegmentLog| log.segments().iter().map(|s| s.size).sum::<u64>();
    assert!(total(&log) > 6000);
    log.enforce_retention(T0).unwrap().expect("over the limit");
    let remaining = total(&log);
    let oldest = log.segments()[0].size;
    assert!(remaining >= 3000, "kept at least the limit: {remaining}");
    assert!(
        remaining - oldest < 3000,
        "deleting one more would go under: {remaining}"
    );
    assert_eq!(log.enforce_retention(T0).unwrap(), None, "idempotent");
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    let mut log = open(dir.path(), &flush, config(1024)).unwrap();
    fill(&mut log, 30, 100); // entry i: records at T0 + i s and T0 + i s + 1 ms
    assert_eq!(log.offset_for_timestamp(T0 - 5).unwrap(), Some(Offset(0)));
    assert_eq!(log.offset_for_timestamp(T0 + 7000).unwrap(), Some(Offset(14)));
    assert_eq!(log.offset_for_timestamp(T0 + 7001).unwrap(), Some(Offset(15)));
    assert_eq!(log.offset_for_timestamp(T0 + 7002).unwrap(), Some(Offset(16)));
    assert_eq!(log.offset_for_timestamp(T0 + 29_001).unwrap(), Some(Offset(59)));
    assert_eq!(log.offset_for_timestamp(T0 + 29_002).unwrap(), None);
}

#[test]
fn bad_arguments_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    assert!(matches!(
        open(dir.path(), &flush, config(0)),
        Err(StorageError::InvalidConfig(_))
    ));
    let mut log = open(dir.path(), &flush, config(1 << 20)).unwrap();
    fill(&mut log, 3, 10);
    let gap = data_entry(7, 1, T0, 1);
    assert!(matches!(
        log.append(vec![gap], T0, Box::new(|_| panic!("not called"))),
        Err(StorageError::NonContiguousAppend { expected: 3, got: 7 })
    ));
    let garbage = NewEntry {
        body: Bytes::from_static(b"not a record batch"),
        ..data_entry(3, 1, T0, 1)
    };
    assert!(matches!(
        log.append(vec![garbage], T0, Box::new(|_| panic!("not called"))),
        Err(StorageError::InvalidBatch { .. })
    ));
    assert!(matches!(
        log.read_batches(Offset(7), 100, Offset(u64::MAX)),
        Err(StorageError::OffsetOutOfRange { log_end: Offset(6), .. })
    ));
    assert!(
        log.read_batches(Offset(6), 100, Offset(u64::MAX)).unwrap().is_empty(),
        "log end is empty, not an error"
    );
    log.purge(log.read_entries(RaftIndex(1), RaftIndex(2)).unwrap()[0].id, None)
        .unwrap();
    assert!(matches!(
        log.truncate_after(Some(RaftIndex(0))),
        Err(StorageError::InvalidPosition(_))
    ));
    // Nothing was lost by the refused calls.
    assert_eq!(log.read_entries(RaftIndex(0), RaftIndex(10)).unwrap().len(), 1);
    assert_eq!(log.log_end_offset(), Offset(6));
}

#[test]
fn high_watermark_bounds_reads_by_offset() {
    let (_dir, _flush, log) = filled_log(config(1 << 20), 10, 10);
    let visible = log.read_batches(Offset(0), usize::MAX, Offset(8)).unwrap();
    assert_eq!(visible.len(), 4, "batches starting below offset 8");
    assert!(log.read_batches(Offset(8), usize::MAX, Offset(8)).unwrap().is_empty());
}

#[test]
fn fsync_always_reports_durability_after_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    let mut log = open(dir.path(), &flush, fsync_always()).unwrap();
    let durable = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    for i in 0..200 {
        let durable = Arc::clone(&durable);
        let tx = tx.clone();
        // The worker's round counters, read before the append and when it is reported durable
        // (the callback runs on the worker, between rounds).
        let observer = flush.handle();
        let started_before_append = observer.stats().rounds_started.load(Ordering::Relaxed);
        log.append(
            vec![data_entry(i, 1, T0, 100)],
            T0,
            Box::new(move |result| {
                result.unwrap();
                durable.fetch_add(1, Ordering::SeqCst);
                let stats = observer.stats();
                let started = stats.rounds_started.load(Ordering::Relaxed);
                let finished = stats.rounds.load(Ordering::Relaxed);
                tx.send((started_before_append, started, finished)).unwrap();
            }),
        )
        .unwrap();
    }
    for _ in 0..200 {
        let (started_before_append, started, finished) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("every append becomes durable");
        // Reported durable only after its fsync: no round was mid-fsync, and a round that began
        // after the append had finished.
        assert_eq!(
            finished, started,
            "reported durable while its round's fsyncs were still running"
        );
        assert!(
            finished > started_before_append,
            "reported durable before any fsync begun after the append had finished"
        );
    }
    assert_eq!(durable.load(Ordering::SeqCst), 200);
    let stats = flush.handle();
    let fsyncs = stats.stats().fsyncs.load(Ordering::Relaxed);
    assert!(fsyncs < 200, "appends share fsyncs: {fsyncs}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever bytes the active segment holds, opening the log returns a log or an error;
    /// it never panics, and what it serves passed its CRC.
    #[test]
    fn arbitrary_segment_content_never_panics(
        garbage in prop::collection::vec(any::<u8>(), 0..600),
        keep_prefix in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let flush = FlushWorker::start("p").unwrap();
        let path = dir.path().join(format!("{:020}.log", 0));
        let mut bytes = Vec::new();
        if keep_prefix {
            let mut log = open(dir.path(), &flush, config(1 << 20)).unwrap();
            fill(&mut log, 3, 20);
            drop(log);
            bytes = std::fs::read(&path).unwrap();
        }
        bytes.extend_from_slice(&garbage);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(log) = open(dir.path(), &flush, config(1 << 20)) {
            let entries = log.read_entries(RaftIndex(0), RaftIndex(u64::MAX)).unwrap();
            if keep_prefix {
                prop_assert!(entries.len() >= 3);
            }
        }
    }
}

#[test]
fn segments_roll_by_size_and_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    let aging = LogConfig {
        segment_ms: 60_000,
        ..config(1 << 20)
    };
    let mut log = open(dir.path(), &flush, aging).unwrap();
    // Record timestamps are T0 + i s; the segment's age is measured from its first record.
    let append_at = |log: &mut SegmentLog, index: u64, now: i64| {
        log.append(vec![data_entry(index, 1, T0, 10)], now, Box::new(|r| r.unwrap()))
            .unwrap();
    };
    append_at(&mut log, 0, T0);
    append_at(&mut log, 1, T0 + 59_999);
    assert_eq!(log.segments().len(), 1, "younger than segment_ms");
    append_at(&mut log, 2, T0 + 60_000);
    assert_eq!(log.segments().len(), 2, "rolled by age");
    assert_eq!(log.segments()[1].first_index, RaftIndex(2));

    let mut small = open(tempfile::tempdir().unwrap().keep().as_path(), &flush, config(1024)).unwrap();
    for i in 0..10 {
        small
            .append(vec![data_entry(i, 1, T0, 300)], T0, Box::new(|r| r.unwrap()))
            .unwrap();
    }
    let segments = small.segments();
    assert!(segments.len() >= 3, "rolled by size: {}", segments.len());
    assert!(
        segments.iter().all(|s| s.size <= 1024),
        "no segment exceeds segment_bytes"
    );
    // After a restart the chain is intact and the data readable.
    let dir = small.dir().to_path_buf();
    drop(small);
    let small = open(&dir, &flush, config(1024)).unwrap();
    assert_eq!(small.read_entries(RaftIndex(0), RaftIndex(10)).unwrap().len(), 10);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Reads are done in bounded chunks (64 KiB … 8 MiB): frames larger than a chunk, reads that
/// span many chunks, and sealed segments reopened must all come back byte-identical.
#[test]
fn large_frames_and_long_ranges_read_back_across_chunk_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let flush = FlushWorker::start("t").unwrap();
    let config = config(16 * 1024 * 1024);
    let mut log = open(dir.path(), &flush, config.clone()).unwrap();
    // 100 KiB .. 9 MiB values: above the 64 KiB minimum chunk, one above the 8 MiB maximum.
    let sizes = [
        100 * 1024,
        1024 * 1024,
        3 * 1024 * 1024,
        9 * 1024 * 1024,
        200 * 1024,
        5 * 1024 * 1024,
    ];
    let entries: Vec<NewEntry> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| data_entry(i as u64, 1, T0, *size))
        .collect();
    for entry in &entries {
        log.append(vec![entry.clone()], T0, Box::new(|r| r.unwrap())).unwrap();
    }
    assert!(log.segments().len() >= 2, "entries spread over sealed segments");
    drop(log);
    let log = open(dir.path(), &flush, config).unwrap();
    let stored = log.read_entries(RaftIndex(0), RaftIndex(u64::MAX)).unwrap();
    let bodies: Vec<&Bytes> = stored.iter().map(|e| &e.body).collect();
    let expected: Vec<&Bytes> = entries.iter().map(|e| &e.body).collect();
    assert_eq!(bodies, expected);
    // A small byte budget still returns the one (huge) batch holding the offset.
    let one = log.read_batches(Offset(3), 100, Offset(u64::MAX)).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].body, entries[3].body);
}
