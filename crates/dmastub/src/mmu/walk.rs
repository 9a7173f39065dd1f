//! The x86-64 page walk, as a pure function over whatever reads table entries.
//!
//! Keeping the walk free of caches and sources lets `vtop` run the very same code over fresh
//! reads that the cached hot path runs over the table cache, and lets tests drive it with
//! tables built in a byte vector.

use super::{Level, MmuConfig, PageSize, Paging, TranslateError, bits};
use crate::addr::{PhysAddr, VirtAddr};
use crate::phys::{PhysError, PhysMem};
use std::fmt;

/// Reads one 8-byte entry of a page-table page.
pub trait TableReader {
    /// The entry `index` (0..512) of the 4 KiB table at `table` (4 KiB-aligned).
    fn read_entry(&mut self, table: PhysAddr, index: u16) -> Result<u64, PhysError>;
}

/// Reads each entry straight from the source, 8 bytes at a time: what `vtop` uses, so it shows
/// what is in memory now rather than what a cache remembers.
pub struct DirectReader<'a> {
    pub mem: &'a mut dyn PhysMem,
    /// Backend reads made, for statistics.
    pub reads: u64,
}

impl<'a> DirectReader<'a> {
    pub fn new(mem: &'a mut dyn PhysMem) -> Self {
        Self { mem, reads: 0 }
    }
}

impl TableReader for DirectReader<'_> {
    fn read_entry(&mut self, table: PhysAddr, index: u16) -> Result<u64, PhysError> {
        let mut b = [0u8; 8];
        self.reads += 1;
        self.mem.read(PhysAddr(table.0 + u64::from(index & 0x1ff) * 8), &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Where a virtual address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The physical address of the byte.
    pub phys: PhysAddr,
    /// The size of the page it lies in.
    pub page_size: PageSize,
    /// The physical address of the start of the page.
    pub page_phys: PhysAddr,
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
    /// Execute-disable at some level.
    pub nx: bool,
}

impl Translation {
    /// Bytes from `phys` to the end of its page.
    pub const fn bytes_to_page_end(&self) -> u64 {
        self.page_size.bytes() - (self.phys.0 & self.page_size.offset_mask())
    }

    /// The same page, for another virtual address inside it.
    pub const fn at(&self, virt: VirtAddr) -> Self {
        let mut t = *self;
        t.phys = PhysAddr(self.page_phys.0 | (virt.0 & self.page_size.offset_mask()));
        t
    }
}

/// One level of a walk: which entry was read and what it held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkStep {
    /// The level of the table read.
    pub level: Level,
    /// The entry's index in that table.
    pub index: u16,
    /// The entry's physical address.
    pub entry_addr: PhysAddr,
    /// The entry as read.
    pub entry: u64,
}

impl WalkStep {
    /// The entry's flags as short names ("P W U A D PS NX"), or "not present".
    pub fn flags(&self) -> String {
        entry_flags(self.level, self.entry)
    }
}

/// The flags of a raw `entry` at `level` as short names, for display.
pub fn entry_flags(level: Level, entry: u64) -> String {
    if entry & bits::PRESENT == 0 {
        return "not present".to_string();
    }
    let leaf_large = matches!(level, Level::Pdpt | Level::Pd) && entry & bits::PAGE_SIZE != 0;
    let leaf = leaf_large || level == Level::Pt;
    let mut names: Vec<String> = Vec::with_capacity(12);
    for (bit, name) in [
        (bits::PRESENT, "P"),
        (bits::WRITABLE, "W"),
        (bits::USER, "U"),
        (bits::PWT, "PWT"),
        (bits::PCD, "PCD"),
        (bits::ACCESSED, "A"),
        (bits::DIRTY, "D"),
    ] {
        if entry & bit != 0 {
            names.push(name.to_string());
        }
    }
    if leaf_large {
        names.push("PS".to_string());
    }
    if leaf && entry & bits::GLOBAL != 0 {
        names.push("G".to_string());
    }
    if (level == Level::Pt && entry & bits::PAT_4K != 0) || (leaf_large && entry & bits::PAT_LARGE != 0) {
        names.push("PAT".to_string());
    }
    if entry & bits::NX != 0 {
        names.push("NX".to_string());
    }
    let pkey = (entry & bits::PROTECTION_KEY) >> 59;
    if leaf && pkey != 0 {
        names.push(format!("PK={pkey}"));
    }
    names.join(" ")
}

/// Translates `virt` under the page tables rooted at `cr3`, reading entries through `reader`.
///
/// At most `config.paging.levels()` entries are read, so a table that points at itself (or any
/// cycle) cannot make the walk loop. When `trace` is given, every entry read is appended to it,
/// including the one that was not present.
pub fn walk<R: TableReader + ?Sized>(
    reader: &mut R,
    config: MmuConfig,
    cr3: u64,
    virt: VirtAddr,
    mut trace: Option<&mut Vec<WalkStep>>,
) -> Result<Translation, TranslateError> {
    let paging = config.paging;
    if !paging.is_canonical(virt) {
        return Err(TranslateError::NotCanonical { virt, paging });
    }
    let addr_mask = config.addr_mask();
    let mut table = config.root_of(cr3);
    let (mut writable, mut user, mut nx) = (true, true, false);
    for &level in paging.table_levels() {
        let index = level.index(virt);
        let entry_addr = PhysAddr(table.0 + u64::from(index) * 8);
        let entry = reader.read_entry(table, index).map_err(|source| TranslateError::TableUnreadable {
            virt,
            level,
            table,
            source,
        })?;
        if let Some(t) = trace.as_deref_mut() {
            t.push(WalkStep { level, index, entry_addr, entry });
        }
        if entry & bits::PRESENT == 0 {
            return Err(TranslateError::NotPresent { virt, level, index, entry_addr, entry });
        }
        writable &= entry & bits::WRITABLE != 0;
        user &= entry & bits::USER != 0;
        nx |= entry & bits::NX != 0;
        // PS means a page only in a PDPTE or PDE; in a PTE bit 7 is PAT, and in a PML4E/PML5E
        // it is reserved (a CPU would fault; we read on through it as a table).
        let leaf = match level {
            Level::Pt => Some(PageSize::Size4K),
            Level::Pdpt | Level::Pd if entry & bits::PAGE_SIZE != 0 => level.leaf_size(),
            _ => None,
        };
        if let Some(page_size) = leaf {
            // For large pages this also drops PAT (bit 12) and the reserved bits below the size.
            let page_phys = PhysAddr(entry & addr_mask & !page_size.offset_mask());
            let phys = PhysAddr(page_phys.0 | (virt.0 & page_size.offset_mask()));
            return Ok(Translation { phys, page_size, page_phys, writable, user, nx });
        }
        table = PhysAddr(entry & addr_mask);
    }
    // `table_levels()` always ends with the PT, whose entries are leaves.
    Err(TranslateError::NoCr3)
}

/// A walk with every step recorded: what `monitor vtop` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalkTrace {
    /// The address walked.
    pub virt: VirtAddr,
    /// The CR3 walked under (flag bits included).
    pub cr3: u64,
    /// The paging depth walked with.
    pub paging: Paging,
    /// Every entry read, from the root down.
    pub steps: Vec<WalkStep>,
    /// Where the walk led.
    pub result: Result<Translation, TranslateError>,
}

/// Walks `virt` under `cr3` and records every entry read.
pub fn walk_trace<R: TableReader + ?Sized>(
    reader: &mut R,
    config: MmuConfig,
    cr3: u64,
    virt: VirtAddr,
) -> WalkTrace {
    let mut steps = Vec::with_capacity(usize::from(config.paging.levels()));
    let result = walk(reader, config, cr3, virt, Some(&mut steps));
    WalkTrace { virt, cr3, paging: config.paging, steps, result }
}

impl fmt::Display for WalkTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.result == Err(TranslateError::NoCr3) && self.steps.is_empty() {
            return write!(f, "virt {}: {}", self.virt, TranslateError::NoCr3);
        }
        writeln!(f, "virt {} under CR3 {:#x} ({} paging)", self.virt, self.cr3, self.paging)?;
        for s in &self.steps {
            let name = format!("{}[{}]", s.level, s.index);
            writeln!(
                f,
                "  {name:<9} entry at phys {:#014x} = {:#018x}  {}",
                s.entry_addr.0,
                s.entry,
                s.flags()
            )?;
        }
        match &self.result {
            Ok(t) => write!(
                f,
                "  {} page at phys {:#x}, {}, {}{}\n  virt {} -> phys {}",
                t.page_size,
                t.page_phys.0,
                if t.writable { "writable" } else { "read-only" },
                if t.user { "user" } else { "kernel" },
                if t.nx { ", no-execute" } else { ", executable" },
                self.virt,
                t.phys
            ),
            Err(e) => write!(f, "  no translation: {e}"),
        }
    }
}
