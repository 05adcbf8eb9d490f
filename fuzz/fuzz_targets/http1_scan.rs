#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wirewarden_http::fuzzing::http1_scan(data));
