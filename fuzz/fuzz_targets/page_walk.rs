#![no_main]
//! `cargo +nightly fuzz run page_walk`: a thin wrapper over `dmastub::fuzzing::page_walk` (see there).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dmastub::fuzzing::page_walk(data));
