#![no_main]
// Fuzz target: obs_schemas::wire::fuzz_decode on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| obs_schemas::wire::fuzz_decode(data));
