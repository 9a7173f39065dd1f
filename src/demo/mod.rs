//! `dmastub demo`: the main job shown end to end.
//!
//! - [`vm`]: a stock Linux kernel booted under QEMU with its RAM in a shared file; dmastub
//!   serves that RAM (directly, or through the NetTLP emulator as a real adapter would), and a
//!   gdb session reads the running machine, panics it from outside and shows the panic.
//! - [`synthetic`]: a made-up machine built in memory, for anywhere QEMU is not.
//!
//! Both drive gdb and dmastub as child processes through [`dmastub_testkit::child`].

pub mod synthetic;
pub mod vm;
