//! The broker's open-file budget: every partition log's files that are written or read again
//! and again (segment `.log` files, `acknowledged.mark`) are reached through [`OpenFiles`],
//! which keeps at most `capacity` of them open and closes the least recently used first.
//!
//! Why: a replica holds its files whether its partition is busy or idle, so a broker hosting
//! thousands of replicas needed thousands of descriptors and ran into the process limit
//! (`EMFILE`) — and a file open that fails inside Raft used to stop the replica for good. With
//! the budget, descriptors follow traffic: a quiet partition holds none, and partition count
//! becomes a matter of memory and disk. Reopening an evicted file costs one `open(2)`.
//!
//! A file handed out stays open while its user holds the `Arc<File>` (the flush worker keeps
//! the handle it was given until its fsync is done, so a write and its fsync use the same
//! descriptor and a write-back error cannot slip between two descriptors). So the budget can be
//! exceeded briefly by in-flight operations, never by idle replicas.
//!
//! Files opened once and dropped at once (index files at seal, `raft-state`, snapshots)
//! are not counted here: they live for one call.

use lru::LruCache;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Smallest budget a broker runs with: an active segment and a mark for a few partitions.
pub const MIN_OPEN_FILES: usize = 16;

/// Descriptors left outside the budget for everything else a broker opens: client and peer
/// sockets, the metadata stores, files opened for one call (state files, snapshots, index
/// files at seal). At least this many, or a quarter of the process limit if that is more.
pub const MIN_RESERVED_DESCRIPTORS: u64 = 256;

/// The largest budget chosen automatically: enough for thousands of busy partitions; more
/// would only keep files of partitions that went quiet long ago.
pub const MAX_AUTO_OPEN_FILES: u64 = 32_768;

/// The smallest automatic budget a broker agrees to start with.
pub const MIN_AUTO_OPEN_FILES: u64 = 64;

/// The budget a broker runs with, given `configured` (`max_open_files`, `None` for automatic)
/// and the process's open-file limit (`None` when unlimited). Automatic: the limit minus the
/// reserve, at most [`MAX_AUTO_OPEN_FILES`]. An error (the broker refuses to start) when the
/// limit cannot hold the configured budget plus the reserve, or leaves an automatic budget
/// under [`MIN_AUTO_OPEN_FILES`].
pub fn budget_for(configured: Option<u64>, limit: Option<u64>) -> Result<usize, String> {
    let reserve = |limit: u64| MIN_RESERVED_DESCRIPTORS.max(limit / 4);
    match (configured, limit) {
        (Some(budget), _) if budget < MIN_OPEN_FILES as u64 => Err(format!(
            "max_open_files = {budget} is below the minimum of {MIN_OPEN_FILES}"
        )),
        (Some(budget), None) => Ok(budget as usize),
        (Some(budget), Some(limit)) => {
            let needed = budget + MIN_RESERVED_DESCRIPTORS;
            if needed > limit {
                Err(format!(
                    "max_open_files = {budget} needs an open-file limit of at least {needed} \
                     ({MIN_RESERVED_DESCRIPTORS} more for sockets and the metadata stores); the \
                     limit is {limit}: raise it (LimitNOFILE=, ulimit -n) or lower max_open_files"
                ))
            } else {
                Ok(budget as usize)
            }
        }
        (None, None) => Ok(MAX_AUTO_OPEN_FILES as usize),
        (None, Some(limit)) => {
            let budget = limit.saturating_sub(reserve(limit)).min(MAX_AUTO_OPEN_FILES);
            if budget < MIN_AUTO_OPEN_FILES {
                Err(format!(
                    "the open-file limit is {limit}: too low for a broker (it needs at least {} \
                     descriptors); raise it (LimitNOFILE=, ulimit -n)",
                    MIN_AUTO_OPEN_FILES + MIN_RESERVED_DESCRIPTORS
                ))
            } else {
                Ok(budget as usize)
            }
        }
    }
}

/// A bounded set of open files shared by every log of one broker. Cheap to clone.
#[derive(Clone)]
pub struct OpenFiles {
    shared: Arc<Shared>,
}

struct Shared {
    capacity: usize,
    next_id: AtomicU64,
    /// Open files, least recently used first, with when each was last used.
    open: Mutex<LruCache<u64, (Arc<File>, Instant)>>,
}

impl std::fmt::Debug for OpenFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFiles")
            .field("capacity", &self.shared.capacity)
            .field("open", &self.open_count())
            .finish()
    }
}

impl OpenFiles {
    /// A budget of `capacity` open files (at least [`MIN_OPEN_FILES`]).
    pub fn new(capacity: usize) -> OpenFiles {
        let capacity = capacity.max(MIN_OPEN_FILES);
        OpenFiles {
            shared: Arc::new(Shared {
                capacity,
                next_id: AtomicU64::new(0),
                open: Mutex::new(LruCache::unbounded()),
            }),
        }
    }

    /// The most files kept open at once.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Files open now.
    pub fn open_count(&self) -> usize {
        self.lock().len()
    }

    /// Takes `file`, just opened at `path`, under the budget. Later uses reopen it read-write
    /// (never creating or truncating it) whenever it was closed in between.
    pub fn adopt(&self, path: PathBuf, file: File) -> BudgetedFile {
        let budgeted = BudgetedFile {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            path,
            files: self.clone(),
        };
        self.insert(budgeted.id, Arc::new(file));
        budgeted
    }

    /// Puts `file` in the cache as the most recently used, closing the least recently used
    /// ones beyond the capacity (outside the lock: `close(2)` can take a while on NFS).
    fn insert(&self, id: u64, file: Arc<File>) -> Arc<File> {
        let evicted;
        let file = {
            let mut open = self.lock();
            // Another thread may have reopened it meanwhile: keep one descriptor.
            let kept = match open.get_mut(&id) {
                Some((existing, used)) => {
                    *used = Instant::now();
                    Arc::clone(existing)
                }
                None => {
                    open.put(id, (Arc::clone(&file), Instant::now()));
                    file
                }
            };
            evicted = pop_lru_while(&mut open, |open, _| open.len() > self.shared.capacity);
            kept
        };
        drop(evicted);
        file
    }

    fn cached(&self, id: u64) -> Option<Arc<File>> {
        self.lock().get_mut(&id).map(|(file, used)| {
            *used = Instant::now();
            Arc::clone(file)
        })
    }

    fn forget(&self, id: u64) -> Option<Arc<File>> {
        let mut open = self.lock();
        let removed = open.pop(&id).map(|(file, _)| file);
        super::metrics::open_files(open.len());
        removed
    }

    /// Closes every file unused for `idle` or longer; returns how many. A partition that went
    /// quiet then holds no descriptor at all, whatever the budget.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let Some(cutoff) = Instant::now().checked_sub(idle) else {
            return 0;
        };
        // Least recently used first: stop at the first file used since the cutoff.
        let closed = pop_lru_while(&mut self.lock(), |_, used| used <= cutoff);
        closed.len()
    }

    /// Closes files idle for `idle` every `idle / 4` (at least every 100 ms), for ever.
    pub async fn close_idle_every(self, idle: Duration) {
        let mut ticks = tokio::time::interval((idle / 4).max(Duration::from_millis(100)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.close_idle(idle);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<u64, (Arc<File>, Instant)>> {
        // The cache holds plain handles; a panic elsewhere cannot leave it inconsistent.
        self.shared.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Pops least recently used files while `evict(open, last_used)` says so, counting them in the
/// metrics; the caller drops them once the lock is released (`close(2)` can take a while on
/// NFS).
fn pop_lru_while(
    open: &mut LruCache<u64, (Arc<File>, Instant)>,
    evict: impl Fn(&LruCache<u64, (Arc<File>, Instant)>, Instant) -> bool,
) -> Vec<Arc<File>> {
    let mut popped = Vec::new();
    while open.peek_lru().is_some_and(|(_, (_, used))| evict(open, *used)) {
        if let Some((_, (file, _))) = open.pop_lru() {
            popped.push(file);
        }
    }
    super::metrics::open_files(open.len());
    if !popped.is_empty() {
        super::metrics::files_evicted(popped.len() as u64);
    }
    popped
}

/// One file under the budget: opened on demand, closed when evicted or dropped.
#[derive(Debug)]
pub struct BudgetedFile {
    id: u64,
    path: PathBuf,
    files: OpenFiles,
}

impl BudgetedFile {
    /// The open file, reopened if the budget closed it. Fails with the open's error (`EMFILE`
    /// among them: the caller treats it as a resource to wait for, see
    /// [`StorageError::is_resource_exhausted`](super::StorageError::is_resource_exhausted)).
    pub fn get(&self) -> io::Result<Arc<File>> {
        if let Some(file) = self.files.cached(self.id) {
            return Ok(file);
        }
        if let Some(injected) = super::faults::file_open() {
            return Err(injected);
        }
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        super::metrics::file_reopened();
        Ok(self.files.insert(self.id, Arc::new(file)))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the file now (before deleting it), unless an operation still holds it.
    pub fn close(&self) {
        drop(self.files.forget(self.id));
    }
}

impl Drop for BudgetedFile {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_a_reserve_under_the_process_limit_or_refuses() {
        assert_eq!(budget_for(None, Some(1024)), Ok(768));
        assert_eq!(budget_for(None, Some(20_000)), Ok(15_000));
        assert_eq!(budget_for(None, Some(1 << 20)), Ok(MAX_AUTO_OPEN_FILES as usize));
        assert_eq!(budget_for(None, None), Ok(MAX_AUTO_OPEN_FILES as usize));
        assert!(budget_for(None, Some(300)).unwrap_err().contains("limit is 300"));
        assert_eq!(budget_for(Some(500), Some(1024)), Ok(500));
        assert_eq!(budget_for(Some(768), Some(1024)), Ok(768));
        let refused = budget_for(Some(800), Some(1024)).unwrap_err();
        assert!(
            refused.contains("at least 1056") && refused.contains("limit is 1024"),
            "{refused}"
        );
        assert!(budget_for(Some(4), None).is_err());
    }

    fn budgeted(files: &OpenFiles, dir: &Path, name: &str) -> BudgetedFile {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        files.adopt(path, file)
    }

    #[test]
    fn keeps_at_most_capacity_open_and_reopens_evicted_files_with_their_content() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let files = OpenFiles::new(MIN_OPEN_FILES);
        let all: Vec<BudgetedFile> = (0..MIN_OPEN_FILES * 3)
            .map(|i| budgeted(&files, dir.path(), &format!("{i}.log")))
            .collect();
        for (i, file) in all.iter().enumerate() {
            file.get().unwrap().write_all_at(&[i as u8; 4], 0).unwrap();
            assert!(files.open_count() <= MIN_OPEN_FILES);
        }
        for (i, file) in all.iter().enumerate() {
            let mut read = [0u8; 4];
            file.get().unwrap().read_exact_at(&mut read, 0).unwrap();
            assert_eq!(read, [i as u8; 4]);
        }
        assert_eq!(files.open_count(), MIN_OPEN_FILES);
        drop(all);
        assert_eq!(files.open_count(), 0);
    }

    #[test]
    fn the_least_recently_used_file_is_closed_first() {
        let dir = tempfile::tempdir().unwrap();
        let files = OpenFiles::new(MIN_OPEN_FILES);
        let all: Vec<BudgetedFile> = (0..MIN_OPEN_FILES)
            .map(|i| budgeted(&files, dir.path(), &format!("{i}.log")))
            .collect();
        // Touch the first (the oldest) so the second becomes the least recently used.
        let first = all[0].get().unwrap();
        let _extra = budgeted(&files, dir.path(), "extra.log");
        assert!(files.cached(all[0].id).is_some_and(|f| Arc::ptr_eq(&f, &first)));
        assert!(files.cached(all[1].id).is_none());
    }

    #[test]
    fn files_unused_for_the_idle_time_are_closed_and_reopen_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let files = OpenFiles::new(MIN_OPEN_FILES);
        let quiet = budgeted(&files, dir.path(), "quiet.log");
        std::thread::sleep(Duration::from_millis(30));
        let busy = budgeted(&files, dir.path(), "busy.log");
        assert_eq!(files.close_idle(Duration::from_millis(20)), 1);
        assert!(files.cached(quiet.id).is_none());
        assert!(files.cached(busy.id).is_some());
        quiet.get().unwrap();
        assert_eq!(files.open_count(), 2);
        assert_eq!(files.close_idle(Duration::from_secs(3600)), 0);
    }

    #[test]
    fn a_handle_in_use_outlives_its_eviction() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let files = OpenFiles::new(MIN_OPEN_FILES);
        let kept = budgeted(&files, dir.path(), "kept.log");
        let in_use = kept.get().unwrap();
        let _others: Vec<BudgetedFile> = (0..MIN_OPEN_FILES)
            .map(|i| budgeted(&files, dir.path(), &format!("{i}.log")))
            .collect();
        assert!(files.cached(kept.id).is_none());
        in_use.write_all_at(b"still open", 0).unwrap();
        in_use.sync_data().unwrap();
    }
}
