#![no_main]
// See strata::fuzzing::node_config for what this input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::node_config(data));
