#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wirewarden_http::fuzzing::body(data));
