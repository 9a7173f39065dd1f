//! Builds real x86-64 page tables in a byte vector of physical memory: for tests, and for the
//! synthetic demo machine.
//!
//! ```
//! use dmastub::testing::page_tables::PageTableBuilder;
//! use dmastub::mmu::{bits, PageSize, Paging};
//! use dmastub::VirtAddr;
//!
//! let mut b = PageTableBuilder::new(Paging::Level4, 16 << 20);
//! b.map(VirtAddr(0xffff_8880_0000_0000), 0x20_0000.into(), PageSize::Size2M, bits::WRITABLE)
//!     .unwrap();
//! let cr3 = b.root();
//! let mem = b.into_mem("demo");
//! # let _ = (cr3, mem);
//! ```

use crate::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mmu::{Level, MmuConfig, PageSize, Paging, bits};
use crate::phys::buffer::BufferMem;

/// Why the builder could not do what was asked (a bug in the caller's layout).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // each variant's message says what it means
pub enum BuildError {
    #[error("no room left for page-table pages (table area exhausted at phys {floor})")]
    OutOfTablePages { floor: PhysAddr },
    #[error("{what} {addr:#x} is not aligned to the {size} page")]
    Misaligned { what: &'static str, addr: u64, size: PageSize },
    #[error("virt {0} is not canonical for this paging depth")]
    NotCanonical(VirtAddr),
    #[error("phys {addr} (+{len:#x} bytes) is outside the builder's memory")]
    OutsideMemory { addr: PhysAddr, len: u64 },
    #[error("virt {virt}: the {level} entry is a large page, not a table, so nothing can be mapped below it")]
    LargePageInTheWay { virt: VirtAddr, level: Level },
    #[error("{paging} paging has no {level} level")]
    NoSuchLevel { level: Level, paging: Paging },
    #[error("virt {virt}: the {level} entry points to a table; unmap it before mapping a large page there")]
    TableInTheWay { virt: VirtAddr, level: Level },
}

/// Page tables under construction, in a vector that becomes the machine's physical memory.
///
/// Table pages are allocated downward from the top of memory (or of the area given to
/// [`set_table_area`](Self::set_table_area)), so data placed low does not meet them.
pub struct PageTableBuilder {
    paging: Paging,
    mem: Vec<u8>,
    root: PhysAddr,
    /// The next table page goes just below this.
    alloc_top: u64,
    /// Table pages may not go below this.
    alloc_floor: u64,
    table_flags: u64,
    tables: usize,
    /// Entry bits that hold addresses when following existing entries.
    addr_mask: u64,
}

impl PageTableBuilder {
    /// `mem_size` bytes of zeroed memory (rounded down to whole pages) with an empty root table
    /// in its top page.
    ///
    /// # Panics
    /// When `mem_size` is less than one page: there is no room for the root table.
    pub fn new(paging: Paging, mem_size: usize) -> Self {
        let size = mem_size & !(PAGE_SIZE as usize - 1);
        assert!(size >= PAGE_SIZE as usize, "PageTableBuilder needs at least one page of memory");
        let mut b = Self {
            paging,
            mem: vec![0; size],
            root: PhysAddr(0),
            alloc_top: size as u64,
            alloc_floor: 0,
            table_flags: bits::PRESENT | bits::WRITABLE | bits::USER | bits::ACCESSED,
            tables: 0,
            addr_mask: MmuConfig::new(paging).addr_mask(),
        };
        b.root = b.alloc_page().unwrap_or_default();
        b
    }

    /// Later table pages come from `[start, end)` (page-aligned, inside memory), top down.
    pub fn set_table_area(&mut self, start: PhysAddr, end: PhysAddr) -> Result<(), BuildError> {
        let (s, e) = (start.0 & !(PAGE_SIZE - 1), end.0 & !(PAGE_SIZE - 1));
        if e > self.mem.len() as u64 || s > e {
            return Err(BuildError::OutsideMemory { addr: start, len: end.0.saturating_sub(start.0) });
        }
        self.alloc_floor = s;
        self.alloc_top = e;
        Ok(())
    }

    /// Flags of the entries that point at new intermediate tables (default P W U A, so the
    /// leaf alone decides permissions).
    pub fn set_table_flags(&mut self, flags: u64) {
        self.table_flags = flags | bits::PRESENT;
    }

    /// The physical-address width used when following entries the caller wrote with high
    /// junk bits (e.g. an SME C-bit in [`set_table_flags`](Self::set_table_flags)).
    pub fn set_phys_bits(&mut self, phys_bits: u8) {
        self.addr_mask = MmuConfig { paging: self.paging, phys_bits }.addr_mask();
    }

    /// The paging depth the tables are built for.
    pub fn paging(&self) -> Paging {
        self.paging
    }

    /// The CR3 value: the root table's physical address.
    pub fn root(&self) -> u64 {
        self.root.0
    }

    /// Table pages allocated so far, the root included.
    pub fn table_pages(&self) -> usize {
        self.tables
    }

    /// The lowest address used by table pages so far.
    pub fn table_floor(&self) -> PhysAddr {
        PhysAddr(self.alloc_top)
    }

    /// Allocates a zeroed 4 KiB page (for a table, or for data the caller wants kept apart).
    pub fn alloc_page(&mut self) -> Result<PhysAddr, BuildError> {
        if self.alloc_top < self.alloc_floor + PAGE_SIZE {
            return Err(BuildError::OutOfTablePages { floor: PhysAddr(self.alloc_top) });
        }
        self.alloc_top -= PAGE_SIZE;
        let at = self.alloc_top as usize;
        self.mem[at..at + PAGE_SIZE as usize].fill(0);
        self.tables += 1;
        Ok(PhysAddr(self.alloc_top))
    }

    /// Maps the page of `size` at `virt` to `phys`. `flags` are entry bits ([`bits`]); PRESENT,
    /// and PS for large pages, are added. Missing intermediate tables are created; an existing
    /// leaf is replaced.
    pub fn map(
        &mut self,
        virt: VirtAddr,
        phys: PhysAddr,
        size: PageSize,
        flags: u64,
    ) -> Result<(), BuildError> {
        if virt.0 & size.offset_mask() != 0 {
            return Err(BuildError::Misaligned { what: "virt", addr: virt.0, size });
        }
        if phys.0 & size.offset_mask() != 0 || phys.0 >= 1 << 52 {
            return Err(BuildError::Misaligned { what: "phys", addr: phys.0, size });
        }
        let level = size.leaf_level();
        let at = self.entry_slot(virt, level)?;
        let old = self.read_u64(at)?;
        if size != PageSize::Size4K && old & bits::PRESENT != 0 && old & bits::PAGE_SIZE == 0 {
            return Err(BuildError::TableInTheWay { virt, level });
        }
        let ps = if size == PageSize::Size4K { 0 } else { bits::PAGE_SIZE };
        self.write_u64(at, phys.0 | flags | ps | bits::PRESENT)
    }

    /// Maps `len` bytes from `virt` with 4 KiB pages onto the pages of `[phys, phys + len)` in
    /// a scrambled order: page `i` goes to page `i * stride mod n`, with the largest stride up
    /// to `n / 2` that shares no factor with `n` (1 if none does). When that stride is not 1
    /// (any `n` above 6, and 5), no two neighbouring virtual pages are physical neighbours: the
    /// worst case for merging reads, used by tests and the benchmark.
    pub fn map_scattered(
        &mut self,
        virt: VirtAddr,
        phys: PhysAddr,
        len: u64,
        flags: u64,
    ) -> Result<(), BuildError> {
        let pages = len.div_ceil(PAGE_SIZE);
        let outside = BuildError::OutsideMemory { addr: phys, len };
        if virt.0.checked_add(pages * PAGE_SIZE).is_none() || phys.0.checked_add(pages * PAGE_SIZE).is_none()
        {
            return Err(outside);
        }
        let gcd = |mut a: u64, mut b: u64| {
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let stride = (2..=pages / 2).rev().find(|&s| gcd(s, pages) == 1 && s + 1 != pages).unwrap_or(1);
        for i in 0..pages {
            let p = (i * stride) % pages;
            self.map(
                VirtAddr(virt.0 + i * PAGE_SIZE),
                PhysAddr(phys.0 + p * PAGE_SIZE),
                PageSize::Size4K,
                flags,
            )?;
        }
        Ok(())
    }

    /// Maps `len` bytes (rounded up to whole pages of `size`) from `virt` to `phys`.
    pub fn map_range(
        &mut self,
        virt: VirtAddr,
        phys: PhysAddr,
        len: u64,
        size: PageSize,
        flags: u64,
    ) -> Result<(), BuildError> {
        let pages = len.div_ceil(size.bytes());
        for i in 0..pages {
            let off = i * size.bytes();
            self.map(virt.wrapping_add(off), phys.wrapping_add(off), size, flags)?;
        }
        Ok(())
    }

    /// Writes a raw `entry` at `level` on the path of `virt`, creating the tables above it as
    /// needed: for non-present, self-referencing or out-of-RAM entries. Returns where it went.
    pub fn set_entry(&mut self, virt: VirtAddr, level: Level, entry: u64) -> Result<PhysAddr, BuildError> {
        let at = self.entry_slot(virt, level)?;
        self.write_u64(at, entry)?;
        Ok(at)
    }

    /// Where the `level` entry for `virt` is, if the tables above it exist.
    pub fn entry_addr(&self, virt: VirtAddr, level: Level) -> Option<PhysAddr> {
        let mut table = self.root;
        for &l in self.paging.table_levels() {
            let at = PhysAddr(table.0 + u64::from(l.index(virt)) * 8);
            if l == level {
                return Some(at);
            }
            let e = self.read_u64(at).ok()?;
            if e & bits::PRESENT == 0 || (l != Level::Pml4 && l != Level::Pml5 && e & bits::PAGE_SIZE != 0) {
                return None;
            }
            table = PhysAddr(e & self.addr_mask);
        }
        None
    }

    /// The table path of `virt` down to the `level` entry, created when `create`.
    fn entry_slot(&mut self, virt: VirtAddr, level: Level) -> Result<PhysAddr, BuildError> {
        if !self.paging.is_canonical(virt) {
            return Err(BuildError::NotCanonical(virt));
        }
        let mut table = self.root;
        for &l in self.paging.table_levels() {
            let at = PhysAddr(table.0 + u64::from(l.index(virt)) * 8);
            if l == level {
                return Ok(at);
            }
            let e = self.read_u64(at)?;
            if e & bits::PRESENT == 0 {
                let t = self.alloc_page()?;
                self.write_u64(at, t.0 | self.table_flags)?;
                table = t;
            } else if matches!(l, Level::Pdpt | Level::Pd) && e & bits::PAGE_SIZE != 0 {
                return Err(BuildError::LargePageInTheWay { virt, level: l });
            } else {
                table = PhysAddr(e & self.addr_mask);
            }
        }
        Err(BuildError::NoSuchLevel { level, paging: self.paging })
    }

    fn range(&self, addr: PhysAddr, len: usize) -> Result<std::ops::Range<usize>, BuildError> {
        let start = usize::try_from(addr.0).ok();
        match start.and_then(|s| s.checked_add(len).map(|e| s..e)) {
            Some(r) if r.end <= self.mem.len() => Ok(r),
            _ => Err(BuildError::OutsideMemory { addr, len: len as u64 }),
        }
    }

    /// Copies `data` into memory at `phys`.
    pub fn write_bytes(&mut self, phys: PhysAddr, data: &[u8]) -> Result<(), BuildError> {
        let r = self.range(phys, data.len())?;
        self.mem[r].copy_from_slice(data);
        Ok(())
    }

    /// Writes a little-endian `u64` at `phys`.
    pub fn write_u64(&mut self, phys: PhysAddr, value: u64) -> Result<(), BuildError> {
        self.write_bytes(phys, &value.to_le_bytes())
    }

    /// Reads the little-endian `u64` at `phys`.
    pub fn read_u64(&self, phys: PhysAddr) -> Result<u64, BuildError> {
        let r = self.range(phys, 8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.mem[r]);
        Ok(u64::from_le_bytes(b))
    }

    /// The memory built so far.
    pub fn bytes(&self) -> &[u8] {
        &self.mem
    }

    /// The memory built so far, to place data in.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem
    }

    /// The finished memory: physical address = offset.
    pub fn into_bytes(self) -> Vec<u8> {
        self.mem
    }

    /// The memory as a read-only source with one RAM range at physical 0.
    pub fn into_mem(self, name: &str) -> BufferMem {
        BufferMem::new(name, self.mem)
    }
}
