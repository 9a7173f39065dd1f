//! The ELF core writer: an ELF64 `ET_CORE` file as QEMU's `dump-guest-memory` writes it (one
//! PT_NOTE with a CORE NT_PRSTATUS per CPU and the VMCOREINFO note, then one PT_LOAD per run of
//! pages at its physical address, `p_vaddr` 0), which crash, drgn and makedumpfile read.
//!
//! Pages are written uncompressed at a fixed place, so a dump of every page is byte for byte the
//! memory; all-zero pages are left as holes of a sparse file (they read back as the zeros they
//! are, and take no disk). Runs are closed where the filter leaves pages out, so nothing that
//! was left out reads as zeros. The number of runs is kept below [`MAX_LOADS`] by also writing
//! the pages of the shortest gaps (real memory, never made-up bytes).

use super::read::{Event, merged, read_runs};
use super::{
    Control, DumpError, DumpOptions, DumpSummary, Machine, Output, PAGE, Progress, describe_failure, is_zero,
};
use crate::linux::PageSet;
use crate::mmu::AddressSpace;
use crate::phys::elf::{
    EHDR_SIZE, ELFCLASS64, ELFDATA2LSB, EM_X86_64, ET_CORE, MAGIC, PHDR_SIZE, PT_LOAD, PT_NOTE,
};

/// PT_LOADs planned at most: `e_phnum` is 16 bits, and readers walk every header.
const MAX_LOADS: u64 = 32 * 1024;
/// Extra program headers for runs split by pages the source could not give.
const SPARE_LOADS: u64 = 1024;
/// makedumpfile's mark of a partial ELF dump, in `e_flags`.
const DUMP_ELF_INCOMPLETE: u32 = 0x1;
const FAILURES_KEPT: usize = 8;

/// One PT_LOAD: `len` bytes of physical `paddr` at file offset `offset`.
#[derive(Clone, Copy, Debug)]
struct Load {
    paddr: u64,
    offset: u64,
    len: u64,
}

/// An x86-64 ELF core's file header: its program headers at `phoff`, `phnum` of them.
pub(super) fn core_header(phoff: u64, phnum: u16, flags: u32) -> Vec<u8> {
    let mut v = vec![0u8; EHDR_SIZE];
    v[..4].copy_from_slice(MAGIC);
    v[4] = ELFCLASS64;
    v[5] = ELFDATA2LSB;
    v[6] = 1; // EV_CURRENT
    v[16..18].copy_from_slice(&ET_CORE.to_le_bytes());
    v[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    v[20..24].copy_from_slice(&1u32.to_le_bytes());
    v[32..40].copy_from_slice(&phoff.to_le_bytes());
    v[48..52].copy_from_slice(&flags.to_le_bytes());
    v[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    v[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    v[56..58].copy_from_slice(&phnum.to_le_bytes());
    v
}

fn ehdr(phnum: u16, complete: bool) -> Vec<u8> {
    core_header(EHDR_SIZE as u64, phnum, if complete { 0 } else { DUMP_ELF_INCOMPLETE })
}

fn phdr(out: &mut Vec<u8>, p_type: u32, offset: u64, paddr: u64, len: u64) {
    out.extend_from_slice(&p_type.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // p_flags
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // p_vaddr, as QEMU writes it
    out.extend_from_slice(&paddr.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes()); // p_filesz
    out.extend_from_slice(&len.to_le_bytes()); // p_memsz
    out.extend_from_slice(&0u64.to_le_bytes()); // p_align
}

/// The shortest gap to fill so that at most [`MAX_LOADS`] runs remain.
fn gap_to_fill(pages: &PageSet) -> u64 {
    let mut fill = 0;
    while merged(pages.kept_runs(), fill).count() as u64 > MAX_LOADS {
        fill = fill * 2 + 1;
    }
    fill
}

pub(super) fn write(
    space: &mut AddressSpace,
    pages: &PageSet,
    machine: &Machine,
    _opts: &DumpOptions,
    file: &std::fs::File,
    control: Control<'_>,
) -> Result<DumpSummary, DumpError> {
    let fill = gap_to_fill(pages);
    let planned = merged(pages.kept_runs(), fill).count() as u64;
    let total: u64 = merged(pages.kept_runs(), fill).map(|(_, n)| n).sum();
    let max_loads = planned + SPARE_LOADS;
    let (notes, _) = machine.encode_notes();
    let notes_at = EHDR_SIZE as u64 + (1 + max_loads) * PHDR_SIZE;
    let data_at = (notes_at + notes.len() as u64).div_ceil(PAGE) * PAGE;

    let mut out = Output::new(file);
    out.set_len(0)?;
    let write_headers = |out: &mut Output, loads: &[Load], complete: bool| -> Result<(), DumpError> {
        let mut h = ehdr((1 + loads.len()) as u16, complete);
        phdr(&mut h, PT_NOTE, notes_at, 0, notes.len() as u64);
        for l in loads {
            phdr(&mut h, PT_LOAD, l.offset, l.paddr, l.len);
        }
        out.write_at(&h, 0)
    };
    write_headers(&mut out, &[], false)?;
    out.write_at(&notes, notes_at)?;

    let mut loads: Vec<Load> = Vec::new();
    let mut summary = DumpSummary::default();
    let mut cursor = data_at;
    let mut pending: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut pending_at = cursor;
    let mut too_many = false;
    let mut progress = Progress { pages_total: total, ..Progress::default() };
    let stop = read_runs(space.mem_mut(), merged(pages.kept_runs(), fill), control.stop, |event| {
        let (pfn, page) = match event {
            Event::Page(pfn, page) => (pfn, page),
            Event::Batch(bytes_read) => {
                progress.bytes_read = bytes_read;
                progress.bytes_written = cursor - data_at;
                (control.progress)(&progress);
                return Ok(());
            }
        };
        if too_many {
            return Ok(());
        }
        progress.pages_done += 1;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                summary.unreadable_pages += 1;
                if summary.unreadable.len() < FAILURES_KEPT {
                    summary.unreadable.push(describe_failure(pfn, e));
                }
                return Ok(());
            }
        };
        let paddr = pfn * PAGE;
        let full = loads.len() as u64 >= max_loads;
        match loads.last_mut() {
            Some(l) if l.paddr + l.len == paddr && l.offset + l.len == cursor => l.len += PAGE,
            _ if full => {
                // Nothing more fits: end the dump here, as a partial one.
                too_many = true;
                control.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            _ => loads.push(Load { paddr, offset: cursor, len: PAGE }),
        }
        summary.pages_written += 1;
        if is_zero(page) {
            // A hole: flush what is pending before it so the file stays in order.
            summary.zero_pages += 1;
            if !pending.is_empty() {
                out.write_at(&pending, pending_at)?;
                pending.clear();
            }
            cursor += PAGE;
            pending_at = cursor;
            return Ok(());
        }
        pending.extend_from_slice(page);
        cursor += PAGE;
        if pending.len() >= 1 << 20 {
            out.write_at(&pending, pending_at)?;
            pending.clear();
            pending_at = cursor;
        }
        Ok(())
    })?;
    if !pending.is_empty() {
        out.write_at(&pending, pending_at)?;
    }
    summary.stopped = if too_many {
        Some(format!(
            "more than {SPARE_LOADS} runs were split by unreadable pages: the ELF program header table is full"
        ))
    } else {
        stop.as_ref().map(|s| s.reason())
    };
    summary.complete = summary.stopped.is_none();
    summary.bytes_read = progress.bytes_read;
    out.set_len(cursor)?;
    out.sync()?;
    write_headers(&mut out, &loads, summary.complete)?;
    out.sync()?;
    summary.file_bytes = cursor;
    Ok(summary)
}
