#![no_main]
// See strata::fuzzing::seccomp_profile for what this input goes through.
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata::fuzzing::seccomp_profile(data));
