//! The kdump-compressed (diskdump) writer, laid out as makedumpfile lays it out: the header
//! (block 0), the sub-header with the notes and VMCOREINFO after it, the two bitmaps (RAM pages,
//! pages in the dump), one page descriptor per page in the dump, then the page data.
//!
//! Every position is known before the first page is read (the filter decided which pages the
//! dump holds), so descriptors and data stream out with `pwrite`s and nothing proportional to
//! the dump stays in memory but the bitmaps (one bit per page frame). The header is written
//! first marked incomplete, and marked complete last.

use super::read::{Event, merged, read_runs};
use super::{
    Control, DumpError, DumpOptions, DumpSummary, Machine, Output, PAGE, Progress, describe_failure, is_zero,
};
use crate::linux::PageSet;
use crate::mmu::AddressSpace;
use crate::phys::encode_note;
use crate::phys::kdump::header::{
    DUMP_DH_COMPRESSED_INCOMPLETE, HEADER_VERSION, PAGE_DESC_SIZE, SIGNATURE, SUB_HEADER_SIZE,
};
use crate::phys::kdump::{DiskDumpHeader, PageDesc, SubHeader};
use std::time::{SystemTime, UNIX_EPOCH};

const BLOCK: u64 = PAGE;
/// Page data gathered before one `pwrite`.
const DATA_FLUSH: usize = 1 << 20;
/// Descriptors gathered before one `pwrite`.
const DESC_FLUSH: usize = 4096;
/// Failures kept word for word in the summary.
const FAILURES_KEPT: usize = 8;

/// Where everything goes.
struct Layout {
    max_mapnr: u64,
    sub_hdr_blocks: u64,
    notes: Vec<u8>,
    /// Offset of the VMCOREINFO text inside `notes`, and its length.
    vmcoreinfo: Option<(u64, u64)>,
    bitmap_len: u64,
    bitmap1_at: u64,
    desc_at: u64,
    data_at: u64,
}

impl Layout {
    fn new(machine: &Machine, max_mapnr: u64, kept: u64) -> Result<Self, DumpError> {
        let mut notes = Vec::new();
        for desc in &machine.cpu_notes {
            encode_note(&mut notes, "CORE", 1, desc);
        }
        let vmcoreinfo = machine.vmcoreinfo.as_ref().map(|text| {
            let at = encode_note(&mut notes, "VMCOREINFO", 0, text);
            (at as u64, text.len() as u64)
        });
        let sub_hdr_blocks = (SUB_HEADER_SIZE as u64 + notes.len() as u64).div_ceil(BLOCK);
        let bitmap_len = max_mapnr.div_ceil(8).div_ceil(BLOCK) * BLOCK;
        if (2 * bitmap_len / BLOCK) > u64::from(u32::MAX) {
            return Err(DumpError::TooLarge(format!(
                "{max_mapnr} page frames need more bitmap blocks than a kdump header counts"
            )));
        }
        let bitmap1_at = (1 + sub_hdr_blocks) * BLOCK;
        let desc_at = bitmap1_at + 2 * bitmap_len;
        let data_at = (desc_at + kept * PAGE_DESC_SIZE as u64).div_ceil(BLOCK) * BLOCK;
        Ok(Layout { max_mapnr, sub_hdr_blocks, notes, vmcoreinfo, bitmap_len, bitmap1_at, desc_at, data_at })
    }

    fn header(&self, machine: &Machine, opts: &DumpOptions, complete: bool) -> Vec<u8> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut status = opts.compression.flag();
        if !complete {
            status |= DUMP_DH_COMPRESSED_INCOMPLETE;
        }
        let h = DiskDumpHeader {
            signature: SIGNATURE,
            header_version: HEADER_VERSION,
            utsname: machine.utsname.clone(),
            timestamp_sec: now.as_secs() as i64,
            timestamp_usec: i64::from(now.subsec_micros()),
            status,
            block_size: BLOCK as u32,
            sub_hdr_size: self.sub_hdr_blocks as u32,
            bitmap_blocks: (2 * self.bitmap_len / BLOCK) as u32,
            max_mapnr: self.max_mapnr.min(u64::from(u32::MAX)) as u32,
            total_ram_blocks: 0,
            device_blocks: 0,
            written_blocks: 0,
            current_cpu: machine.current_cpu,
            nr_cpus: machine.cpu_notes.len().max(1) as u32,
        };
        let mut bytes = h.to_bytes();
        bytes.resize(BLOCK as usize, 0);
        bytes
    }

    fn sub_header(&self, machine: &Machine, opts: &DumpOptions) -> Vec<u8> {
        let notes_at = BLOCK + SUB_HEADER_SIZE as u64;
        let (vmci_at, vmci_len) = self.vmcoreinfo.map_or((0, 0), |(at, len)| (notes_at + at, len));
        let s = SubHeader {
            phys_base: machine.phys_base,
            dump_level: u32::from(opts.level.0),
            split: 0,
            start_pfn: 0,
            end_pfn: self.max_mapnr,
            offset_vmcoreinfo: vmci_at,
            size_vmcoreinfo: vmci_len,
            offset_note: if self.notes.is_empty() { 0 } else { notes_at },
            size_note: self.notes.len() as u64,
            offset_eraseinfo: 0,
            size_eraseinfo: 0,
            start_pfn_64: 0,
            end_pfn_64: self.max_mapnr,
            max_mapnr_64: self.max_mapnr,
        };
        let mut bytes = s.to_bytes();
        bytes.extend_from_slice(&self.notes);
        bytes.resize((self.sub_hdr_blocks * BLOCK) as usize, 0);
        bytes
    }
}

/// One bit per page frame, least significant bit first, as both bitmaps are.
struct Bitmap(Vec<u8>);

impl Bitmap {
    fn new(len: u64) -> Self {
        Bitmap(vec![0; len as usize])
    }
    fn set(&mut self, pfn: u64) {
        self.0[(pfn / 8) as usize] |= 1 << (pfn % 8);
    }
    fn clear(&mut self, pfn: u64) {
        self.0[(pfn / 8) as usize] &= !(1 << (pfn % 8));
    }
}

pub(super) fn write(
    space: &mut AddressSpace,
    pages: &PageSet,
    machine: &Machine,
    opts: &DumpOptions,
    file: &std::fs::File,
    control: Control<'_>,
) -> Result<DumpSummary, DumpError> {
    // The bitmaps end where the kernel's memory does (makedumpfile's max_mapnr ends at the last
    // memory section): RAM of the source past it has no struct page and is not in the dump.
    let last_kept = pages.kept_runs().last().map_or(0, |(_, end)| end);
    let max_mapnr = pages.managed_end.max(last_kept).min(pages.max_pfn);
    let total = pages.kept_count();
    let layout = Layout::new(machine, max_mapnr, total)?;
    let mut ram = Bitmap::new(layout.bitmap_len);
    for r in &pages.ram {
        let first = r.start.0.div_ceil(PAGE);
        let end = (r.end() / PAGE).min(max_mapnr);
        for pfn in first..end {
            ram.set(pfn);
        }
    }
    let mut dumped = Bitmap::new(layout.bitmap_len);
    for (start, end) in pages.kept_runs() {
        for pfn in start..end {
            dumped.set(pfn);
        }
    }
    let mut out = Output::new(file);
    out.set_len(0)?;
    // Everything but the pages first, marked incomplete: a dump killed halfway is still a file
    // the readers open and know to be partial.
    out.write_at(&layout.header(machine, opts, false), 0)?;
    out.write_at(&layout.sub_header(machine, opts), BLOCK)?;
    out.write_at(&ram.0, layout.bitmap1_at)?;
    out.write_at(&dumped.0, layout.bitmap1_at + layout.bitmap_len)?;

    let zero_desc = opts.level.excludes_zero().then_some(PageDesc {
        offset: layout.data_at,
        size: BLOCK as u32,
        flags: 0,
        page_flags: 0,
    });
    let mut data_end = layout.data_at;
    if zero_desc.is_some() {
        // makedumpfile's shared zero page: every all-zero page's descriptor points at it.
        out.write_at(&[0u8; BLOCK as usize], data_end)?;
        data_end += BLOCK;
    }
    let mut summary = DumpSummary::default();
    let mut data = Vec::with_capacity(DATA_FLUSH + BLOCK as usize);
    let mut descs = Vec::with_capacity(DESC_FLUSH * PAGE_DESC_SIZE);
    let mut descs_written = 0u64;
    let mut compressed = Vec::with_capacity(2 * BLOCK as usize);
    let mut last_pfn = None;
    let mut progress = Progress { pages_total: total, ..Progress::default() };
    let stop = read_runs(space.mem_mut(), merged(pages.kept_runs(), 0), control.stop, |event| {
        let (pfn, page) = match event {
            Event::Page(pfn, page) => (pfn, page),
            Event::Batch(bytes_read) => {
                progress.bytes_read = bytes_read;
                progress.bytes_written = data_end + data.len() as u64;
                (control.progress)(&progress);
                return Ok(());
            }
        };
        last_pfn = Some(pfn);
        progress.pages_done += 1;
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                dumped.clear(pfn);
                summary.unreadable_pages += 1;
                if summary.unreadable.len() < FAILURES_KEPT {
                    summary.unreadable.push(describe_failure(pfn, e));
                }
                return Ok(());
            }
        };
        summary.pages_written += 1;
        let desc = match zero_desc {
            Some(z) if is_zero(page) => {
                summary.zero_pages += 1;
                z
            }
            _ => {
                let offset = data_end + data.len() as u64;
                let (bytes, flags) = if opts.compression.compress(page, &mut compressed) {
                    (&compressed[..], opts.compression.flag())
                } else {
                    (page, 0)
                };
                data.extend_from_slice(bytes);
                PageDesc { offset, size: bytes.len() as u32, flags, page_flags: 0 }
            }
        };
        desc.write_to(&mut descs);
        if data.len() >= DATA_FLUSH {
            out.write_at(&data, data_end)?;
            data_end += data.len() as u64;
            data.clear();
        }
        if descs.len() >= DESC_FLUSH * PAGE_DESC_SIZE {
            out.write_at(&descs, layout.desc_at + descs_written * PAGE_DESC_SIZE as u64)?;
            descs_written += (descs.len() / PAGE_DESC_SIZE) as u64;
            descs.clear();
        }
        Ok(())
    })?;
    out.write_at(&data, data_end)?;
    data_end += data.len() as u64;
    out.write_at(&descs, layout.desc_at + descs_written * PAGE_DESC_SIZE as u64)?;
    if let Some(stop) = &stop {
        // The pages not reached are not in the file: take them out of the bitmap so that every
        // reader sees them as not dumped, not as pages with a missing descriptor.
        let from = last_pfn.map_or(0, |p| p + 1);
        for (start, end) in pages.kept_runs() {
            for pfn in start.max(from)..end {
                dumped.clear(pfn);
            }
        }
        summary.stopped = Some(stop.reason());
    }
    summary.complete = stop.is_none();
    summary.bytes_read = progress.bytes_read;
    out.write_at(&dumped.0, layout.bitmap1_at + layout.bitmap_len)?;
    out.set_len(data_end)?;
    out.sync()?;
    out.write_at(&layout.header(machine, opts, summary.complete), 0)?;
    out.sync()?;
    summary.file_bytes = data_end;
    Ok(summary)
}
