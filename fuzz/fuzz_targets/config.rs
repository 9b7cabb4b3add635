//! See erlmcp::fuzzing::config for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| erlmcp::fuzzing::config(data));
