//! Wire formats shared by the client and the broker.
//!
//! - [`v1`]: the protobuf messages of the client-facing `broker.v1` API, generated at build time
//!   from `proto/broker/v1/*.proto` with `protox` (no system `protoc` is needed).
//! - [`raft_v1`]: the internal Raft transport between brokers, multiplexed by group id.
//! - [`record_batch`]: the Kafka v2 `RecordBatch` layout used as the body of every data entry in
//!   a partition log. Producers build batches with it, the broker validates them, consumers
//!   decode them.
//!
//! - [`v1::ErrorCode::is_retriable`]: the one list of retriable wire error codes.
//!
//! This crate depends on nothing else in the workspace: `proto ← client ← broker`.
#![deny(missing_docs)]

mod error_code;
pub mod record_batch;

/// The largest gRPC message either side sends or accepts (`broker.v1` and `raft.v1`), in bytes.
/// The client and the broker configure their tonic codecs with this one value, so a batch the
/// client may send is never refused by the transport below the topic's `max.message.bytes`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

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
