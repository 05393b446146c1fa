//! Fuzz target: see `portcullis_server::fuzzing::trace_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = portcullis_server::fuzzing::trace_line(data);
});
