//! The fuzz harnesses: one function per target in `fuzz/fuzz_targets/`, each taking the
//! fuzzer's bytes and driving one path that untrusted input takes through dmastub.
//!
//! A harness panics only when dmastub breaks a promise: a panic inside it, or a read that
//! returns bytes other than the machine's. Error results are the expected answer to bad input.
//! The cargo-fuzz targets are one-line wrappers, and `tests/fuzz_corpora.rs` calls the same
//! functions on every file of `fuzz/corpus/TARGET/` with the stable toolchain, so CI replays the
//! corpora (and every input a fuzzer once crashed on) without nightly.
//!
//! Targets that need "real memory" use the trimmed images in `tests/fixtures` (always in the
//! repository); the walkers also use the full 6.1 post-panic image of the shared fixtures when
//! it is there, whose tasks have registers to unwind. Their inputs do not carry memory: they
//! carry mutations (which bytes of the memory a clean run read, and what to write there), so
//! the corpus stays small and every mutation lands somewhere a walker looks.

use crate::addr::{PhysAddr, VirtAddr};
use crate::linux::btf::Btf;
use crate::linux::commands::Linux;
use crate::linux::discover::{Hints, discover};
use crate::linux::tasks::TaskLayout;
use crate::linux::threads::ThreadLayout;
use crate::linux::unwind::{self, Orc, OrcLayout};
use crate::linux::{Hint, render};
use crate::linux::{TypeInfo, View, kallsyms};
use crate::mmu::walk::{DirectReader, walk, walk_trace};
use crate::mmu::{AddressSpace, MmuConfig, Paging};
use crate::phys::buffer::BufferMem;
use crate::phys::nettlp::wire::{self, Completion, CplStatus, MemRequest, RequesterId, Tlp};
use crate::phys::nettlp::{NetTlpConfig, NetTlpMem};
use crate::phys::{FileMem, Format, OpenOptions, PhysError, PhysMem, RamRange, Segment, SourceKind};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A harness: the fuzzer's bytes in; panics only on a broken promise.
pub type Harness = fn(&[u8]);

/// Every harness by target name, as `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/` call it.
pub const TARGETS: &[(&str, Harness)] = &[
    ("image", image),
    ("btf", btf),
    ("kallsyms", kallsyms),
    ("walkers", walkers),
    ("page_walk", page_walk),
    ("monitor", monitor),
    ("nettlp", nettlp),
    ("protocol", protocol),
];

/// Little-endian fields taken off the front of the input; missing bytes read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> u64 {
        let n = n.min(8);
        let mut b = [0u8; 8];
        let k = n.min(self.0.len());
        b[..k].copy_from_slice(&self.0[..k]);
        self.0 = &self.0[k..];
        u64::from_le_bytes(b)
    }
    fn u8(&mut self) -> u8 {
        self.take(1) as u8
    }
    fn u16(&mut self) -> u16 {
        self.take(2) as u16
    }
    fn u32(&mut self) -> u32 {
        self.take(4) as u32
    }
    fn u64(&mut self) -> u64 {
        self.take(8)
    }
}

// ---------------------------------------------------------------------------------------------
// Image files: format detection, ELF core and LiME parsing, reads through the ranges.

mod images;
mod nettlp;
mod parsers;
mod protocol;

pub use images::{image, walkers};
pub use nettlp::nettlp;
pub use parsers::{btf, kallsyms, monitor, page_walk};
pub use protocol::protocol;
