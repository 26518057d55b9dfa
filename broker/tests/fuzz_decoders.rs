//! The short fuzz run of the default test run: random and mutated input into the broker's
//! decoders of untrusted bytes (`broker::fuzzing`): frames, whole segment files at recovery,
//! the Raft transport's messages, configuration. The long, coverage-guided runs are
//! `fuzz/run.sh` (docs/reliability.md).

use broker::storage::frame::{encode_frame, FrameHeader};
use broker::storage::{EntryId, EntryKind, Offset, RaftIndex};
use proptest::prelude::*;

/// A valid segment of `frames` frames (record batches), as the log writes it.
fn valid_segment(frames: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..frames {
        let body = proto::record_batch::encode_batch(
            &[proto::record_batch::Record {
                offset_delta: 0,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(bytes::Bytes::from(format!("value-{i}"))),
                headers: Vec::new(),
            }],
            proto::record_batch::ProducerStamp::NONE,
        );
        let header = FrameHeader {
            id: EntryId {
                term: 1,
                leader_node: 1,
                index: RaftIndex(i + 1),
            },
            kind: EntryKind::Data,
            base_offset: Offset(i),
            record_count: 1,
            max_timestamp: 1_700_000_000_000,
            body_len: body.len(),
        };
        encode_frame(&mut out, &header, &body);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn arbitrary_bytes_never_crash_the_frame_decoder(data in prop::collection::vec(any::<u8>(), 0..256)) {
        broker::fuzzing::frame(&data);
    }

    #[test]
    fn arbitrary_raft_messages_never_crash_their_decoders(kind in 0u8..4, data in prop::collection::vec(any::<u8>(), 0..256)) {
        broker::fuzzing::raft(kind, &data);
    }

    #[test]
    fn arbitrary_config_text_never_crashes_its_parsers(
        text in "([a-z_.]{1,12} ?= ?(\"[ -~]{0,12}\"|[0-9]{1,12}|true|false|\\[\\])\n|\\[[a-z]{1,6}\\]\n){0,8}"
    ) {
        broker::fuzzing::config(&text);
    }
}

proptest! {
    // Each case writes and opens a file: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_segment_files_never_crash_recovery(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        broker::fuzzing::segment(&data);
    }

    #[test]
    fn damaged_segment_files_never_crash_recovery(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut segment = valid_segment(4);
        for (at, byte) in flips {
            let at = at.index(segment.len());
            segment[at] = byte;
        }
        let cut = cut.index(segment.len() + 1);
        broker::fuzzing::segment(&segment[..cut.min(segment.len())]);
    }
}
