//! The short fuzz run of the default test run: random bytes (and mutations of valid inputs)
//! into every decoder of untrusted input in this crate (`proto::fuzzing`). The long,
//! coverage-guided runs are `fuzz/run.sh` (docs/reliability.md).

use bytes::Bytes;
use proptest::prelude::*;
use proto::record_batch::{encode_batch, ProducerStamp, Record};

fn valid_batch() -> Vec<u8> {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            offset_delta: i,
            timestamp: 1_700_000_000_000 + i64::from(i),
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Vec::new(),
        })
        .collect();
    encode_batch(&records, ProducerStamp::NONE).to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_crash_the_batch_decoder(data in prop::collection::vec(any::<u8>(), 0..512)) {
        proto::fuzzing::record_batch(&data);
    }

    #[test]
    fn mutated_batches_never_crash_the_batch_decoder(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut batch = valid_batch();
        for (at, byte) in flips {
            let at = at.index(batch.len());
            batch[at] = byte;
        }
        proto::fuzzing::record_batch(&batch);
        let cut = cut.index(batch.len());
        proto::fuzzing::record_batch(&batch[..cut]);
    }

    #[test]
    fn arbitrary_bytes_never_crash_a_request_decoder(
        kind in 0..proto::fuzzing::REQUEST_KINDS,
        data in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        proto::fuzzing::request(kind, &data);
    }

    #[test]
    fn arbitrary_text_never_crashes_the_scram_server(text in "(n,,n=[a-z=,]{0,8},r=[a-zA-Z0-9]{0,8})?[ -~\n]{0,80}") {
        proto::fuzzing::scram(text.as_bytes());
    }
}
