#![no_main]
//! `cargo +nightly fuzz run walkers`: a thin wrapper over `dmastub::fuzzing::walkers` (see there).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dmastub::fuzzing::walkers(data));
