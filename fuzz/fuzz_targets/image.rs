#![no_main]
//! `cargo +nightly fuzz run image`: a thin wrapper over `dmastub::fuzzing::image` (see there).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dmastub::fuzzing::image(data));
