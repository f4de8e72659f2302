#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hybridb::fuzzing::sparse_vector(data));
