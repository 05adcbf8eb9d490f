#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wirewarden_postgres::fuzzing::session(data));
