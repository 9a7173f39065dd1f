#![no_main]
//! `cargo +nightly fuzz run btf`: a thin wrapper over `dmastub::fuzzing::btf` (see there).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dmastub::fuzzing::btf(data));
