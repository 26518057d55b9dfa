//! # The broker
//!
//! A broker holds partition replicas. Each partition is an append-only segment log replicated
//! by its own Raft group; the Raft log *is* the partition log.
//!
//! ## Map
//! - [`storage`]: segments (`segment/`: recovery, reads), the log over them (`log/`: recovery,
//!   reads, the recent-entries cache), indexes, retention decisions, group commit
//!   (`flush.rs`). Knows nothing of Raft.
//! - [`replication`]: everything openraft — the type config, the adapter that makes a
//!   [`storage::SegmentLog`] openraft's log store, the partition state machine, the replica API
//!   (`replica/`: `PartitionReplica::append`, reads, lease, status) and quiescence
//!   (`quiesce/`, its rules pure in `rules.rs`).
//! - [`controller`]: cluster metadata (brokers, topics, assignments) in Raft group 0.
//! - [`coordinator`]: consumer groups — `__consumer_offsets` materialised per partition through
//!   the `BatchObserver` seam, the KIP-848 group state machine and the assignors (pure), and the
//!   shell that coordinates the groups of the offsets partitions this broker leads.
//! - [`partition`]: the partition replicas this broker hosts, kept in line with the metadata,
//!   and their gauges.
//! - [`api`]: the wire ⇄ domain boundary: the `broker.v1` services, one file per RPC family,
//!   request conversions, error answers and the one error-code mapping.
//! - [`metrics`]: the Prometheus recorder, the admin HTTP endpoint (`/metrics`, `/health`,
//!   `/ready`) and per-request counts and latencies.
//! - [`security`]: TLS on the client and internal listeners, brokers-only admission to the
//!   internal one, and a local CA for development and tests.
//! - [`fuzzing`]: entry points for fuzzing the broker's decoders of untrusted bytes.
//! - [`node`]: one broker process — wires everything onto a listener and a shutdown signal.
//! - [`perf`]: the benchmarks shipped with the `broker perf` command.
//!
//! Where new subsystems go: an HTTP application
//! such as the email-event service is its own workspace crate on top of `client/`, never a
//! dependency of this library.
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
pub mod coordinator;
pub mod fuzzing;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod perf;
pub mod replication;
pub mod security;
pub mod storage;
