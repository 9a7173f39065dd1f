//! The kernel's own symbol table (`/proc/kallsyms`), read from its compressed tables in memory.
//!
//! `scripts/kallsyms` emits, in `.rodata`, an address table (`kallsyms_offsets`, or absolute
//! `kallsyms_addresses` on old or unusual builds), `kallsyms_relative_base`, `kallsyms_num_syms`,
//! the token-compressed `kallsyms_names`, `kallsyms_markers` (one name offset per 256 symbols),
//! `kallsyms_token_table` and `kallsyms_token_index`. Before 6.4 they come in that order; from 6.4
//! the address table moved after the token index. No symbol says where they are (VMCOREINFO names
//! them only on recent kernels), so [`find`] samples the kernel's read-only data for the one shape
//! no other data has — a long, sorted run of 32-bit offsets — and then checks every table against
//! the others before believing any of it.

use super::name_index::NameIndex;
use super::readahead::ReadAhead;
use super::{Memory, Symbols};
use crate::bytes::LeBytes;
use crate::mmu::MemError;

mod search;
#[cfg(test)]
mod tests;

pub(crate) use search::find;

/// Sampling stride through `.rodata`: smaller than any kernel's address table (≥ 20k symbols).
pub(crate) const SAMPLE_STRIDE: u64 = 64 * 1024;
/// Largest symbol count believed (a kernel with everything built in has about 250k).
const MAX_SYMBOLS: u64 = 2_000_000;
/// Largest `kallsyms_names` table believed.
const MAX_NAMES_BYTES: u64 = 64 << 20;
/// Widest gap between neighbouring symbols believed (the kernel image is smaller).
const MAX_GAP: u64 = 256 << 20;
/// Bytes read per step while following a table.
const CHUNK: u64 = 64 * 1024;

/// Why no kallsyms tables were found, or the ones found were not believed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KallsymsError {
    /// No sampled page starts a believable address table.
    #[error(
        "no kallsyms address table in {start:#x}..{end:#x} ({sampled} pages sampled); give --system-map or --vmlinux"
    )]
    NotFound {
        /// Start of the range searched.
        start: u64,
        /// End of the range searched.
        end: u64,
        /// Pages sampled.
        sampled: u64,
    },
    /// A candidate's tables disagree with each other.
    #[error("kallsyms tables near {at:#x} are inconsistent: {why}")]
    Inconsistent {
        /// Where.
        at: u64,
        /// What is wrong.
        why: String,
    },
    /// Memory the tables need could not be read.
    #[error("reading kallsyms at {at:#x}: {err}")]
    Read {
        /// The address.
        at: u64,
        /// Why it could not be.
        #[source]
        err: MemError,
    },
}

impl KallsymsError {
    /// Whether the device itself failed (see [`MemError::is_device_failure`]).
    pub fn is_device_failure(&self) -> bool {
        matches!(self, KallsymsError::Read { err, .. } if err.is_device_failure())
    }
}

fn inconsistent(at: u64, why: impl Into<String>) -> KallsymsError {
    KallsymsError::Inconsistent { at, why: why.into() }
}

/// How the address table encodes addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    /// `kallsyms_offsets`: `relative_base + offset`.
    Relative,
    /// `kallsyms_offsets` with `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` (x86-64 before 6.15): a
    /// non-negative offset is an absolute per-CPU address, a negative one `relative_base - 1 - off`.
    AbsolutePercpu,
    /// `kallsyms_addresses`: 64-bit absolute addresses.
    Absolute,
}

impl Encoding {
    fn width(self) -> u64 {
        if self == Encoding::Absolute { 8 } else { 4 }
    }

    /// A key that grows with the symbol's address, for checking that a run is sorted.
    fn order_key(self, raw: u64) -> u64 {
        match self {
            Encoding::Relative | Encoding::Absolute => raw,
            Encoding::AbsolutePercpu => {
                let off = raw as u32 as i32;
                if off >= 0 { off as u64 } else { (1 << 32) + (-1 - off as i64) as u64 }
            }
        }
    }

    /// Could `next` follow `prev` in the table? Sorted, and no gap wider than a kernel image,
    /// except the one step from the per-CPU symbols (absolute) to the image (relative).
    fn in_order(self, prev: u64, next: u64) -> bool {
        self.in_order_keys(self.order_key(prev), self.order_key(next))
    }

    fn in_order_keys(self, a: u64, b: u64) -> bool {
        b >= a && (b - a <= MAX_GAP || (self == Encoding::AbsolutePercpu && a < 1 << 32 && b >= 1 << 32))
    }

    fn address(self, raw: u64, base: u64) -> u64 {
        match self {
            Encoding::Relative => base.wrapping_add(raw as u32 as u64),
            Encoding::Absolute => raw,
            Encoding::AbsolutePercpu => {
                let off = raw as u32 as i32;
                if off >= 0 { off as u64 } else { base.wrapping_sub(1).wrapping_sub(off as i64 as u64) }
            }
        }
    }
}

/// The kernel's symbols, with where they were found.
///
/// Names live in one string, entries are sorted by address, and an open-addressing table of
/// entry indices answers lookups by name: a kernel has 100k+ symbols, and a map of owned strings
/// (or sorting them by name) cost more time than finding and decoding the tables.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    arena: String,
    /// (address, name start, name length), sorted by address.
    entries: Vec<(u64, u32, u32)>,
    /// Indices into `entries` by name; a name's first entry by address wins, as with
    /// `kallsyms_lookup_name()`.
    by_name: NameIndex,
    /// Address of the table that located the rest (`kallsyms_offsets` or `kallsyms_addresses`).
    pub table_addr: u64,
    /// Bytes of kernel memory read to find and decode the tables.
    pub bytes_read: u64,
}

impl Kallsyms {
    /// How many symbols there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn name(&self, i: usize) -> &str {
        let (_, start, len) = self.entries[i];
        &self.arena[start as usize..(start + len) as usize]
    }

    /// Index of the symbol at or below `addr`.
    fn at_or_below(&self, addr: u64) -> Option<usize> {
        self.entries.partition_point(|e| e.0 <= addr).checked_sub(1)
    }

    /// The symbol at or below `addr`, and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.at_or_below(addr)?;
        Some((self.name(i), addr - self.entries[i].0))
    }

    /// The symbol at or below `addr`, the offset into it, and its size as kallsyms tells it:
    /// the distance to the next symbol at a higher address (`None` for the last one).
    pub fn lookup_sized(&self, addr: u64) -> Option<(&str, u64, Option<u64>)> {
        let i = self.at_or_below(addr)?;
        let start = self.entries[i].0;
        let next = self.entries.get(i + 1..)?.iter().find(|e| e.0 > start).map(|e| e.0 - start);
        Some((self.name(i), addr - start, next))
    }

    /// Every (name, address), in address order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        (0..self.entries.len()).map(|i| (self.name(i), self.entries[i].0))
    }

    /// Builds a table from names already in `arena` and their spans.
    fn from_arena(arena: String, mut entries: Vec<(u64, u32, u32)>) -> Self {
        entries.sort_by_key(|e| e.0);
        let mut k = Self { arena, entries, by_name: NameIndex::default(), table_addr: 0, bytes_read: 0 };
        // Entries are sorted by address: the first of a name is the lowest.
        k.by_name = NameIndex::build(k.entries.len(), |i| Some(k.name(i as usize)), |_, _| false);
        k
    }

    /// Builds a table from (name, address) pairs, e.g. from System.map or a vmlinux.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut arena = String::new();
        let mut entries = Vec::new();
        for (n, a) in pairs {
            entries.push((a, arena.len() as u32, n.len() as u32));
            arena.push_str(&n);
        }
        Self::from_arena(arena, entries)
    }

    /// The same symbols moved by a KASLR slide (for link addresses from a file). Absolute
    /// symbols below the kernel map (per-CPU offsets) stay where they are.
    pub fn slid(mut self, slide: u64) -> Self {
        for e in &mut self.entries {
            if e.0 >= super::vmlayout::START_KERNEL_MAP {
                e.0 = e.0.wrapping_add(slide);
            }
        }
        let (arena, entries) = (std::mem::take(&mut self.arena), std::mem::take(&mut self.entries));
        Self::from_arena(arena, entries)
    }
}

impl Symbols for Kallsyms {
    fn address(&self, name: &str) -> Option<u64> {
        let i = self.by_name.get(name, |i| Some(self.name(i as usize)))?;
        Some(self.entries[i as usize].0)
    }
}
