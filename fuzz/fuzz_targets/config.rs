//! A broker config file (TOML) and topic configs (`key=value`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        broker::fuzzing::config(text);
    }
});
