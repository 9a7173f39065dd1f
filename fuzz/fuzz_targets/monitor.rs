#![no_main]
//! `cargo +nightly fuzz run monitor`: a thin wrapper over `dmastub::fuzzing::monitor` (see there).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dmastub::fuzzing::monitor(data));
