//! Wire formats shared by the client and the broker.
//!
//! - [`v1`]: the protobuf messages of the client-facing `broker.v1` API, generated at build time
//!   from `proto/broker/v1/*.proto` with `protox` (no system `protoc` is needed).
//! - [`raft_v1`]: the internal Raft transport between brokers, multiplexed by group id.
//! - [`cluster_v1`]: internal calls to the controller (a broker proposing a metadata command).
//! - [`record_batch`]: the Kafka v2 `RecordBatch` layout used as the body of every data entry in
//!   a partition log. Producers build batches with it, the broker validates them, consumers
//!   decode them.
//!
//! - [`v1::ErrorCode::is_retriable`]: the one list of retriable wire error codes.
//!
//! - [`fuzzing`]: entry points for fuzzing every decoder of untrusted bytes.
//! - [`scram`]: SCRAM-SHA-256, both sides of the password check (client proof, server keys).
//!
//! - [`codec`]: the gRPC codec of every generated service (prost's, sizing each message's
//!   buffer once).
//!
//! - [`group_partition`]: which partition of [`OFFSETS_TOPIC`] coordinates a consumer group.
//!
//! This crate depends on nothing else in the workspace: `proto ← client ← broker`.
#![deny(missing_docs)]

pub mod codec;
mod error_code;
pub mod fuzzing;
pub mod record_batch;
pub mod scram;

/// The largest gRPC message either side sends or accepts (`broker.v1` and `raft.v1`), in bytes.
/// The client and the broker configure their tonic codecs with this one value, so a batch the
/// client may send is never refused by the transport below the topic's `max.message.bytes`.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The internal topic that holds consumer groups and their committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The partition of [`OFFSETS_TOPIC`] (of `partitions`) that holds `group_id`: its leader is the
/// group's coordinator. FNV-1a over the id's UTF-8 bytes, so the client and every broker agree
/// without asking; the partition count of the offsets topic never changes once created.
pub fn group_partition(group_id: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in group_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
}

/// Internal broker-to-broker Raft transport (`raft.v1`): not a client API.
#[allow(missing_docs, clippy::all)]
pub mod raft_v1 {
    include!(concat!(env!("OUT_DIR"), "/raft.v1.rs"));
}

/// Internal broker-to-broker calls to the controller (`cluster.v1`): not a client API.
#[allow(missing_docs, clippy::all)]
pub mod cluster_v1 {
    include!(concat!(env!("OUT_DIR"), "/cluster.v1.rs"));
}

/// Messages of the `broker.v1` package.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/broker.v1.rs"));
}

#[cfg(test)]
mod tests {
    use super::group_partition;

    #[test]
    fn group_partitions_are_stable_and_in_range() {
        // Fixed values: changing the hash would move every group to another coordinator.
        assert_eq!(group_partition("", 50), 0x811c_9dc5 % 50);
        assert_eq!(group_partition("a", 50), 0xe40c_292c % 50);
        for n in 1..64 {
            for id in ["reports", "email-reports", "g-1", "ü"] {
                assert!(group_partition(id, n) < n);
            }
        }
        assert_eq!(group_partition("x", 0), 0, "no partitions: partition 0, never a panic");
    }
}
