#![no_main]
// Fuzz target: obs_producers::fuzzing::json_lines on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| obs_producers::fuzzing::json_lines(data));
