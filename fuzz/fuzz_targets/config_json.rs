#![no_main]
// See strata::fuzzing::config_json for what this input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::config_json(data));
