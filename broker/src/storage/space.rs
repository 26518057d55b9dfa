//! Free space of a data directory ([`DiskSpace`]): sampled in the background, checked before a
//! leader accepts a write, so a full disk refuses produce requests with a retriable error
//! instead of failing appends half-way through the Raft log. Reads go on, and writes resume by
//! themselves once space returns (retention deleting segments, an operator freeing space).
//!
//! Appends that still meet a full disk (a follower replicating, a burst between samples) are
//! retried by the replication layer, see [`StorageError::is_resource_exhausted`].

use super::error::{StorageError, StorageResult};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the free space is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

/// The free space of one data directory and the floor below which writes are refused.
#[derive(Debug, Clone)]
pub struct DiskSpace {
    dir: PathBuf,
    min_free_bytes: u64,
    available: Arc<AtomicU64>,
}

impl DiskSpace {
    /// Space of the filesystem holding `dir`, refusing writes below `min_free_bytes`. Sampled
    /// once now; [`sample_every`](Self::sample_every) keeps it current.
    pub fn of(dir: &Path, min_free_bytes: u64) -> DiskSpace {
        let space = DiskSpace {
            dir: dir.to_path_buf(),
            min_free_bytes,
            available: Arc::new(AtomicU64::new(u64::MAX)),
        };
        space.sample();
        space
    }

    /// Bytes available to the broker as of the last sample.
    pub fn available(&self) -> u64 {
        self.available.load(Ordering::Relaxed)
    }

    /// Reads the filesystem's free space now. A failed read keeps the last sample (a
    /// transient `statvfs` error must not stop writes).
    pub fn sample(&self) {
        let available = super::faults::disk_available().or_else(|| match rustix::fs::statvfs(&self.dir) {
            Ok(stats) => Some(stats.f_bavail.saturating_mul(stats.f_frsize)),
            Err(error) => {
                tracing::warn!(%error, dir = %self.dir.display(), "cannot read the data directory's free space");
                None
            }
        });
        if let Some(available) = available {
            self.available.store(available, Ordering::Relaxed);
        }
    }

    /// Samples every [`SAMPLE_INTERVAL`] for ever (a task of the node).
    pub async fn sample_every(self) {
        let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let space = self.clone();
            // statvfs is a blocking syscall; cheap, but a hung network filesystem must not
            // stall a runtime thread.
            let _ = tokio::task::spawn_blocking(move || space.sample()).await;
        }
    }

    /// `Ok` while at least `min_free_bytes` are available.
    pub fn check_writable(&self) -> StorageResult<()> {
        let available = self.available();
        if available < self.min_free_bytes {
            return Err(StorageError::LowDiskSpace {
                path: self.dir.clone(),
                available,
                min_free: self.min_free_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_refused_below_the_floor_and_allowed_again_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::of(dir.path(), 1000);
        assert!(space.available() > 0, "a real filesystem has some space");
        space.available.store(999, Ordering::Relaxed);
        let refused = space.check_writable().unwrap_err();
        assert!(matches!(
            refused,
            StorageError::LowDiskSpace {
                available: 999,
                min_free: 1000,
                ..
            }
        ));
        assert!(refused.to_string().contains("999 bytes free"), "{refused}");
        space.available.store(1000, Ordering::Relaxed);
        space.check_writable().unwrap();
    }
}
