//! Property test: random appends, truncations, purges and crash-reopens (with the tail file cut
//! at a random byte) against a simple in-memory model of the log.
//!
//! Invariants checked after every step: the log holds exactly the model's visible entries,
//! byte-identical, with the model's offsets (no holes); after a cut, nothing past the cut point
//! survives as garbage (the tail file is exactly the surviving frames).

use broker::storage::frame::FRAME_HEADER_LEN;
use broker::storage::{
    EntryId, EntryKind, FlushWorker, FsyncPolicy, LogConfig, NewEntry, Offset, RaftIndex, SegmentLog,
};
use bytes::Bytes;
use proptest::prelude::*;
use proto::record_batch::{encode_batch, ProducerStamp, Record};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(u8, u8, u16)>), // (kind selector, record count, value size)
    TruncateAfter(u16),
    Purge(u16),
    Reopen(Option<u16>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0u8..10, 1u8..6, 0u16..300), 1..6).prop_map(Op::Append),
        2 => any::<u16>().prop_map(Op::TruncateAfter),
        1 => any::<u16>().prop_map(Op::Purge),
        2 => prop::option::of(any::<u16>()).prop_map(Op::Reopen),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelEntry {
    id: EntryId,
    kind: EntryKind,
    body: Bytes,
    base_offset: Offset,
    record_count: u32,
}

/// The model: every entry physically written and not truncated, plus the purged prefix.
#[derive(Default)]
struct Model {
    entries: Vec<ModelEntry>,
    purged: Option<(EntryId, Offset)>,
    first_index: u64,
}

impl Model {
    fn visible(&self) -> Vec<&ModelEntry> {
        let purged = self.purged.map(|(id, _)| id.index);
        self.entries
            .iter()
            .filter(|e| purged.is_none_or(|p| e.id.index > p))
            .collect()
    }

    fn next_index(&self) -> u64 {
        let after_last = self.entries.last().map(|e| e.id.index.0 + 1);
        let after_purged = self.purged.map(|(id, _)| id.index.0 + 1);
        after_last
            .into_iter()
            .chain(after_purged)
            .max()
            .unwrap_or(self.first_index)
    }

    fn log_start(&self) -> Offset {
        match self.purged {
            Some((_, next)) => next,
            None => self.entries.first().map_or(Offset(0), |e| e.base_offset),
        }
    }

    fn log_end(&self) -> Offset {
        let visible = self.visible();
        match visible.last() {
            Some(e) => Offset(e.base_offset.0 + u64::from(e.record_count)),
            None => self.log_start(),
        }
    }

    fn last_id(&self) -> Option<EntryId> {
        let last = self.entries.last().map(|e| e.id);
        match (last, self.purged.map(|(id, _)| id)) {
            (Some(l), Some(p)) if p.index > l.index => Some(p),
            (Some(l), _) => Some(l),
            (None, p) => p,
        }
    }
}

fn batch(records: u8, value_size: u16, seed: u64) -> Bytes {
    let records: Vec<Record> = (0..records)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + seed as i64 * 10 + i64::from(i),
            key: Some(Bytes::from(format!("key-{seed}-{i}"))),
            value: Some(Bytes::from(vec![(seed % 251) as u8; value_size as usize])),
            ..Record::default()
        })
        .collect();
    encode_batch(&records, ProducerStamp::NONE)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 100,
        fsync: FsyncPolicy::Never,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn check(log: &SegmentLog, model: &Model) -> Result<(), TestCaseError> {
    let stored = log.read_entries(RaftIndex(0), RaftIndex(u64::MAX)).unwrap();
    let visible = model.visible();
    prop_assert_eq!(stored.len(), visible.len(), "entry count");
    for (got, want) in stored.iter().zip(&visible) {
        prop_assert_eq!(got.id, want.id);
        prop_assert_eq!(got.kind, want.kind);
        prop_assert_eq!(got.base_offset, want.base_offset, "offset of {}", want.id);
        prop_assert_eq!(got.record_count, want.record_count);
        prop_assert_eq!(&got.body, &want.body, "body of {}", want.id);
    }
    prop_assert_eq!(log.last_entry_id(), model.last_id());
    prop_assert_eq!(log.purged(), model.purged.map(|(id, _)| id));
    prop_assert_eq!(log.log_start_offset(), model.log_start());
    prop_assert_eq!(log.log_end_offset(), model.log_end());
    let data: Vec<_> = visible.iter().filter(|e| e.kind == EntryKind::Data).collect();
    let batches = log
        .read_batches(model.log_start(), usize::MAX, model.log_end())
        .unwrap();
    prop_assert_eq!(batches.len(), data.len(), "data batches by offset");
    // Every offset in the log is served by the batch that holds it.
    for entry in &data {
        let last_offset = Offset(entry.base_offset.0 + u64::from(entry.record_count) - 1);
        let first = log.read_batches(last_offset, 1, model.log_end()).unwrap();
        prop_assert_eq!(first.first().map(|b| b.id), Some(entry.id), "batch for {}", last_offset);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(first_index in 0u64..3, ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let flush = FlushWorker::start("model").unwrap();
        let open = || SegmentLog::open(dir.path(), config(), flush.handle(), 0).map(|(log, _)| log);
        let mut log = open().unwrap();
        let mut model = Model { first_index, ..Model::default() };
        let mut seed = 0u64;
        for op in ops {
            match op {
                Op::Append(specs) => {
                    let mut next_offset = model.log_end();
                    let mut entries = Vec::new();
                    for (next_index, (kind, records, size)) in (model.next_index()..).zip(specs) {
                        seed += 1;
                        let (kind, body, record_count) = match kind {
                            0 => (EntryKind::Blank, Bytes::new(), 0),
                            1 => (EntryKind::Membership, Bytes::from(format!("{{\"members\":{seed}}}")), 0),
                            _ => (EntryKind::Data, batch(records, size, seed), u32::from(records)),
                        };
                        let id = EntryId { term: 1 + seed / 7, leader_node: seed % 3, index: RaftIndex(next_index) };
                        entries.push(NewEntry { id, kind, body: body.clone() });
                        model.entries.push(ModelEntry { id, kind, body, base_offset: next_offset, record_count });
                        next_offset = Offset(next_offset.0 + u64::from(record_count));
                    }
                    log.append(entries, 0, Box::new(|r| r.expect("durable"))).unwrap();
                }
                Op::TruncateAfter(pick) => {
                    let visible: Vec<u64> = model.visible().iter().map(|e| e.id.index.0).collect();
                    if visible.is_empty() {
                        continue;
                    }
                    let purged = model.purged.map(|(id, _)| id.index.0);
                    // Keep a random prefix; with nothing purged, sometimes keep nothing at all.
                    let choice = pick as usize % (visible.len() + 1);
                    let keep = if choice == visible.len() {
                        purged
                    } else {
                        Some(visible[choice])
                    };
                    if keep.is_none() && purged.is_some() {
                        continue;
                    }
                    log.truncate_after(keep.map(RaftIndex)).unwrap();
                    model.entries.retain(|e| keep.is_some_and(|k| e.id.index.0 <= k));
                }
                Op::Purge(pick) => {
                    let visible = model.visible();
                    if visible.is_empty() {
                        continue;
                    }
                    let target = visible[pick as usize % visible.len()].clone();
                    log.purge(target.id, None).unwrap();
                    model.purged = Some((target.id, Offset(target.base_offset.0 + u64::from(target.record_count))));
                }
                Op::Reopen(cut) => {
                    let segments = log.segments();
                    drop(log);
                    if let (Some(cut), Some(active)) = (cut, segments.last()) {
                        // Frames of the active segment, laid out by the model.
                        let in_active: Vec<&ModelEntry> =
                            model.entries.iter().filter(|e| e.id.index >= active.first_index).collect();
                        let size: u64 = in_active.iter().map(|e| (FRAME_HEADER_LEN + e.body.len()) as u64).sum();
                        prop_assert_eq!(std::fs::metadata(&active.path).unwrap().len(), size);
                        let cut_at = if size == 0 { 0 } else { u64::from(cut) % (size + 1) };
                        let file = std::fs::OpenOptions::new().write(true).open(&active.path).unwrap();
                        file.set_len(cut_at).unwrap();
                        let mut end = 0u64;
                        let mut survivors = 0usize;
                        for e in &in_active {
                            end += (FRAME_HEADER_LEN + e.body.len()) as u64;
                            if end <= cut_at {
                                survivors += 1;
                            }
                        }
                        let lost: Vec<RaftIndex> = in_active[survivors..].iter().map(|e| e.id.index).collect();
                        model.entries.retain(|e| !lost.contains(&e.id.index));
                    }
                    log = open().unwrap();
                    if let Some(active) = log.segments().last() {
                        // Nothing past the last whole frame survives.
                        let expected: u64 = model
                            .entries
                            .iter()
                            .filter(|e| e.id.index >= active.first_index)
                            .map(|e| (FRAME_HEADER_LEN + e.body.len()) as u64)
                            .sum();
                        prop_assert_eq!(std::fs::metadata(&active.path).unwrap().len(), expected);
                    }
                }
            }
            check(&log, &model)?;
        }
    }
}
