//! A SCRAM client's messages as the server reads them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    proto::fuzzing::scram(data);
});
