//! `dmastub demo`: the main job shown end to end.
//!
//! - [`vm`]: a stock Linux kernel booted under QEMU with its RAM in a shared file; dmastub
//!   serves that RAM (directly, or through the NetTLP emulator as a real adapter would), and a
//!   gdb session reads the running machine, panics it from outside and shows the panic.
//! - [`synthetic`]: a made-up machine built in memory, for anywhere QEMU is not.
//!
//! [`session`] holds what both the VM demo and the live tests drive: a gdb run command by
//! command, and `dmastub serve` / `nettlp-emulator` as child processes.

pub mod session;
pub mod synthetic;
pub mod vm;

pub use synthetic::{RAM_BYTES, SyntheticFacts, run, synthetic_machine};
