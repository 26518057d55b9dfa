//! # Storage: the partition log on disk
//!
//! **One job:** keep each partition replica's log — record batches and Raft's own entries — on
//! disk, written once, durable when it says so, and readable by Raft index, by offset and by
//! timestamp.
//!
//! **Owns:** the segment files (`<first raft index>.log`, `.index`, `.timeindex`), the
//! per-partition `raft-state` (vote, committed, purged prefix), the per-partition
//! `acknowledged.mark` (the last entry reported durable), the per-partition `snapshot.bin` (the
//! replication layer's newest snapshot, which it purges the log behind; opaque bytes here), and one
//! group-commit flush worker per data directory.
//!
//! **Invariants:**
//! - The log is a contiguous run of Raft entries; offsets are assigned from the log prefix, so
//!   replicas holding the same entries agree on every offset.
//! - No byte that failed its CRC is ever returned as data; no on-disk content makes it panic.
//! - Under `fsync = always`, an append is reported durable only after an fdatasync that began
//!   after its write.
//! - A torn tail is cut on open; corruption anywhere else is an error, never silently dropped.
//!   If the cut (or any other loss) took entries that had been reported durable, opening says
//!   so ([`RecoveryReport::lost_acknowledged`]).
//!
//! **Must not depend on:** openraft, tonic, the controller or groups. The replication layer
//! adapts this log to openraft's storage traits; nothing here knows Raft's types.
//!
//! **Files:**
//! - `log/` — [`SegmentLog`], one partition replica's log: `mod.rs` its writes (append, roll,
//!   truncate, purge, retention, vote and committed), `recovery.rs` opening it after a restart,
//!   `read.rs` reads by Raft index, offset and timestamp, `recent.rs` the newest entries kept in
//!   memory for replication reads.
//! - `segment/` — one `.log` file and its indexes: `mod.rs` create, append, truncate;
//!   `recovery.rs` the scan on open (verify, rebuild indexes, cut a torn tail); `read.rs` frames
//!   from a position and the index lookups.
//! - `frame.rs` the on-disk frame (header, CRC) codec; `index.rs` the sparse position and time
//!   indexes; `state_file.rs` `raft-state`; `acknowledged.rs` `acknowledged.mark`;
//!   `snapshot_file.rs` `snapshot.bin`.
//! - `flush.rs` the group-commit [`FlushWorker`]; `retention.rs` which segments retention
//!   deletes (pure); `config.rs` [`LogConfig`]; `settings.rs` a `LogConfig` by its
//!   topic-config names and changes to it (pure); `types.rs` the index and offset newtypes;
//!   `error.rs` [`StorageError`]; `metrics.rs` the subsystem's metrics; `space.rs` the data
//!   directory's free space and the floor below which writes are refused ([`DiskSpace`]);
//!   `faults.rs` the fault points tests inject ENOSPC and EIO through; `open_files.rs` the
//!   broker's open-file budget ([`OpenFiles`]): log files open on demand, least recently used
//!   closed first, so idle replicas hold no descriptor.

pub mod acknowledged;
pub mod config;
pub mod error;
pub mod faults;
pub mod flush;
pub mod frame;
pub mod index;
pub mod log;
pub mod metrics;
pub mod open_files;
pub mod retention;
pub mod segment;
pub mod settings;
pub mod snapshot_file;
pub mod space;
pub mod state_file;
pub mod types;

pub use config::{FsyncPolicy, LogConfig};
pub use error::{StorageError, StorageResult};
pub use flush::{DurableCallback, FlushHandle, FlushWorker};
pub use log::{LogHost, LostAcknowledged, NewEntry, RecoveryReport, SegmentInfo, SegmentLog, StoredEntry};
pub use open_files::{BudgetedFile, OpenFiles};
pub use space::DiskSpace;
pub use state_file::StoredVote;
pub use types::{EntryId, EntryKind, Offset, RaftIndex};
