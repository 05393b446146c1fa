//! Fuzz target: see `portcullis_server::fuzzing::policy_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = portcullis_server::fuzzing::policy_toml(data);
});
