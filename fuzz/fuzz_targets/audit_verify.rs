#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wirewarden_audit::fuzzing::decode_segment(data));
