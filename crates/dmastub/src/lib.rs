//! Read the memory of an x86-64 Linux machine from outside — by DMA through a NetTLP adapter,
//! from a live VM's RAM file, or from an ELF core, raw or LiME dump — find the kernel in it with
//! no hints, and serve it to stock gdb.
//!
//! This crate is the library: it opens no terminal, installs nothing and starts no process. The
//! `dmastub` command (the workspace's root package) is a thin shell over it, and
//! `dmastub-testkit` holds what tests and demos drive (a NetTLP adapter emulator, a Linux guest
//! under QEMU, child processes).
//!
//! The layers, each usable alone, depend on each other in one direction,
//! `gdb → linux → mmu → phys`:
//!
//! * **phys**: physical memory sources behind the [`PhysMem`] trait: raw and live
//!   RAM files, ELF cores and LiME dumps read with `pread`, bytes held in memory, and a NetTLP
//!   adapter read by DMA (its wire format is public, for the emulator and for other tools).
//!   Knows nothing of paging.
//! * **mmu**: the x86-64 page walk (4- and 5-level), its caches, and reads in a given address
//!   space. Knows nothing of Linux or of gdb.
//! * **linux**: the kernel found in memory with no hints (KASLR slide, page tables, kallsyms,
//!   BTF layouts, VMCOREINFO), its tasks and threads with their registers, backtraces from the
//!   kernel's own ORC tables, and its log — as data, with text rendering kept apart.
//! * **gdb**: the remote-protocol target over gdbstub, the `monitor` commands, the session state
//!   gdb owns (physical or virtual mode, the active page tables, the selected thread), and the
//!   TCP server.
//!
//! Errors are typed per layer; a lower layer's error is kept as the source, so a caller can
//! still ask whether the device failed. Everything read from the target, a file or the network
//! is untrusted: every walk has a budget and every wait a deadline.
//!
//! Listing a dump's tasks, as data:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // The repository's trimmed Linux 6.1 image (5-level paging), unpacked for the example.
//! # let dir = std::env::temp_dir().join(format!("dmastub-doctest-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let path = dir.join("post-panic.lime");
//! # let packed = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/linux-6.1-la57-trimmed/post-panic.lime.zst");
//! # let unpacked = std::process::Command::new("zstd").args(["-dqf", packed, "-o"]).arg(&path).status()?;
//! # assert!(unpacked.success(), "zstd could not unpack {packed}");
//! use dmastub::{AddressSpace, Hints, Linux, MmuConfig, OpenOptions, Paging, Task, discover, open_file};
//!
//! // A raw, ELF or LiME dump or a live VM's RAM file (a NetTLP adapter is a `PhysMem` too).
//! let memory = open_file(&path, &OpenOptions::default())?;
//! let mut space = AddressSpace::new(memory, MmuConfig::new(Paging::Level4));
//! // The kernel, found with no hints: KASLR slide, page tables, kallsyms, BTF layouts.
//! let linux = Linux::new(discover(&mut space, Hints::default())?);
//! let tasks: Vec<Task> = linux.tasks(&mut space, false)?.tasks;
//!
//! let init = tasks.iter().find(|t| t.pid == 1).ok_or("no pid 1")?;
//! assert_eq!(init.comm, "init");
//! println!("{} tasks; pid 1 is {} with page tables at {:x?}", tasks.len(), init.comm, init.cr3);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! Feature `test-util` adds `testing`: a page-table builder, a synthetic machine, one fake
//! memory and one seeded generator, for tests and demos.

#![warn(missing_docs)]

pub mod addr;
mod bytes;
pub mod dump;
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
pub use gdb::{DmaTarget, Server};
pub use linux::{
    Backtrace, DiscoverError, Hints, Kernel, KernelLog, Linux, LinuxError, LogRecord, Task, Thread, discover,
};
pub use mmu::{AddressSpace, MemError, MmuConfig, Paging};
pub use phys::{OpenError, OpenOptions, PhysError, PhysMem, WriteMode, open_file};
