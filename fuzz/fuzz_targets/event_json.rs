#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::homeserver_targets::event_json(data));
