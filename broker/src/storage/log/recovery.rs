//! Opening a partition log after a restart: open its segments oldest first (each verifies and
//! repairs itself, see [`segment`](crate::storage::segment)), check that they chain into one
//! contiguous run, drop an empty active segment and purged segments, and compare what
//! survived with what had been acknowledged before the restart.

use super::recent::RecentEntries;
use super::{LogHost, SegmentLog};
use crate::storage::acknowledged::{AcknowledgedMark, MarkOnOpen};
use crate::storage::config::LogConfig;
use crate::storage::error::{StorageError, StorageResult};
use crate::storage::segment::{parse_segment_name, OpenMode, Segment};
use crate::storage::state_file::StateFile;
use crate::storage::types::{EntryId, Offset};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What opening a log found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments opened.
    pub segments: usize,
    /// Bytes of torn tail cut off the active segment.
    pub truncated_bytes: u64,
    /// Bytes cut off the active segment from a corrupt frame that valid frames followed.
    pub corrupt_bytes_cut: u64,
    /// Segments whose index files were rebuilt.
    pub rebuilt_indexes: usize,
    /// Set when the log ends before entries this replica had reported durable (or had known
    /// committed): storage lost acknowledged data. See [`acknowledged`](super::acknowledged).
    pub lost_acknowledged: Option<LostAcknowledged>,
}

/// How much acknowledged data a recovered log is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAcknowledged {
    /// Entries up to this one had been reported durable (or known committed); the log now ends
    /// before it.
    Through(EntryId),
    /// The acknowledged mark itself was damaged, so what was lost is unknown.
    Unknown,
}

impl SegmentLog {
    /// Opens (or creates) the log in `dir`, recovering from a crash: a torn tail of the active
    /// segment is cut, missing or stale indexes are rebuilt. Corruption anywhere else is
    /// returned as [`StorageError::Corrupt`].
    pub fn open(
        dir: &Path,
        config: LogConfig,
        host: impl Into<LogHost>,
        now_ms: i64,
    ) -> StorageResult<(SegmentLog, RecoveryReport)> {
        let LogHost { flush: flusher, files } = host.into();
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let state = StateFile::load(dir)?;
        let mut first_indexes = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
            let entry = entry.map_err(|e| StorageError::io(dir, e))?;
            if let Some(index) = entry.file_name().to_str().and_then(parse_segment_name) {
                first_indexes.push(index);
            }
        }
        first_indexes.sort();
        let mut report = RecoveryReport::default();
        let mut segments: Vec<Segment> = Vec::with_capacity(first_indexes.len());
        let mut next_offset = state.state().purged.map_or(Offset(0), |p| p.next_offset);
        for (position, first_index) in first_indexes.iter().enumerate() {
            let is_active = position + 1 == first_indexes.len();
            let mode = if is_active { OpenMode::ScanAll } else { OpenMode::Sealed };
            let (segment, recovery) = Segment::open(
                dir,
                *first_index,
                next_offset,
                now_ms,
                config.index_interval_bytes,
                mode,
                &files,
            )?;
            if let Some(previous) = segments.last() {
                let expected = previous.last().map(|h| h.id.index.0 + 1);
                if expected != Some(first_index.0) {
                    return Err(StorageError::Corrupt {
                        path: segment.log_path().to_path_buf(),
                        position: 0,
                        reason: format!(
                            "segment starts at {first_index} but the previous one ends at {:?}",
                            previous.last().map(|h| h.id.index.0)
                        ),
                    });
                }
            }
            report.truncated_bytes += recovery.truncated_bytes;
            report.corrupt_bytes_cut += recovery.corrupt_bytes_cut;
            report.rebuilt_indexes += usize::from(recovery.rebuilt_index);
            next_offset = segment.next_offset();
            segments.push(segment);
        }
        // An empty active segment is what a crash right after a roll (or a torn first frame)
        // leaves; drop it so the log ends with its last entry and the next append starts a
        // segment named after its own index.
        if segments.last().is_some_and(|s| s.last().is_none()) {
            let empty = segments.pop().expect("checked non-empty");
            empty.delete_files()?;
        }
        report.segments = segments.len();
        let (acknowledged, mark) = AcknowledgedMark::open(dir, &files)?;
        let failed = Arc::new(AtomicBool::new(false));
        let mut log = SegmentLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            state: state.sharing_failure(Arc::clone(&failed)),
            flusher,
            files,
            failed,
            acknowledged: Arc::new(acknowledged),
            recent: RecentEntries::default(),
        };
        log.drop_purged_segments()?;
        report.lost_acknowledged = log.check_acknowledged(mark);
        if report.corrupt_bytes_cut > 0 && report.lost_acknowledged.is_none() && mark == MarkOnOpen::Absent {
            // Whole entries were lost, and no mark says whether any had been acknowledged.
            report.lost_acknowledged = Some(LostAcknowledged::Unknown);
        }
        Ok((log, report))
    }

    /// Compares the recovered log with what was acknowledged before the restart. If the log
    /// ends before the last committed entry the state file remembers, that entry is clamped to
    /// the log's end, so Raft re-applies only what exists; the replication layer then keeps the
    /// replica out of elections until it has the lost entries back.
    fn check_acknowledged(&mut self, mark: MarkOnOpen) -> Option<LostAcknowledged> {
        let end = self.last_entry_id().map_or(0, |id| id.index.0);
        let committed = self.committed().filter(|c| c.index.0 > end);
        if committed.is_some() {
            self.state.set_committed_lazily(self.last_entry_id());
        }
        let marked = match mark {
            MarkOnOpen::Unreadable => return Some(LostAcknowledged::Unknown),
            MarkOnOpen::Absent => None,
            MarkOnOpen::Entry(id) => Some(id).filter(|id| id.index.0 > end),
        };
        // The later in log order: a mark from an older leader names no entry beyond the commit.
        marked
            .into_iter()
            .chain(committed)
            .max_by_key(|id| (id.term, id.leader_node, id.index))
            .map(LostAcknowledged::Through)
    }
}
