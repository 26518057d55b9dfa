//! Wire formats shared by the client and the broker.
//!
//! - [`v1`]: the protobuf messages of the client-facing `broker.v1` API, generated at build time
//!   from `proto/broker/v1/*.proto` with `protox` (no system `protoc` is needed).
//! - [`raft_v1`]: the internal Raft transport between brokers, multiplexed by group id.
//! - [`record_batch`]: the Kafka v2 `RecordBatch` layout used as the body of every data entry in
//!   a partition log. Producers build batches with it, the broker validates them, consumers
//!   decode them.
//!
//! This crate depends on nothing else in the workspace: `proto ← client ← broker`.
#![deny(missing_docs)]

pub mod record_batch;

/// Internal broker-to-broker Raft transport (`raft.v1`): not a client API.
#[allow(missing_docs, clippy::all)]
pub mod raft_v1 {
    include!(concat!(env!("OUT_DIR"), "/raft.v1.rs"));
}

/// Messages of the `broker.v1` package.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/broker.v1.rs"));
}
