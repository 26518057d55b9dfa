//! Entry points for fuzzing the decoders of untrusted bytes: each takes arbitrary input and
//! must neither panic nor allocate beyond what the input can justify. The coverage-guided
//! targets under `fuzz/` (cargo-fuzz) call them, and so does a short proptest run in the
//! default test run (`tests/fuzz_decoders.rs`); docs/reliability.md has the figures.

use crate::{cluster_v1, raft_v1, v1};
use bytes::Bytes;
use prost::Message;

/// A client's or a peer's record batch: header, CRC, every record (decompressing).
pub fn record_batch(data: &[u8]) {
    let batch = Bytes::copy_from_slice(data);
    let _ = crate::record_batch::BatchHeader::parse(&batch);
    let _ = crate::record_batch::verify_crc(&batch);
    let _ = crate::record_batch::decode_records(&batch);
}

/// How many request kinds [`request`] chooses among.
pub const REQUEST_KINDS: u8 = 36;

/// Request message `kind` (of [`REQUEST_KINDS`]: every request a broker decodes, client,
/// group, auth, Raft and controller services alike) decoded from `data`, then re-encoded.
pub fn request(kind: u8, data: &[u8]) {
    fn round_trip<M: Message + Default>(data: &[u8]) {
        if let Ok(message) = M::decode(data) {
            let _ = message.encode_to_vec();
        }
    }
    match kind % REQUEST_KINDS {
        0 => round_trip::<v1::MetadataRequest>(data),
        1 => round_trip::<v1::CreateTopicsRequest>(data),
        2 => round_trip::<v1::DeleteTopicsRequest>(data),
        3 => round_trip::<v1::CreatePartitionsRequest>(data),
        4 => round_trip::<v1::AlterTopicConfigRequest>(data),
        5 => {
            // The produce path's own checks run on what the decoder hands over.
            if let Ok(produce) = v1::ProduceRequest::decode(data) {
                record_batch(&produce.records);
            }
        }
        6 => round_trip::<v1::FetchRequest>(data),
        7 => round_trip::<v1::ListOffsetsRequest>(data),
        8 => round_trip::<v1::InitProducerIdRequest>(data),
        9 => round_trip::<v1::TransferLeadershipRequest>(data),
        10 => round_trip::<v1::ReassignPartitionsRequest>(data),
        11 => round_trip::<v1::CancelReassignmentsRequest>(data),
        12 => round_trip::<v1::ListReassignmentsRequest>(data),
        13 => round_trip::<v1::BrokerRequest>(data),
        14 => round_trip::<v1::SetReassignmentThrottleRequest>(data),
        15 => round_trip::<v1::ControllerVotersRequest>(data),
        16 => round_trip::<v1::UpsertUserRequest>(data),
        17 => round_trip::<v1::DeleteUserRequest>(data),
        18 => round_trip::<v1::ListUsersRequest>(data),
        19 => round_trip::<v1::AclsRequest>(data),
        20 => round_trip::<v1::ListAclsRequest>(data),
        21 => round_trip::<v1::FindCoordinatorRequest>(data),
        22 => round_trip::<v1::ConsumerGroupHeartbeatRequest>(data),
        23 => round_trip::<v1::OffsetCommitRequest>(data),
        24 => round_trip::<v1::OffsetFetchRequest>(data),
        25 => round_trip::<v1::ListGroupsRequest>(data),
        26 => round_trip::<v1::DescribeGroupRequest>(data),
        27 => round_trip::<v1::DeleteGroupRequest>(data),
        28 => {
            if let Ok(message) = v1::SaslMessage::decode(data) {
                scram(message.message.as_bytes());
            }
        }
        29 => round_trip::<raft_v1::AppendRequest>(data),
        30 => round_trip::<raft_v1::AppendBatchRequest>(data),
        31 => round_trip::<raft_v1::JsonRequest>(data),
        32 => round_trip::<raft_v1::PingRequest>(data),
        33 => round_trip::<raft_v1::QuiesceRequest>(data),
        34 => round_trip::<raft_v1::SnapshotRequest>(data),
        _ => round_trip::<cluster_v1::ProposeRequest>(data),
    }
}

/// A SCRAM client's messages as the server reads them: the first, then (against stand-in
/// credentials) a final one.
pub fn scram(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, last) = text.split_once('\n').unwrap_or((&text, &text));
    if let Ok(client_first) = crate::scram::ClientFirst::parse(first) {
        let (server, _) = crate::scram::ServerExchange::start(
            &client_first,
            crate::scram::Credentials::unknown_user(b"fuzz", "user"),
        );
        let _ = server.finish(last);
    }
}
