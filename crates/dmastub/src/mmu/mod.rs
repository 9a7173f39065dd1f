//! x86-64 address translation: the page walk, its caches, and the [`AddressSpace`] that reads
//! memory in a given address space.
//!
//! The layer knows paging and nothing else: no Linux, no gdb. It reads physical memory only
//! through [`PhysMem`](crate::phys::PhysMem). Which address space a debugger means (physical
//! or virtual, under which CR3) is the debugger's state: [`crate::gdb::SessionState`].
//!
//! * `walk`: the x86-64 walk (4- and 5-level, 4 KiB / 2 MiB / 1 GiB pages) as a pure function
//!   over a `TableReader`, optionally recording every step for `vtop`.
//! * `cache`: a bounded cache of whole page-table pages and a bounded translation cache, so a
//!   large virtual read costs about one backend read per data page. Data is never cached.
//! * [`AddressSpace`]: reads and writes of physical memory, and of virtual memory under a CR3
//!   the caller names (`*_in(cr3, …)`); partial reads that stop at the first byte that fails;
//!   batches of objects read together; and the rule that nothing cached outlives a burst of
//!   requests on a source that changes under us.
//! * [`MemError`] and [`TranslateError`]: why an access failed, the physical error kept as the
//!   source ([`MemError::is_device_failure`]); [`MmuStats`]: counters of the work done.
//!
//! Page tables come from the target, which may be corrupt or hostile: every walk is bounded by
//! the paging depth, every cache by a fixed size, and nothing here panics on what it reads.

pub(crate) mod cache;
mod error;
mod space;
mod stats;
pub(crate) mod walk;

#[cfg(test)]
mod tests;

pub use error::{MemError, TranslateError};
pub use space::{AddressSpace, IDLE_FLUSH, MAX_BURST};
pub use stats::MmuStats;
pub use walk::{Translation, WalkStep, WalkTrace};

use crate::addr::{PhysAddr, VirtAddr};
use std::fmt;

/// Entry bits of x86-64 page-table entries (Intel SDM vol. 3, 4.5), as `u64` masks.
pub mod bits {
    /// The entry maps something.
    pub const PRESENT: u64 = 1 << 0;
    /// Writes allowed (ANDed over all levels).
    pub const WRITABLE: u64 = 1 << 1;
    /// User-mode access allowed (ANDed over all levels).
    pub const USER: u64 = 1 << 2;
    /// Page-level write-through.
    pub const PWT: u64 = 1 << 3;
    /// Page-level cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Set by the CPU on access.
    pub const ACCESSED: u64 = 1 << 5;
    /// Set by the CPU on write (leaf entries only).
    pub const DIRTY: u64 = 1 << 6;
    /// Page size: in a PDPTE a 1 GiB page, in a PDE a 2 MiB page (in a PTE this bit is PAT).
    pub const PAGE_SIZE: u64 = 1 << 7;
    /// Global translation (leaf entries only).
    pub const GLOBAL: u64 = 1 << 8;
    /// PAT bit of a 4 KiB PTE (same position as [`PAGE_SIZE`]).
    pub const PAT_4K: u64 = 1 << 7;
    /// PAT bit of a 2 MiB / 1 GiB leaf entry: inside the address field, so masked off.
    pub const PAT_LARGE: u64 = 1 << 12;
    /// Software-available bits 52..=58: never address bits.
    pub const SOFTWARE_HIGH: u64 = 0x7f << 52;
    /// Protection key, bits 59..=62 of leaf entries.
    pub const PROTECTION_KEY: u64 = 0xf << 59;
    /// Execute disable.
    pub const NX: u64 = 1 << 63;
}

/// The most physical-address bits x86-64 defines (MAXPHYADDR ≤ 52).
pub const MAX_PHYS_BITS: u8 = 52;

/// Paging depth: 4-level (48-bit virtual addresses) or 5-level (LA57, 57-bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Paging {
    /// 4-level paging: PML4 at the root, 48-bit virtual addresses.
    #[default]
    Level4,
    /// 5-level paging (LA57): PML5 at the root, 57-bit virtual addresses.
    Level5,
}

impl Paging {
    /// Number of table levels walked.
    pub const fn levels(self) -> u8 {
        match self {
            Paging::Level4 => 4,
            Paging::Level5 => 5,
        }
    }

    /// Bits of a virtual address that translate; the rest must copy the top one.
    pub const fn va_bits(self) -> u8 {
        match self {
            Paging::Level4 => 48,
            Paging::Level5 => 57,
        }
    }

    /// The table levels from the root down.
    pub const fn table_levels(self) -> &'static [Level] {
        match self {
            Paging::Level4 => &[Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt],
            Paging::Level5 => &[Level::Pml5, Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt],
        }
    }

    /// The level of the table CR3 points at.
    pub const fn root_level(self) -> Level {
        match self {
            Paging::Level4 => Level::Pml4,
            Paging::Level5 => Level::Pml5,
        }
    }

    /// Whether `virt` is canonical: bits 63 down to `va_bits - 1` all equal.
    pub const fn is_canonical(self, virt: VirtAddr) -> bool {
        let shift = 64 - self.va_bits() as u32;
        (((virt.0 << shift) as i64) >> shift) as u64 == virt.0
    }
}

impl fmt::Display for Paging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-level", self.levels())
    }
}

/// A level of the page-table hierarchy, named as in the Intel SDM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// Page-map level 5 (5-level paging's root).
    Pml5,
    /// Page-map level 4 (4-level paging's root).
    Pml4,
    /// Page-directory-pointer table: its entries may map 1 GiB pages.
    Pdpt,
    /// Page directory: its entries may map 2 MiB pages.
    Pd,
    /// Page table: its entries map 4 KiB pages.
    Pt,
}

impl Level {
    /// The lowest virtual-address bit that indexes a table of this level.
    pub const fn shift(self) -> u32 {
        match self {
            Level::Pml5 => 48,
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }

    /// The index (0..512) of `virt`'s entry in a table of this level.
    pub const fn index(self, virt: VirtAddr) -> u16 {
        ((virt.0 >> self.shift()) & 0x1ff) as u16
    }

    /// The page an entry of this level maps when it is a leaf, if it can be one.
    pub const fn leaf_size(self) -> Option<PageSize> {
        match self {
            Level::Pdpt => Some(PageSize::Size1G),
            Level::Pd => Some(PageSize::Size2M),
            Level::Pt => Some(PageSize::Size4K),
            Level::Pml5 | Level::Pml4 => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Pml5 => "PML5",
            Level::Pml4 => "PML4",
            Level::Pdpt => "PDPT",
            Level::Pd => "PD",
            Level::Pt => "PT",
        })
    }
}

/// The size of a mapped page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// 4 KiB, mapped by a PT entry.
    Size4K,
    /// 2 MiB, mapped by a PD entry.
    Size2M,
    /// 1 GiB, mapped by a PDPT entry.
    Size1G,
}

impl PageSize {
    /// log2 of the size.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// `bytes() - 1`: the offset bits inside such a page.
    pub const fn offset_mask(self) -> u64 {
        self.bytes() - 1
    }

    /// The table level whose entries map pages of this size.
    pub const fn leaf_level(self) -> Level {
        match self {
            PageSize::Size4K => Level::Pt,
            PageSize::Size2M => Level::Pd,
            PageSize::Size1G => Level::Pdpt,
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            PageSize::Size4K => "4 KiB",
            PageSize::Size2M => "2 MiB",
            PageSize::Size1G => "1 GiB",
        })
    }
}

/// How addresses translate: paging depth and the machine's physical-address width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuConfig {
    /// The paging depth.
    pub paging: Paging,
    /// MAXPHYADDR: entry bits at and above this are not address bits (e.g. AMD SME's C-bit
    /// at 47 on a 46-bit machine). Values outside 12..=52 are clamped.
    pub phys_bits: u8,
}

impl Default for MmuConfig {
    fn default() -> Self {
        Self { paging: Paging::Level4, phys_bits: MAX_PHYS_BITS }
    }
}

impl MmuConfig {
    /// The configuration for `paging` with the full 52-bit physical width.
    pub const fn new(paging: Paging) -> Self {
        Self { paging, phys_bits: MAX_PHYS_BITS }
    }

    /// The bits of an entry (or of CR3) that hold a 4 KiB-aligned physical address:
    /// 12 up to `phys_bits`.
    pub const fn addr_mask(self) -> u64 {
        let bits = if self.phys_bits > MAX_PHYS_BITS {
            MAX_PHYS_BITS
        } else if self.phys_bits < 12 {
            12
        } else {
            self.phys_bits
        };
        ((1u64 << bits) - 1) & !0xfff
    }

    /// The physical address of the root table named by a CR3 value: PCID / PWT / PCD in the
    /// low 12 bits, the no-flush bit 63 and the LAM bits 61/62 are dropped.
    pub const fn root_of(self, cr3: u64) -> PhysAddr {
        PhysAddr(cr3 & self.addr_mask())
    }
}
