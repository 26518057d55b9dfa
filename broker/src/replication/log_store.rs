//! The adapter that makes a [`SegmentLog`] openraft's `RaftLogStorage`: the Raft log *is* the
//! partition log, so record data reaches the disk once.
//!
//! The log sits behind a `std` `RwLock` held only for the duration of page-cache reads and
//! writes, never across an `.await`; fsyncs happen on the flush worker, which completes
//! openraft's `IOFlushed` after the data is durable.

use super::snapshot::SnapshotSlot;
use super::types::{
    entry_id_of, log_id_of, stored_vote_of, vote_of, Entry, LogId, LogStartMark, PartitionPayload, PartitionRaft,
    ProposalToken, RecordBatchPayload, Vote,
};
use crate::storage::{EntryKind, NewEntry, Offset, SegmentLog, StorageResult, StoredEntry};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader};
use std::collections::HashMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// The log store of one partition replica.
#[derive(Clone)]
pub struct PartitionLogStore {
    log: Arc<RwLock<SegmentLog>>,
    appended: AppendNotifier,
    /// The state machine's newest snapshot: a purge beyond the log's end (a follower installing
    /// a snapshot) continues the offsets from the snapshot's, which the log cannot know.
    snapshots: SnapshotSlot,
    /// Set when the replica shuts down: an append waiting for disk space gives up.
    closing: Arc<AtomicBool>,
}

/// The longest wait between two attempts of an append that found the disk full.
const FULL_DISK_RETRY_MAX: Duration = Duration::from_secs(1);
/// Most votes of this process waiting for the flush worker at once (each holds its state file
/// open until synced).
static PENDING_VOTE_SYNCS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(256);

/// Tells `acks=1` producers that the leader's log holds their batch, with its offset.
///
/// openraft has no "appended on the leader" hook, so the log store provides it. A waiter is
/// keyed by a token carried in the proposed payload (in memory only): the payload travels from
/// the produce handler through openraft into `append` unchanged.
#[derive(Clone, Default)]
pub struct AppendNotifier {
    waiters: Arc<Mutex<HashMap<ProposalToken, oneshot::Sender<Offset>>>>,
    next_token: Arc<std::sync::atomic::AtomicU64>,
}

impl AppendNotifier {
    /// A fresh token and the receiver that learns the offset its batch got.
    pub fn register(&self) -> (ProposalToken, oneshot::Receiver<Offset>) {
        let token = ProposalToken(self.next_token.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
        let (sender, receiver) = oneshot::channel();
        self.waiters.lock().expect("append waiters").insert(token, sender);
        (token, receiver)
    }

    /// Drops the registration of `token` (after a timeout or a failed proposal).
    pub fn forget(&self, token: ProposalToken) {
        self.waiters.lock().expect("append waiters").remove(&token);
    }

    fn appended(&self, appended: &[(ProposalToken, Offset)]) {
        let mut waiters = self.waiters.lock().expect("append waiters");
        if waiters.is_empty() {
            return;
        }
        for (token, offset) in appended {
            if *token == ProposalToken::NONE {
                continue;
            }
            if let Some(waiter) = waiters.remove(token) {
                let _ = waiter.send(*offset);
            }
        }
    }
}

/// A reader sharing the store's log; openraft uses it for replication while appends go on.
#[derive(Clone)]
pub struct PartitionLogReader {
    log: Arc<RwLock<SegmentLog>>,
}

impl PartitionLogStore {
    /// Wraps an opened log.
    pub fn new(log: SegmentLog) -> Self {
        PartitionLogStore {
            log: Arc::new(RwLock::new(log)),
            appended: AppendNotifier::default(),
            snapshots: SnapshotSlot::default(),
            closing: Arc::default(),
        }
    }

    /// The flag that ends an append waiting for disk space; set it before shutting the
    /// replica's Raft node down.
    pub fn closing_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.closing)
    }

    /// Shares the snapshots of `state_machine`, for purges beyond the end of the log.
    pub fn sharing_snapshots_of(mut self, state_machine: &super::PartitionStateMachine) -> Self {
        self.snapshots = state_machine.snapshot_slot();
        self
    }

    /// The notifier `acks=1` producers wait on.
    pub fn append_notifier(&self) -> AppendNotifier {
        self.appended.clone()
    }

    /// The shared log, for the fetch path.
    pub fn log(&self) -> Arc<RwLock<SegmentLog>> {
        Arc::clone(&self.log)
    }

    /// Runs `operation` on the log, again and again while it fails for want of a resource — a
    /// full disk, no file descriptor left, no memory for a buffer — and the replica is not
    /// closing. Such an error is not a fault of this log (the operation left it as it was), and
    /// openraft would stop this group for good on an error: waiting for the resource (retention
    /// or the operator frees space, another replica closes files) heals it instead. The group
    /// stalls meanwhile, as on a slow disk, and its peers go on without it.
    async fn retrying_exhausted<T>(
        &self,
        what: &'static str,
        mut operation: impl FnMut(&mut SegmentLog) -> StorageResult<T>,
    ) -> io::Result<T> {
        let mut wait = Duration::from_millis(10);
        loop {
            let attempt = {
                let mut log = self.log.write().map_err(|_| lock_poisoned())?;
                operation(&mut log)
            };
            match attempt {
                Ok(value) => return Ok(value),
                Err(error) if error.is_resource_exhausted() && !self.closing.load(Ordering::Relaxed) => {
                    crate::storage::metrics::append_retried();
                    tracing::warn!(%error, operation = what, retry_in = ?wait, "a log write found a resource exhausted; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(FULL_DISK_RETRY_MAX);
                }
                Err(error) => return Err(io::Error::from(error)),
            }
        }
    }
}

fn lock_poisoned() -> io::Error {
    io::Error::other("partition log lock poisoned by an earlier panic")
}

pub(crate) fn to_new_entry(entry: Entry) -> io::Result<NewEntry> {
    let id = entry_id_of(&entry.log_id);
    let (kind, body) = match entry.payload {
        EntryPayload::Blank => (EntryKind::Blank, bytes::Bytes::new()),
        EntryPayload::Normal(PartitionPayload::Batch(RecordBatchPayload(batch, _))) => (EntryKind::Data, batch),
        EntryPayload::Normal(PartitionPayload::LogStart(mark)) => (EntryKind::LogStart, mark.encode()),
        EntryPayload::Membership(membership) => {
            let json = serde_json::to_vec(&membership).map_err(io::Error::other)?;
            (EntryKind::Membership, bytes::Bytes::from(json))
        }
    };
    Ok(NewEntry { id, kind, body })
}

pub(crate) fn to_raft_entry(stored: StoredEntry) -> io::Result<Entry> {
    let log_id = log_id_of(&stored.id);
    let payload = match stored.kind {
        EntryKind::Blank => EntryPayload::Blank,
        EntryKind::Data => EntryPayload::Normal(RecordBatchPayload::new(stored.body).into()),
        EntryKind::LogStart => EntryPayload::Normal(PartitionPayload::LogStart(LogStartMark::decode(&stored.body)?)),
        EntryKind::Membership => {
            let membership = serde_json::from_slice(&stored.body).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("membership entry {} does not parse: {e}", stored.id),
                )
            })?;
            EntryPayload::Membership(membership)
        }
    };
    Ok(Entry { log_id, payload })
}

fn read_range<RB: RangeBounds<u64>>(log: &RwLock<SegmentLog>, range: RB) -> io::Result<Vec<Entry>> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    let stored = log
        .read()
        .map_err(|_| lock_poisoned())?
        .read_entries(crate::storage::RaftIndex(start), crate::storage::RaftIndex(end))
        .map_err(io::Error::from)?;
    stored.into_iter().map(to_raft_entry).collect()
}

impl RaftLogReader<PartitionRaft> for PartitionLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        read_range(&self.log, range)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self
            .log
            .read()
            .map_err(|_| lock_poisoned())?
            .vote()
            .as_ref()
            .map(vote_of))
    }
}

impl RaftLogReader<PartitionRaft> for PartitionLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        read_range(&self.log, range)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self
            .log
            .read()
            .map_err(|_| lock_poisoned())?
            .vote()
            .as_ref()
            .map(vote_of))
    }
}

impl RaftLogStorage<PartitionRaft> for PartitionLogStore {
    type LogReader = PartitionLogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<PartitionRaft>> {
        let log = self.log.read().map_err(|_| lock_poisoned())?;
        Ok(LogState {
            last_purged_log_id: log.purged().as_ref().map(log_id_of),
            last_log_id: log.last_entry_id().as_ref().map(log_id_of),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        PartitionLogReader {
            log: Arc::clone(&self.log),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let vote = stored_vote_of(vote);
        // Each vote waiting for the flush worker holds its state file open: bounded, so an
        // election storm cannot spend the descriptors the open-file budget leaves to sockets.
        let _permit = PENDING_VOTE_SYNCS
            .acquire()
            .await
            .map_err(|_| io::Error::other("vote syncs closed"))?;
        let (sender, durable) = oneshot::channel();
        // Handed to the attempt that succeeds; a failed attempt drops its callback uncalled.
        let sender = Arc::new(Mutex::new(Some(sender)));
        self.retrying_exhausted("save vote", |log| {
            let sender = Arc::clone(&sender);
            log.save_vote(
                vote,
                Box::new(move |result| {
                    if let Some(sender) = sender.lock().ok().and_then(|mut s| s.take()) {
                        let _ = sender.send(result);
                    }
                }),
            )
        })
        .await?;
        durable
            .await
            .map_err(|_| io::Error::other("the flush worker stopped before the vote was durable"))?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let mut log = self.log.write().map_err(|_| lock_poisoned())?;
        log.save_committed(committed.as_ref().map(entry_id_of));
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        let log = self.log.read().map_err(|_| lock_poisoned())?;
        Ok(log.committed().as_ref().map(log_id_of))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<PartitionRaft>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut tokens = Vec::new();
        let entries = entries
            .into_iter()
            .map(|entry| {
                tokens.push(match &entry.payload {
                    EntryPayload::Normal(PartitionPayload::Batch(RecordBatchPayload(_, token))) => *token,
                    _ => ProposalToken::NONE,
                });
                to_new_entry(entry)
            })
            .collect::<io::Result<Vec<_>>>()?;
        // Handed to the attempt that succeeds; a failed attempt (rolled back) drops its
        // callback uncalled.
        let callback = Arc::new(Mutex::new(Some(callback)));
        let offsets = self
            .retrying_exhausted("append", |log| {
                let for_attempt = Arc::clone(&callback);
                log.append(
                    entries.clone(),
                    proto::record_batch::now_ms(),
                    Box::new(move |result| {
                        if let Some(callback) = for_attempt.lock().unwrap_or_else(|p| p.into_inner()).take() {
                            callback.io_completed(result);
                        }
                    }),
                )
            })
            .await?;
        let appended: Vec<(ProposalToken, Offset)> = tokens.into_iter().zip(offsets).collect();
        self.appended.appended(&appended);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let last_kept = last_log_id.map(|id| crate::storage::RaftIndex(id.index));
        self.retrying_exhausted("truncate", |log| log.truncate_after(last_kept))
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // openraft purges beyond the log only up to a snapshot it installed (or, at start-up,
        // the persisted one), which the slot holds by then.
        let next_offset = self.snapshots.next_offset_after(log_id.index);
        let last = entry_id_of(&log_id);
        self.retrying_exhausted("purge", |log| log.purge(last, next_offset))
            .await
    }
}
