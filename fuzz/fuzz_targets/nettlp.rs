#![no_main]
//! `cargo +nightly fuzz run nettlp`: a thin wrapper over `dmastub::fuzzing::nettlp` (see there).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dmastub::fuzzing::nettlp(data));
