//! Where the machine's RAM is, as its kernel keeps it: the E820 table (`e820_table`), which
//! x86 kernels keep after boot for kexec. A DMA source can reach the whole physical address
//! space and cannot tell RAM from holes and device memory by itself; a dump over it reads the
//! RAM the kernel knows, and nothing else.

use super::{Kernel, Memory, Symbols, View};
use crate::addr::{PAGE_SIZE, PhysAddr};
use crate::mmu::AddressSpace;
use crate::phys::RamRange;

/// `E820_TYPE_RAM`.
const E820_RAM: u32 = 1;
/// `E820_TYPE_RESERVED_KERN`: RAM the kernel set aside for boot data; "System RAM" too.
const E820_RESERVED_KERN: u32 = 128;
/// More entries than any kernel's `E820_MAX_ENTRIES` (128 + 3 * MAX_NUMNODES).
const MAX_ENTRIES: u64 = 8192;
/// `struct e820_entry` is packed: addr, size, type.
const PACKED_ENTRY: u64 = 20;

/// Why the kernel's RAM map could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RamMapError {
    /// The kernel has no `e820_table` symbol (not x86, or its symbols were not found).
    #[error("the kernel has no e820_table symbol: its RAM map is unknown")]
    NoTable,
    /// Reading the table failed.
    #[error("reading the kernel's E820 table at {at:#x}: {why}")]
    Unreadable {
        /// The address read.
        at: u64,
        /// What failed.
        why: String,
    },
    /// The table makes no sense.
    #[error("the kernel's E820 table at {at:#x} {why}")]
    Implausible {
        /// The table's address.
        at: u64,
        /// What is wrong.
        why: String,
    },
}

/// The RAM ranges of the kernel's E820 table, page-aligned inward, sorted and merged.
pub fn ram_map(kernel: &Kernel, space: &mut AddressSpace) -> Result<Vec<RamRange>, RamMapError> {
    let ptr = kernel.symbols.address("e820_table").ok_or(RamMapError::NoTable)?;
    let t = kernel.types.as_deref();
    let count_at = t.and_then(|t| t.member("e820_table", "nr_entries")).map_or(0, |m| m.offset);
    let entries_at = t.and_then(|t| t.member("e820_table", "entries")).map_or(4, |m| m.offset);
    let entry = t.and_then(|t| t.size_of("e820_entry")).unwrap_or(PACKED_ENTRY);
    let type_at = t.and_then(|t| t.member("e820_entry", "type")).map_or(16, |m| m.offset);
    if !(PACKED_ENTRY..=64).contains(&entry) || type_at + 4 > entry {
        return Err(RamMapError::Implausible { at: ptr, why: format!("has entries of {entry} bytes") });
    }
    let mut view = View::new(space, kernel.cr3.value);
    let unreadable = |at: u64, e: crate::mmu::MemError| RamMapError::Unreadable { at, why: e.to_string() };
    let table = view.read_u64(ptr).map_err(|e| unreadable(ptr, e))?;
    let count = u64::from(view.read_u32(table + count_at).map_err(|e| unreadable(table, e))?);
    if count == 0 || count > MAX_ENTRIES {
        return Err(RamMapError::Implausible { at: table, why: format!("says it has {count} entries") });
    }
    let mut raw = vec![0u8; (count * entry) as usize];
    view.read(table + entries_at, &mut raw).map_err(|e| unreadable(table + entries_at, e))?;
    let mut ram: Vec<(u64, u64)> = raw
        .chunks_exact(entry as usize)
        .filter_map(|e| {
            let word = |o: usize| u64::from_le_bytes(e[o..o + 8].try_into().unwrap_or_default());
            let kind = u32::from_le_bytes(e[type_at as usize..][..4].try_into().unwrap_or_default());
            let (start, size) = (word(0), word(8));
            let end = start.checked_add(size)?;
            ((kind == E820_RAM || kind == E820_RESERVED_KERN) && size > 0).then_some((start, end))
        })
        .map(|(s, e)| (s.div_ceil(PAGE_SIZE) * PAGE_SIZE, e / PAGE_SIZE * PAGE_SIZE))
        .filter(|(s, e)| s < e)
        .collect();
    ram.sort_unstable();
    let mut merged: Vec<RamRange> = Vec::new();
    for (start, end) in ram {
        match merged.last_mut() {
            Some(last) if start <= last.end() => last.len = last.len.max(end - last.start.0),
            _ => merged.push(RamRange { start: PhysAddr(start), len: end - start }),
        }
    }
    if merged.is_empty() {
        return Err(RamMapError::Implausible { at: table, why: "lists no RAM".to_string() });
    }
    Ok(merged)
}
