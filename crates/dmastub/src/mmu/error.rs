//! The layer's errors: why an address did not translate ([`TranslateError`]), and why a
//! memory access failed ([`MemError`]), with the physical error kept as the source so that a
//! device failure is recognisable at the top.

use super::{Level, Paging};
use crate::addr::{PhysAddr, VirtAddr};
use crate::phys::PhysError;

/// A failed memory access: the address did not translate, or the physical read failed. Both
/// name the address. Neither ends a gdb session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemError {
    /// The virtual address did not translate.
    #[error(transparent)]
    Translate(#[from] TranslateError),
    /// The physical read or write failed.
    #[error(transparent)]
    Phys(#[from] PhysError),
}

impl MemError {
    /// Whether the device itself failed (no adapter, timeouts), reading the data or a page
    /// table on the way: reading on would only wait out its timeout again.
    pub fn is_device_failure(&self) -> bool {
        match self {
            MemError::Phys(e) => e.is_device_failure(),
            MemError::Translate(e) => e.is_device_failure(),
        }
    }
}

/// Why a virtual address did not translate. None of these end a gdb session: they become an
/// error reply ("Cannot access memory at address …").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The address is in the non-canonical hole of this paging depth.
    #[error("virt {virt} is not canonical under {paging} paging (bits 63..{top} must all be equal)", top = paging.va_bits() - 1)]
    NotCanonical {
        /// The address.
        virt: VirtAddr,
        /// The paging depth that decides which addresses are canonical.
        paging: Paging,
    },
    /// An entry on the way has its present bit clear.
    #[error(
        "page-table entry at phys {entry_addr} ({level} index {index}) for virt {virt} is not present (entry {entry:#x})"
    )]
    NotPresent {
        /// The address being translated.
        virt: VirtAddr,
        /// The level of the table holding the entry.
        level: Level,
        /// The entry's index in its table.
        index: u16,
        /// The entry's physical address.
        entry_addr: PhysAddr,
        /// The entry as read.
        entry: u64,
    },
    /// A table on the way could not be read.
    #[error("cannot read the {level} table at phys {table} for virt {virt}: {source}")]
    TableUnreadable {
        /// The address being translated.
        virt: VirtAddr,
        /// The level of the table.
        level: Level,
        /// The table's physical address.
        table: PhysAddr,
        /// Why the source could not read it.
        #[source]
        source: PhysError,
    },
    /// A range runs past the top of the address space.
    #[error("virtual range starting at {virt} wraps around the end of the address space")]
    Wraps {
        /// Where the range starts.
        virt: VirtAddr,
    },
    /// Virtual addressing was asked for without a page-table root.
    #[error("no page-table root (CR3) is set, so virtual addresses cannot be translated")]
    NoCr3,
}

impl TranslateError {
    /// The virtual address the error is about, if it names one.
    pub fn virt(&self) -> Option<VirtAddr> {
        match self {
            TranslateError::NotCanonical { virt, .. }
            | TranslateError::NotPresent { virt, .. }
            | TranslateError::TableUnreadable { virt, .. }
            | TranslateError::Wraps { virt } => Some(*virt),
            TranslateError::NoCr3 => None,
        }
    }

    /// Whether a page table could not be read because the device itself failed (no adapter,
    /// timeouts).
    pub fn is_device_failure(&self) -> bool {
        matches!(self, TranslateError::TableUnreadable { source, .. } if source.is_device_failure())
    }
}
