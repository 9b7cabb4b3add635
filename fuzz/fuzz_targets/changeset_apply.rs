//! See erlmcp::fuzzing::changeset_apply for what must hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| erlmcp::fuzzing::changeset_apply(data));
