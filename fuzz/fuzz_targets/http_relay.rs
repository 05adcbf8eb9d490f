#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wirewarden::fuzzing::http_relay(data));
