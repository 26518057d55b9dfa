//! The storage layer's error type. Mapped to wire error codes in the API layer, never here.

use super::types::{Offset, RaftIndex};
use std::path::PathBuf;

/// Everything that can go wrong in the segment store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An operating-system I/O error (including a full disk). Nothing partial was left behind:
    /// a failed append is rolled back before this is returned.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Stored bytes failed validation (bad CRC, impossible header) somewhere other than a torn
    /// tail. The bytes are never returned as data; the replica must be repaired from a peer.
    #[error("corrupt log data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// Segment file concerned.
        path: PathBuf,
        /// Byte position of the bad frame.
        position: u64,
        /// What failed.
        reason: String,
    },
    /// The data directory's free space is below the configured floor: writes are refused
    /// (retriable) until space returns.
    #[error(
        "{path}: {available} bytes free, below the {min_free} bytes kept free; writes are refused until space returns"
    )]
    LowDiskSpace {
        /// The data directory.
        path: PathBuf,
        /// Bytes available at the last sample.
        available: u64,
        /// The floor (`min_free_bytes`).
        min_free: u64,
    },
    /// An earlier fsync failed. After a failed fsync the kernel's view of the file is unknown,
    /// so the log refuses all writes until it is reopened (which re-validates the tail).
    #[error("log {path} is failed after an fsync error and must be reopened")]
    Failed {
        /// The partition directory.
        path: PathBuf,
    },
    /// An append whose first index is not the next index of the log.
    #[error("append out of order: expected raft index {expected}, got {got}")]
    NonContiguousAppend {
        /// The next index the log expects.
        expected: u64,
        /// The first index supplied.
        got: u64,
    },
    /// A data entry whose body is not a valid record batch.
    #[error("invalid record batch at {index}: {source}")]
    InvalidBatch {
        /// Raft index of the offending entry.
        index: RaftIndex,
        /// Why the batch is invalid.
        source: proto::record_batch::BatchError,
    },
    /// An entry too large to be framed (bodies are limited to the frame size limit).
    #[error("entry of {size} bytes exceeds the {limit}-byte frame limit")]
    EntryTooLarge {
        /// Size of the body.
        size: usize,
        /// Frame limit.
        limit: usize,
    },
    /// A fetch offset outside `[log start, log end]`.
    #[error("{requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        requested: Offset,
        /// First offset still in the log.
        log_start: Offset,
        /// Next offset the log will assign.
        log_end: Offset,
    },
    /// `truncate_after` or `purge` asked to cross the purged prefix or to keep a missing entry.
    #[error("invalid position: {0}")]
    InvalidPosition(String),
    /// A configuration value outside its allowed range.
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(String),
    /// The metadata file (vote, committed, purged) could not be parsed.
    #[error("unreadable raft state file {path}: {reason}")]
    BadStateFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be parsed.
        reason: String,
    },
}

impl StorageError {
    /// Whether the error is a resource running out — a full disk or quota, too many open
    /// files, no memory — rather than a fault: retrying later can succeed, and nothing was
    /// written (a failed append is rolled back).
    pub fn is_resource_exhausted(&self) -> bool {
        use rustix::io::Errno;
        match self {
            StorageError::Io { source, .. } => source.raw_os_error().is_some_and(|code| {
                [Errno::NOSPC, Errno::DQUOT, Errno::MFILE, Errno::NFILE, Errno::NOMEM]
                    .iter()
                    .any(|errno| errno.raw_os_error() == code)
            }),
            StorageError::LowDiskSpace { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<StorageError> for std::io::Error {
    fn from(error: StorageError) -> Self {
        let kind = match &error {
            StorageError::Io { source, .. } => source.kind(),
            StorageError::Corrupt { .. } | StorageError::BadStateFile { .. } => std::io::ErrorKind::InvalidData,
            StorageError::OffsetOutOfRange { .. }
            | StorageError::InvalidPosition(_)
            | StorageError::InvalidConfig(_)
            | StorageError::NonContiguousAppend { .. }
            | StorageError::InvalidBatch { .. }
            | StorageError::EntryTooLarge { .. } => std::io::ErrorKind::InvalidInput,
            StorageError::Failed { .. } => std::io::ErrorKind::Other,
            StorageError::LowDiskSpace { .. } => std::io::ErrorKind::StorageFull,
        };
        // Keep the whole message (path, position) rather than only the OS error.
        std::io::Error::new(kind, error)
    }
}

/// Result alias for the storage layer.
pub type StorageResult<T> = Result<T, StorageError>;

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    fn os_error(errno: Errno) -> StorageError {
        StorageError::io("/data/p-0", std::io::Error::from_raw_os_error(errno.raw_os_error()))
    }

    #[test]
    fn running_out_of_space_handles_or_memory_is_retried_a_fault_is_not() {
        for errno in [Errno::NOSPC, Errno::DQUOT, Errno::MFILE, Errno::NFILE, Errno::NOMEM] {
            assert!(os_error(errno).is_resource_exhausted(), "{errno:?}");
        }
        for errno in [Errno::IO, Errno::ACCESS, Errno::ROFS] {
            assert!(!os_error(errno).is_resource_exhausted(), "{errno:?}");
        }
        let failed = StorageError::Failed {
            path: "/data/p-0".into(),
        };
        assert!(!failed.is_resource_exhausted(), "a failed fsync is never retried");
    }
}
