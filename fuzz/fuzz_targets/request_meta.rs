//! See erlmcp::fuzzing::request_meta for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| erlmcp::fuzzing::request_meta(data));
