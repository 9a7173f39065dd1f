#![no_main]
//! `cargo +nightly fuzz run protocol`: a thin wrapper over `dmastub::fuzzing::protocol` (see there).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dmastub::fuzzing::protocol(data));
