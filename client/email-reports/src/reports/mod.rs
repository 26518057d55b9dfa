//! # Reports: the materialised state of `email-events`
//!
//! **Owns:** what the report figures mean ([`model`]), how the state is keyed ([`keys`]), the
//! pure counting step from events to changed values ([`apply`]), and the local store that
//! holds the state and answers queries ([`store`]), with the owner's in-memory copy of the keys
//! only its partition writes ([`mirror`]).
//!
//! **How the state is kept exact.** Counting a batch of one source partition yields a
//! [`apply::ChangelogRecord`]: the new values of every key it touched plus the source range
//! `[from, to)`. The record is written to the changelog topic (acks=all) and every instance
//! applies the changelog to its own sled store, each record in one atomic batch together with
//! the changelog position — so a store is always the state after some whole number of records,
//! and a record applies only on a state whose next source offset is its `from` (a zombie's or
//! a retried record is skipped, never counted twice).
pub mod apply;
pub mod keys;
pub mod mirror;
pub mod model;
pub mod store;
