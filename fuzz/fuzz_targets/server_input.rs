#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ccs_proto::fuzzing::server_input(data, std::time::Instant::now())
});
