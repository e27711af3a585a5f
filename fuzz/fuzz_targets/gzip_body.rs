#![no_main]
// Fuzz target: obs_producers::fuzzing::gzip_body on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| obs_producers::fuzzing::gzip_body(data));
