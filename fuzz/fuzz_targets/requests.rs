//! Every request a broker decodes (client, group, auth, Raft and controller services): the
//! first byte picks the message type.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some((kind, rest)) = data.split_first() {
        proto::fuzzing::request(*kind, rest);
    }
});
