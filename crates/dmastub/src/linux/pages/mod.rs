//! Which pages a filtered dump keeps, decided from the kernel's own `struct page` array, as
//! makedumpfile's `-d N` decides them (dump levels: 1 zero pages, 2 cache pages without
//! private data, 4 cache pages with it, 8 user pages (anonymous and hugetlbfs), 16 free pages).
//!
//! makedumpfile reads the array with a DWARF vmlinux; [`classify`] needs only the memory: the
//! layout comes from the kernel's BTF ([`Kernel::types`]) and its VMCOREINFO
//! ([`PageLayout::of_kernel`]), the array from `vmemmap_base` (x86-64 `SPARSEMEM_VMEMMAP`: the
//! page of pfn P is at `vmemmap_base + P * sizeof(struct page)`). The decision for each page
//! follows `__exclude_unnecessary_pages` test for test: free (buddy) blocks by their first
//! page's `_mapcount` and order (`private`), compound pages (THP, hugetlbfs) by their head,
//! cache pages by `PG_lru`/`PG_swapcache`, anonymous ones by `mapping`'s low bit; hardware-
//! poisoned and logically offline pages are dropped at every level. Zero pages are decided by
//! content while writing, not here ([`DumpLevel::excludes_zero`]).
//!
//! The array is read in batches of [`BATCH_BYTES`], translated to physical runs through the
//! kernel's page tables and asked for together, only for pfns in RAM; what the decision of
//! a free block or a compound page covers is not read at all. A struct page that cannot be
//! read (an unmapped part of the vmemmap) keeps its page: nothing is dropped for want of
//! knowledge. The result is one bit per pfn.

mod decide;
mod layout;
#[cfg(test)]
mod tests;
mod walk;

pub use layout::PageLayout;
pub(crate) use walk::MAX_PFNS;
pub use walk::{BATCH_BYTES, classify_with};

use crate::linux::Kernel;
use crate::mmu::{AddressSpace, MemError};
use crate::phys::RamRange;
use std::fmt;
use std::str::FromStr;

/// makedumpfile's dump level (`-d N`): which kinds of pages a dump leaves out, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DumpLevel(pub u8);

impl DumpLevel {
    /// Bit 1: pages filled with zeros (decided by content, while writing).
    pub const ZERO: u8 = 1;
    /// Bit 2: cache pages without private data.
    pub const CACHE: u8 = 2;
    /// Bit 4: cache pages, with private data or without.
    pub const CACHE_PRIVATE: u8 = 4;
    /// Bit 8: user pages (anonymous and hugetlbfs).
    pub const USER: u8 = 8;
    /// Bit 16: free pages.
    pub const FREE: u8 = 16;
    /// Every bit: what distributions' kdump uses (`-d 31`).
    pub const ALL: DumpLevel = DumpLevel(31);

    /// Whether pages filled with zeros are left out (the writer checks their content).
    pub fn excludes_zero(self) -> bool {
        self.0 & Self::ZERO != 0
    }

    /// Whether pages of `class` are left out at this level. Hardware-poisoned and offline
    /// pages always are; kept pages never.
    pub fn excludes(self, class: PageClass) -> bool {
        match class {
            PageClass::Kept => false,
            PageClass::Cache => self.0 & (Self::CACHE | Self::CACHE_PRIVATE) != 0,
            PageClass::CachePrivate => self.0 & Self::CACHE_PRIVATE != 0,
            PageClass::User => self.0 & Self::USER != 0,
            PageClass::Free => self.0 & Self::FREE != 0,
            PageClass::HwPoison | PageClass::Offline => true,
        }
    }

    /// What the level leaves out, in words: "zero, cache, private cache, user and free pages"
    /// for 31, "no pages" for 0.
    pub fn describe(self) -> String {
        let names: Vec<&str> = [
            (Self::ZERO, "zero"),
            (Self::CACHE, "cache"),
            (Self::CACHE_PRIVATE, "private cache"),
            (Self::USER, "user"),
            (Self::FREE, "free"),
        ]
        .iter()
        .filter(|(bit, _)| self.0 & bit != 0)
        .map(|(_, name)| *name)
        .collect();
        match names.as_slice() {
            [] => "no pages".to_string(),
            [one] => format!("{one} pages"),
            [init @ .., last] => format!("{} and {last} pages", init.join(", ")),
        }
    }
}

impl FromStr for DumpLevel {
    type Err = String;

    /// `0` to `31`, decimal (or `0x` hex).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let v = match t.strip_prefix("0x") {
            Some(h) => u8::from_str_radix(h, 16),
            None => t.parse::<u8>(),
        };
        match v {
            Ok(v) if v <= 31 => Ok(DumpLevel(v)),
            _ => Err(format!("dump level {s:?} is not a number from 0 to 31 (makedumpfile's -d)")),
        }
    }
}

impl fmt::Display for DumpLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the decision made of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageClass {
    /// Kept in the dump.
    Kept,
    /// A page-cache page without private data (`-d 2`).
    Cache,
    /// A page-cache page with private data (buffer heads; `-d 4`).
    CachePrivate,
    /// An anonymous or hugetlbfs page of a process (`-d 8`).
    User,
    /// A free page, in the buddy allocator (`-d 16`).
    Free,
    /// A page with an uncorrectable memory error (always left out).
    HwPoison,
    /// A logically offline page (ballooned, hot-removed; always left out).
    Offline,
}

impl PageClass {
    /// Every class, kept first.
    pub const ALL: [PageClass; 7] = [
        PageClass::Kept,
        PageClass::Cache,
        PageClass::CachePrivate,
        PageClass::User,
        PageClass::Free,
        PageClass::HwPoison,
        PageClass::Offline,
    ];

    /// A short lowercase name: "kept", "cache", "private cache", "user", "free", "hwpoison",
    /// "offline".
    pub fn name(self) -> &'static str {
        match self {
            PageClass::Kept => "kept",
            PageClass::Cache => "cache",
            PageClass::CachePrivate => "private cache",
            PageClass::User => "user",
            PageClass::Free => "free",
            PageClass::HwPoison => "hwpoison",
            PageClass::Offline => "offline",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Pages of RAM by what was decided of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts {
    /// Pages per [`PageClass`], in [`PageClass::ALL`]'s order.
    pub pages: [u64; 7],
    /// Kept pages whose struct page could not be read (counted in [`PageClass::Kept`] too).
    pub unreadable: u64,
    /// RAM pages of the source the kernel has no struct page for (its vmemmap does not map
    /// one): not memory the kernel manages, left out at every level but 0. Not in `pages`.
    pub no_struct_page: u64,
}

impl ClassCounts {
    /// Pages of `class`.
    pub fn get(&self, class: PageClass) -> u64 {
        self.pages[class.index()]
    }

    /// Pages left out, every class together.
    pub fn excluded(&self) -> u64 {
        self.pages[1..].iter().sum()
    }

    fn add(&mut self, class: PageClass, n: u64) {
        self.pages[class.index()] += n;
    }
}

impl fmt::Display for ClassCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for c in PageClass::ALL {
            if c != PageClass::Kept && self.get(c) == 0 {
                continue;
            }
            write!(f, "{}{} {}", if first { "" } else { ", " }, self.get(c), c)?;
            first = false;
        }
        if self.unreadable > 0 {
            write!(f, " ({} of them kept as their struct page was unreadable)", self.unreadable)?;
        }
        if self.no_struct_page > 0 {
            write!(
                f,
                "; {} left out with no struct page (not memory the kernel manages)",
                self.no_struct_page
            )?;
        }
        Ok(())
    }
}

/// The decision for every pfn below `max_pfn`: one bit each, set for the RAM pages the dump
/// keeps (pfns outside RAM are never kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageSet {
    /// The RAM the decision covers.
    pub ram: Vec<RamRange>,
    /// One past the highest pfn with RAM.
    pub max_pfn: u64,
    /// One past the highest RAM pfn the kernel has a struct page for (RAM above it is not
    /// memory the kernel manages, e.g. a QEMU core's BIOS ROM); `max_pfn` at level 0.
    pub managed_end: u64,
    /// One bit per pfn, bit `pfn % 64` of word `pfn / 64`: set when kept.
    kept: Vec<u64>,
    /// RAM pages by what was decided of them.
    pub counts: ClassCounts,
    /// Bytes of struct page read to decide.
    pub mem_map_bytes: u64,
    /// The physical runs (address, length) of the struct page array that were read: the
    /// writer keeps these pages whatever their class, so that the dump can be filtered again.
    pub mem_map_ranges: Vec<(u64, u64)>,
    /// How the layout and the array were found, and anything odd met on the way.
    pub notes: Vec<String>,
}

/// A pfn is RAM when its first byte is (makedumpfile's `is_in_segs`).
fn ram_pfns(ram: &[RamRange]) -> impl Iterator<Item = (u64, u64)> + '_ {
    ram.iter()
        .map(|r| (r.start.0.div_ceil(crate::PAGE_SIZE), r.end().div_ceil(crate::PAGE_SIZE)))
        .filter(|(a, b)| a < b)
}

/// One past the highest RAM pfn.
fn max_pfn_of(ram: &[RamRange]) -> u64 {
    ram_pfns(ram).map(|(_, b)| b).max().unwrap_or(0)
}

impl PageSet {
    /// Nothing kept, below `max_pfn`.
    fn empty(ram: &[RamRange]) -> Self {
        let max_pfn = max_pfn_of(ram);
        Self {
            ram: ram.to_vec(),
            max_pfn,
            managed_end: max_pfn,
            kept: vec![0; max_pfn.div_ceil(64) as usize],
            counts: ClassCounts::default(),
            mem_map_bytes: 0,
            mem_map_ranges: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Level 0: every RAM page kept, nothing read.
    pub fn all_ram(ram: &[RamRange]) -> Self {
        let mut set = Self::empty(ram);
        for (a, b) in ram_pfns(ram) {
            set.set_range(a, b, true);
        }
        set.counts.pages[PageClass::Kept.index()] = set.kept_count();
        set
    }

    /// Whether the page at `pfn` is kept (false past `max_pfn` and outside RAM).
    pub fn is_kept(&self, pfn: u64) -> bool {
        pfn < self.max_pfn && self.kept[(pfn / 64) as usize] & (1 << (pfn % 64)) != 0
    }

    /// Pages kept.
    pub fn kept_count(&self) -> u64 {
        self.kept.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The kept pfns as runs `[start, end)`, in order.
    pub fn kept_runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut pfn = 0u64;
        std::iter::from_fn(move || {
            let start = self.next_with(pfn, true)?;
            let end = self.next_with(start, false).unwrap_or(self.max_pfn);
            pfn = end;
            Some((start, end))
        })
    }

    /// The first pfn at or after `from` whose bit is `kept`.
    fn next_with(&self, from: u64, kept: bool) -> Option<u64> {
        let mut pfn = from;
        while pfn < self.max_pfn {
            let w = self.kept[(pfn / 64) as usize];
            let w = if kept { w } else { !w } >> (pfn % 64);
            if w != 0 {
                let at = pfn + u64::from(w.trailing_zeros());
                return (at < self.max_pfn).then_some(at);
            }
            pfn = (pfn / 64 + 1) * 64;
        }
        None
    }

    /// Sets or clears the bits of `[start, end)` (clipped to `max_pfn`), a word at a time.
    fn set_range(&mut self, start: u64, end: u64, kept: bool) {
        let end = end.min(self.max_pfn);
        let mut pfn = start;
        while pfn < end {
            let word = (pfn / 64) as usize;
            let lo = pfn % 64;
            let n = (64 - lo).min(end - pfn);
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << lo };
            if kept {
                self.kept[word] |= mask;
            } else {
                self.kept[word] &= !mask;
            }
            pfn += n;
        }
    }
}

/// Why the pages could not be classified.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PageFilterError {
    /// Neither a struct layout nor a VMCOREINFO was found.
    #[error(
        "no struct page layout: the kernel has neither BTF nor a VMCOREINFO in memory (give a layout with --btf or a profile, or filter at level 0)"
    )]
    NoLayout,
    /// The layout lacks a field the decision reads.
    #[error(
        "the struct layout ({origin}) has no {what}, and VMCOREINFO has no OFFSET/SIZE line for it (give a BTF file or a profile that has it, or filter at level 0)"
    )]
    MissingField {
        /// The field (`page._mapcount`, `sizeof(struct page)`).
        what: String,
        /// Where the layout came from.
        origin: String,
    },
    /// The VMCOREINFO lacks a number the decision compares with.
    #[error(
        "the kernel's VMCOREINFO has no NUMBER({what}) (a kernel without crash-dump support?): give a VMCOREINFO or profile that has it, or filter at level 0"
    )]
    MissingNumber {
        /// The number (`PG_lru`, `PG_head_mask`).
        what: String,
    },
    /// A layout fact makes no sense.
    #[error("implausible struct page layout: {what}")]
    Implausible {
        /// What, with the values.
        what: String,
    },
    /// Something needed could not be read.
    #[error("cannot read {what}")]
    Unreadable {
        /// What, with the address.
        what: String,
    },
    /// The source claims more RAM than a bitmap of its pages would be sane for.
    #[error(
        "RAM up to pfn {max_pfn:#x} is more than the {limit:#x} pfns a page set may cover (a DMA source reaches the whole physical space: give the machine's RAM ranges)"
    )]
    TooMuchRam {
        /// One past the highest RAM pfn.
        max_pfn: u64,
        /// The limit.
        limit: u64,
    },
    /// The device failed while the array was read (no adapter, timeouts): reading on would
    /// only wait again.
    #[error("the device failed reading the struct page array: {0}")]
    Device(#[source] MemError),
}

impl PageFilterError {
    /// Whether the device failed (another try may succeed), rather than the kernel lacking
    /// something.
    pub fn is_device_failure(&self) -> bool {
        matches!(self, PageFilterError::Device(_))
    }
}

/// Decides which pages a dump at `level` keeps, from `kernel`'s struct page array read
/// through `space` under the kernel's CR3. `progress` is told the pfns done out of the RAM
/// pfns, after every batch.
///
/// Level 0 keeps every RAM page and reads nothing ([`PageSet::all_ram`]); makedumpfile still
/// drops hardware-poisoned and offline pages there. Every other level, level 1 (zero pages
/// only) included, reads the array: those two classes are dropped at every level, as
/// makedumpfile does.
pub fn classify(
    kernel: &Kernel,
    space: &mut AddressSpace,
    ram: &[RamRange],
    level: DumpLevel,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PageSet, PageFilterError> {
    if level.0 == 0 {
        let set = PageSet::all_ram(ram);
        let total = set.kept_count();
        progress(total, total);
        return Ok(set);
    }
    let layout = PageLayout::for_kernel(kernel, space)?;
    classify_with(&layout, space, kernel.cr3.value, ram, level, progress)
}
