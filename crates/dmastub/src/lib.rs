//! dmastub: a GDB remote-protocol stub that gives stock gdb the memory of an x86-64 Linux machine
//! it can only read from outside: by DMA (NetTLP), from a live VM's RAM file, or from a dump.
//!
//! The layers, each usable alone, and the one direction in which they depend on each other:
//!
//! * [`phys`]: physical memory sources behind the [`phys::PhysMem`] trait (raw and live RAM
//!   files, ELF cores, LiME, a NetTLP adapter by DMA, and an emulator of that adapter). Knows
//!   nothing of paging.
//! * [`mmu`]: the x86-64 page walk and the [`mmu::AddressSpace`] that gdb's reads go through
//!   (physical or virtual mode, the active CR3, caches). Knows nothing of Linux.
//! * [`gdb`]: the gdbstub target, the `monitor` commands and the TCP server.
//! * [`demo`]: a synthetic machine with real page tables, to try dmastub without a dump.
//!
//! `gdb → mmu → phys`: nothing points back up.

pub mod addr;
mod bytes;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gdb;
pub mod linux;
pub mod mmu;
pub mod phys;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use addr::{PAGE_SIZE, PhysAddr, VirtAddr};
