#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::bridge_targets::kim_mail(data));
