//! Consumer groups, the member's side: [`GroupConsumer`] subscribes to topics and consumes the
//! partitions the group's coordinator assigns it (Kafka's incremental protocol, KIP-848, as
//! `proto/broker/v1/groups.proto` specifies it); [`DeadLetters`] moves records that keep
//! failing to `<topic>.dlq`.
//!
//! **Owns**: the member id (drawn once per consumer, kept across rejoins), its epoch, the
//! partitions it consumes and their positions. **Must not depend on** anything of the broker;
//! it reaches the coordinator only through [`Cluster`](crate::Cluster) routing (a group's
//! coordinator is the leader of its `__consumer_offsets` partition, reached and retried like
//! any partition leader).
//!
//! # How it runs
//! A background task heartbeats (every `heartbeat_interval`, as the coordinator answers it);
//! everything that touches partitions happens inside `poll` (or the stream), on the
//! application's task, like Kafka: the listener's callbacks, commits before revocation, seeks.
//! A `poll` that is waiting for records is interrupted when the heartbeat brings a change, so
//! a revocation is acted on promptly even by a member blocked in a long poll. A member that
//! does not poll does not give partitions up (the coordinator's rebalance timeout then fences
//! it).
//!
//! # Invariants
//! - A partition is consumed only while the coordinator's latest answer assigns it; the
//!   member reports exactly the partitions it consumes in each heartbeat.
//! - Revoke before add. A revoked partition: fetching stops, records fetched but not returned
//!   are dropped, auto-commit commits its position, `on_revoked` runs, and only then is it
//!   released — the next heartbeat, sent at once, no longer lists it.
//! - A lost partition (UNKNOWN_MEMBER_ID / FENCED_MEMBER_EPOCH, or no accepted heartbeat for
//!   a whole `session_timeout`) is dropped **without** committing, `on_lost` runs, and only
//!   then does the member rejoin with epoch 0 (same member id).
//! - A newly assigned partition starts at the group's committed offset, else where
//!   `auto_offset_reset` says (`None`: `poll` fails with `NoCommittedOffset`); `on_assigned`
//!   runs once its fetching started.
//!
//! # Auto-commit (`enable_auto_commit`, on by default)
//! What is committed is the *position* of each owned partition: the offset after the last
//! record `poll` returned (or the stream yielded), or, for a partition nothing was returned
//! from yet, where it started. Records fetched but not yet returned are never counted. A
//! position is committed only if it differs from what the group is known to hold. Commits
//! happen:
//! 1. at the start of a `poll` once `auto_commit_interval` has passed since the last such
//!    commit — asynchronously: the poll does not wait, a failure is logged, at most one is in
//!    flight;
//! 2. before a partition is revoked — synchronously, after any auto-commit in flight has
//!    finished (a failure is logged and the partition is released anyway);
//! 3. on `close()` — synchronously, within `close_timeout`; its failure is `close`'s error.
//!
//! Nothing is committed for lost partitions. So a record is processed at least once: records
//! returned by a `poll` are committed by a later `poll`, a revocation or `close`, by which
//! time the application has handled them — provided it handles each batch before polling again.
//!
//! # Errors
//! - Retriable (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, timeouts, unreachable brokers):
//!   the heartbeat finds the coordinator again and retries with backoff; commits and offset
//!   fetches retry by the cluster's retry policy.
//! - Refusals only the application can fix — UNKNOWN_TOPIC_OR_PARTITION (a subscribed topic
//!   does not exist), INVALID_GROUP_ID, UNSUPPORTED_ASSIGNOR — are returned by `subscribe` and
//!   then by every `poll` ([`GroupError::Refused`]); the member stops heartbeating and drops
//!   its partitions until `subscribe` is called again.
//! - A commit refused with STALE_MEMBER_EPOCH makes the member heartbeat at once; retry the
//!   commit after the next `poll`. UNKNOWN_MEMBER_ID / FENCED_MEMBER_EPOCH: the partitions are
//!   lost (the next `poll` says so). PARTITION_NOT_ASSIGNED: the partition has moved.
//!
//! # Files
//! - `config`, `error`, `listener`: the public types.
//! - `membership` (pure): heartbeats, their verdicts, the loss rule, reconciliation.
//! - `offsets` (pure): auto-commit due, positions to commit, where a partition starts.
//! - `heartbeat`: the heartbeat task. `consumer`: [`GroupConsumer`], the shell around it all.
//! - `dead_letter`: [`DeadLetters`].

mod config;
mod consumer;
pub mod dead_letter;
mod error;
mod heartbeat;
mod listener;
mod membership;
mod offsets;

pub use config::GroupConfig;
pub use consumer::{CommitFuture, GroupConsumer};
pub use dead_letter::{DeadLetterError, DeadLetters, Outcome};
pub use error::GroupError;
pub use listener::RebalanceListener;
