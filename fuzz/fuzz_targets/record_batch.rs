//! A record batch: header, CRC, every record (decompressing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    proto::fuzzing::record_batch(data);
});
