//! Fuzz target: see `portcullis_server::fuzzing::http_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = portcullis_server::fuzzing::http_body(data);
});
