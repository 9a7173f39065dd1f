//! What dmastub's tests, benchmarks and demo drive, kept out of the library: a NetTLP adapter
//! emulator ([`emulator`]), a stock Linux guest booted under QEMU with its RAM in a shared file
//! ([`vm`]), and dmastub and gdb run as child processes ([`child`]).

pub mod child;
pub mod emulator;
pub mod vm;
