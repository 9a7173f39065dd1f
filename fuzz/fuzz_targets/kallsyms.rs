#![no_main]
//! `cargo +nightly fuzz run kallsyms`: a thin wrapper over `dmastub::fuzzing::kallsyms` (see there).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dmastub::fuzzing::kallsyms(data));
