#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ccs_proto::fuzzing::framer(data));
