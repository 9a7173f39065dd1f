//! Tests of the walk, the caches and `AddressSpace` on page tables built by the builder: the
//! shared helpers here, the tests by job in `tests/`.

mod cache;
mod reads;
mod walk;

use super::walk::{DirectReader, walk, walk_trace};
use super::*;
use crate::phys::buffer::BufferMem;
use crate::phys::{PhysError, PhysMem, RamRange, SourceKind};
use crate::testing::page_tables::PageTableBuilder;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const W: u64 = bits::WRITABLE;
const U: u64 = bits::USER;
const NX: u64 = bits::NX;
const MIB: u64 = 1 << 20;

/// A source that counts backend reads and can pretend to be live, or a device that died.
struct Probe {
    inner: BufferMem,
    volatile: bool,
    dead: bool,
    reads: Arc<AtomicU64>,
}

impl Probe {
    fn new(inner: BufferMem, volatile: bool) -> (Self, Arc<AtomicU64>) {
        let reads = Arc::new(AtomicU64::new(0));
        (Self { inner, volatile, dead: false, reads: reads.clone() }, reads)
    }
}

impl PhysMem for Probe {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Buffer
    }
    fn ram(&self) -> &[RamRange] {
        self.inner.ram()
    }
    fn is_volatile(&self) -> bool {
        self.volatile
    }
    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.dead {
            return Err(PhysError::device(addr, "probe", "no completion"));
        }
        self.inner.read(addr, buf)
    }
    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), PhysError> {
        self.inner.write(addr, data)
    }
}

fn walk_mem(
    mem: &mut BufferMem,
    config: MmuConfig,
    cr3: u64,
    virt: u64,
) -> Result<Translation, TranslateError> {
    walk(&mut DirectReader::new(mem), config, cr3, VirtAddr(virt), None)
}

/// An address space read in one root, as a debugger in virtual mode reads it.
struct Rooted {
    s: AddressSpace,
    cr3: u64,
}

impl Rooted {
    fn new(s: AddressSpace, cr3: u64) -> Self {
        Self { s, cr3 }
    }
    fn cr3(&self) -> Option<u64> {
        Some(self.cr3)
    }
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        self.s.read_in(self.cr3, addr, buf)
    }
    fn read_virt(&mut self, virt: VirtAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.s.read_virt_in(self.cr3, virt, buf)
    }
    fn translate(&mut self, virt: VirtAddr) -> Result<Translation, TranslateError> {
        self.s.translate_in(self.cr3, virt)
    }
    fn vtop(&mut self, virt: VirtAddr) -> WalkTrace {
        self.s.vtop_in(self.cr3, virt)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.s.write_virt_in(self.cr3, VirtAddr(addr), data)
    }
}

impl std::ops::Deref for Rooted {
    type Target = AddressSpace;
    fn deref(&self) -> &AddressSpace {
        &self.s
    }
}

impl std::ops::DerefMut for Rooted {
    fn deref_mut(&mut self) -> &mut AddressSpace {
        &mut self.s
    }
}

fn space(b: PageTableBuilder) -> Rooted {
    let paging = b.paging();
    let cr3 = b.root();
    Rooted::new(AddressSpace::new(Box::new(b.into_mem("test")), MmuConfig::new(paging)), cr3)
}

/// Memory whose every byte says where it is: the byte at phys `p` is `p` mixed down to 8 bits.
fn pattern(p: u64) -> u8 {
    (p ^ (p >> 8) ^ (p >> 16) ^ (p >> 24)) as u8
}

fn fill_pattern(b: &mut PageTableBuilder, start: u64, len: u64) {
    let data: Vec<u8> = (start..start + len).map(pattern).collect();
    b.write_bytes(PhysAddr(start), &data).unwrap();
}
