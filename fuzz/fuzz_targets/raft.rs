//! The Raft transport's own decoding (an append's entries, vote and transfer JSON): the first
//! byte picks which.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((kind, rest)) = data.split_first() {
        broker::fuzzing::raft(*kind, rest);
    }
});
