//! Fuzz target: see `portcullis_server::fuzzing::grpc_message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = portcullis_server::fuzzing::grpc_message(data);
});
