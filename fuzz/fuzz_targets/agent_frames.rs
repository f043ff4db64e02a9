#![no_main]
// See strata::fuzzing::agent_frames for what this input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::agent_frames(data));
