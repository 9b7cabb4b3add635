//! See erlmcp::fuzzing::http_headers for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| erlmcp::fuzzing::http_headers(data));
