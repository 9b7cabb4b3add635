//! See erlmcp::fuzzing::jsonrpc_envelope for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| erlmcp::fuzzing::jsonrpc_envelope(data));
