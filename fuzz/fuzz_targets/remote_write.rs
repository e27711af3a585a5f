#![no_main]
// Fuzz target: obs_producers::fuzzing::remote_write on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| obs_producers::fuzzing::remote_write(data));
