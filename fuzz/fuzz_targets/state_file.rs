#![no_main]
// See strata::fuzzing::state_file for what this input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::state_file(data));
