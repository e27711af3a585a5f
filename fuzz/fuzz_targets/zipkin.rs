#![no_main]
// Fuzz target: obs_producers::fuzzing::zipkin on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| obs_producers::fuzzing::zipkin(data));
