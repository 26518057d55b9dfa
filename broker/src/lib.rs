//! # The broker
//!
//! A broker holds partition replicas. Each partition is an append-only segment log replicated
//! by its own Raft group; the Raft log *is* the partition log.
//!
//! ## Map
//! - [`storage`]: segments, indexes, recovery, retention, group commit. Knows nothing of Raft.
//! - [`replication`]: everything openraft — the type config, the adapter that makes a
//!   [`storage::SegmentLog`] openraft's log store, the partition state machine.
//! - [`controller`]: cluster metadata (brokers, topics, assignments) in Raft group 0.
//! - [`partition`]: the partition replicas this broker hosts, kept in line with the metadata.
//! - [`api`]: the wire ⇄ domain boundary; today the error-code mapping.
//! - [`metrics`]: the Prometheus recorder and the admin HTTP endpoint (`/metrics`, `/health`,
//!   `/ready`).
//! - [`node`]: one broker process — wires everything onto a listener and a shutdown signal.
//! - [`perf`]: the benchmarks shipped with the `broker perf` command.
//!
//! ## How a write flows (today)
//! ```text
//! replication::PartitionLogStore::append(entries, IOFlushed)
//!   └─ storage::SegmentLog::append   frames → page cache, offsets assigned
//!        └─ storage::FlushWorker      one fdatasync per dirty file per round → IOFlushed
//! ```
//! Reads go `SegmentLog::read_entries` (by Raft index, for replication) or
//! `SegmentLog::read_batches` (by offset, for fetch, bounded by the high watermark).

pub mod api;
pub mod controller;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod perf;
pub mod replication;
pub mod storage;
