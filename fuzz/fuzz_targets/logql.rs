#![no_main]
// Fuzz target: obs_query_api::fuzzing::logql on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| obs_query_api::fuzzing::logql(data));
