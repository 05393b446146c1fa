//! Fuzz target: see `portcullis_server::fuzzing::agent_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = portcullis_server::fuzzing::agent_answer(data);
});
