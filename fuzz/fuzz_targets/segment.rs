//! A whole segment file, opened as recovery opens an active segment.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    broker::fuzzing::segment(data);
});
