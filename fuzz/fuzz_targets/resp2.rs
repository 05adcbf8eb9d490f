#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wirewarden_redis::fuzzing::resp2(data));
