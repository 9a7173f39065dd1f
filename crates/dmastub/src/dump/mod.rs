//! Writing vmcores: the memory of a machine, filtered like makedumpfile's `-d N`, as a
//! kdump-compressed file or an ELF core that crash, drgn and makedumpfile read.
//!
//! The pages to keep come from the kernel's own `struct page` array ([`crate::linux::classify`]),
//! so no vmlinux is needed. The notes come from what the source carries (an ELF or kdump
//! core's VMCOREINFO and NT_PRSTATUS notes) or, for raw memory, from what discovery found: the
//! kernel's VMCOREINFO (rebuilt when it has none) and one NT_PRSTATUS per CPU with the
//! registers dmastub knows ([`Machine`]).
//!
//! Only the pages kept are read, in large batches (one `read_segments` call of up to
//! [`BATCH_PAGES`] pages, which a DMA source puts on the wire at once). A page the source
//! cannot give is left out of the dump, never written as zeros, and counted in the
//! [`DumpSummary`]. A dump stopped early (the caller's stop flag, a source that stops
//! answering) is still a file the readers open, holding the pages written so far and marked
//! incomplete the way makedumpfile marks it (`DUMP_DH_COMPRESSED_INCOMPLETE` in a kdump header,
//! `DUMP_ELF_INCOMPLETE` in an ELF header's `e_flags`); the flag is set while writing and cleared
//! only once the whole file is written.

mod elf;
pub mod gcore;
mod kdump;
mod machine;
mod read;
#[cfg(test)]
mod tests;

pub use machine::Machine;

use crate::linux::{DumpLevel, PageSet};
use crate::mmu::AddressSpace;
use crate::phys::kdump::Compression;
use crate::phys::{PhysError, RamRange};
use std::fs::File;
use std::sync::atomic::AtomicBool;

/// Pages asked for in one `read_segments` call (1 MiB: large enough to keep a DMA link
/// busy, small enough that the batches in flight stay a few MiB).
pub const BATCH_PAGES: usize = 256;
const PAGE: u64 = crate::addr::PAGE_SIZE;

/// The file format of a dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DumpFormat {
    /// makedumpfile's kdump-compressed (diskdump) format: what kdump writes on distributions.
    #[default]
    Kdump,
    /// An ELF core, as `/proc/vmcore` and QEMU's `dump-guest-memory` give it.
    Elf,
}

impl std::str::FromStr for DumpFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kdump" => Ok(DumpFormat::Kdump),
            "elf" => Ok(DumpFormat::Elf),
            _ => Err(format!("unknown dump format {s:?}: use kdump or elf")),
        }
    }
}

/// How to write a dump.
#[derive(Clone, Copy, Debug)]
pub struct DumpOptions {
    /// The file format.
    pub format: DumpFormat,
    /// How each page is compressed (kdump format only; an ELF core is never compressed).
    pub compression: Compression,
    /// Which pages to leave out: makedumpfile's `-d` bits.
    pub level: DumpLevel,
}

/// How far a dump has got, for a progress bar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Pages handled so far (written, or left out because they could not be read).
    pub pages_done: u64,
    /// Pages the dump will hold when complete.
    pub pages_total: u64,
    /// Bytes read from the source so far.
    pub bytes_read: u64,
    /// Bytes written to the file so far.
    pub bytes_written: u64,
}

/// What a finished (or stopped) dump holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// Pages in the file.
    pub pages_written: u64,
    /// Of those, pages that were all zeros (kept as zeros: a hole in an ELF file, a shared zero
    /// page in a kdump file when the level excludes zero pages).
    pub zero_pages: u64,
    /// Pages the filter kept but the source could not give: left out of the file.
    pub unreadable_pages: u64,
    /// The first few of those failures, one line each.
    pub unreadable: Vec<String>,
    /// Bytes of page data read from the source.
    pub bytes_read: u64,
    /// Size of the file.
    pub file_bytes: u64,
    /// Whether every page meant for the file is in it; `false` when the dump was stopped, and
    /// then the file says so in its header.
    pub complete: bool,
    /// Why it stopped early, when it did.
    pub stopped: Option<String>,
}

/// Why a dump could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// Writing the file failed.
    #[error("writing the dump at offset {offset:#x}: {source}")]
    Write {
        /// Where in the file.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The dump would not fit the format's limits.
    #[error("{0}")]
    TooLarge(String),
    /// The source cannot tell RAM from the rest of the address space, and neither can the kernel.
    #[error(
        "{source_kind} cannot tell RAM from holes and device memory, and the kernel's RAM map is unknown: {why}"
    )]
    NoRamMap {
        /// What the source is.
        source_kind: crate::phys::SourceKind,
        /// Why the kernel's map could not be read.
        why: String,
    },
}

/// The RAM a dump covers, and where that came from: the source's own ranges, or, for a source
/// that reaches the whole physical address space and cannot tell RAM from holes and device
/// memory (DMA), the RAM map of the kernel in it.
pub fn dump_ram(
    space: &mut AddressSpace,
    kernel: Option<&crate::linux::Kernel>,
) -> Result<(Vec<RamRange>, String), DumpError> {
    let kind = space.mem().kind();
    let (ram, whence) = if kind != crate::phys::SourceKind::NetTlp {
        (space.mem().ram().to_vec(), format!("RAM: the {kind}'s ranges"))
    } else {
        let Some(kernel) = kernel else {
            return Err(DumpError::NoRamMap { source_kind: kind, why: "no kernel was found".to_string() });
        };
        let ram = crate::linux::ram_map(kernel, space)
            .map_err(|e| DumpError::NoRamMap { source_kind: kind, why: e.to_string() })?;
        let bytes = ram.iter().map(|r| r.len).sum();
        let whence = format!(
            "RAM: the kernel's E820 map ({} in {} ranges)",
            crate::phys::human_bytes(bytes),
            ram.len()
        );
        (ram, whence)
    };
    // The ranges come from a file's headers or the target's memory: the bitmaps of a dump are
    // one bit per page frame up to the last one, so a range claiming RAM near 2^52 must not
    // reach an allocation.
    let end = ram.iter().map(|r| r.end()).max().unwrap_or(0);
    if end.div_ceil(PAGE) > crate::linux::pages::MAX_PFNS {
        return Err(DumpError::TooLarge(format!(
            "{whence} reach physical {end:#x}: more page frames than a dump covers ({:#x})",
            crate::linux::pages::MAX_PFNS
        )));
    }
    Ok((ram, whence))
}

/// How the caller follows a dump and stops it.
pub struct Control<'a> {
    /// Called after every batch.
    pub progress: &'a mut dyn FnMut(&Progress),
    /// Set (from a signal handler, another thread) to stop: the file is finished as a partial
    /// dump marked incomplete.
    pub stop: &'a AtomicBool,
}

/// Writes the pages `pages` keeps of the memory behind `space` into `out` (which should be
/// empty), with `machine`'s notes, as `opts` says.
pub fn write_dump(
    space: &mut AddressSpace,
    pages: &PageSet,
    machine: &Machine,
    opts: &DumpOptions,
    out: &File,
    control: Control<'_>,
) -> Result<DumpSummary, DumpError> {
    match opts.format {
        DumpFormat::Kdump => kdump::write(space, pages, machine, opts, out, control),
        DumpFormat::Elf => elf::write(space, pages, machine, opts, out, control),
    }
}

/// Bytes written so far with `pwrite`, for progress and errors.
struct Output<'a> {
    file: &'a File,
    written: u64,
}

impl<'a> Output<'a> {
    fn new(file: &'a File) -> Self {
        Self { file, written: 0 }
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> Result<(), DumpError> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, offset).map_err(|source| DumpError::Write { offset, source })?;
        self.written += data.len() as u64;
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> Result<(), DumpError> {
        self.file.set_len(len).map_err(|source| DumpError::Write { offset: len, source })
    }

    fn sync(&mut self) -> Result<(), DumpError> {
        self.file.sync_data().map_err(|source| DumpError::Write { offset: 0, source })
    }
}

/// Whether a page is all zeros (OR-folded in blocks the compiler vectorizes, stopping at the
/// first block with a set bit).
fn is_zero(page: &[u8]) -> bool {
    page.chunks(64).all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

/// The failure of a page read, as one line for the summary.
fn describe_failure(pfn: u64, e: &PhysError) -> String {
    format!("page {:#x}: {e}", pfn * PAGE)
}
