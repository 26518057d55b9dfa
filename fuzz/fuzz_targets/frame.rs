//! One log frame as the segment scanner reads it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    broker::fuzzing::frame(data);
});
