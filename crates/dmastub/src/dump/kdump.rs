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
/// Threads compressing a batch at most.
const MAX_WORKERS: usize = 8;

/// The pages of one chunk as they go into the file: for each page, `None` when it is all zeros
/// and the level leaves zero pages out (the shared zero page's descriptor), else its length in
/// `bytes` and its flags; `bytes` holds them back to back (compressed, or raw when compressing
/// does not make a page smaller).
#[derive(Default)]
struct Packed {
    pages: Vec<Option<(usize, u32)>>,
    bytes: Vec<u8>,
}

/// Compresses each page of `pages` (back to back), split over up to `workers` threads; the
/// chunks come back in order.
fn pack(pages: &[u8], opts: &DumpOptions, workers: usize) -> Vec<Packed> {
    let count = pages.len() / BLOCK as usize;
    let per_worker = count.div_ceil(workers.max(1)).max(1) * BLOCK as usize;
    let mut chunks = pages.chunks(per_worker);
    let Some(first) = chunks.next() else { return Vec::new() };
    std::thread::scope(|scope| {
        let others: Vec<_> = chunks.map(|chunk| scope.spawn(move || pack_chunk(chunk, opts))).collect();
        let mut all = vec![pack_chunk(first, opts)];
        all.extend(others.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))));
        all
    })
}

fn pack_chunk(pages: &[u8], opts: &DumpOptions) -> Packed {
    let mut out = Packed { pages: Vec::with_capacity(pages.len() / BLOCK as usize), bytes: Vec::new() };
    let mut compressed = Vec::with_capacity(2 * BLOCK as usize);
    for page in pages.chunks_exact(BLOCK as usize) {
        if opts.level.excludes_zero() && is_zero(page) {
            out.pages.push(None);
        } else if opts.compression.compress(page, &mut compressed) {
            out.bytes.extend_from_slice(&compressed);
            out.pages.push(Some((compressed.len(), opts.compression.flag())));
        } else {
            out.bytes.extend_from_slice(page);
            out.pages.push(Some((page.len(), 0)));
        }
    }
    out
}

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
        let (notes, vmcoreinfo) = machine.encode_notes();
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

/// The page data and descriptors as they stream out.
struct Stream<'a> {
    out: Output<'a>,
    zero_desc: PageDesc,
    desc_at: u64,
    /// Page data not yet written, to go at `data_end`.
    data: Vec<u8>,
    data_end: u64,
    /// Descriptors not yet written, after the `descs_written` already written.
    descs: Vec<u8>,
    descs_written: u64,
    /// Pages read and not yet compressed, back to back.
    pending: Vec<u8>,
    workers: usize,
    zero_pages: u64,
}

impl Stream<'_> {
    /// Compresses the pending pages on every core and queues them in pfn order; writes what is
    /// queued once there is enough of it, or everything when `last`.
    fn pack_pending(&mut self, opts: &DumpOptions, last: bool) -> Result<(), DumpError> {
        for chunk in pack(&self.pending, opts, self.workers) {
            let mut at = 0;
            for page in chunk.pages {
                let desc = match page {
                    Some((len, flags)) => {
                        let offset = self.data_end + self.data.len() as u64;
                        self.data.extend_from_slice(&chunk.bytes[at..at + len]);
                        at += len;
                        PageDesc { offset, size: len as u32, flags, page_flags: 0 }
                    }
                    None => {
                        self.zero_pages += 1;
                        self.zero_desc
                    }
                };
                desc.write_to(&mut self.descs);
            }
        }
        self.pending.clear();
        if last || self.data.len() >= DATA_FLUSH {
            self.out.write_at(&self.data, self.data_end)?;
            self.data_end += self.data.len() as u64;
            self.data.clear();
        }
        if last || self.descs.len() >= DESC_FLUSH * PAGE_DESC_SIZE {
            self.out.write_at(&self.descs, self.desc_at + self.descs_written * PAGE_DESC_SIZE as u64)?;
            self.descs_written += (self.descs.len() / PAGE_DESC_SIZE) as u64;
            self.descs.clear();
        }
        Ok(())
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

    let zero_desc = PageDesc { offset: layout.data_at, size: BLOCK as u32, flags: 0, page_flags: 0 };
    let mut data_end = layout.data_at;
    if opts.level.excludes_zero() {
        // makedumpfile's shared zero page: every all-zero page's descriptor points at it.
        out.write_at(&[0u8; BLOCK as usize], data_end)?;
        data_end += BLOCK;
    }
    let mut stream = Stream {
        out,
        zero_desc,
        desc_at: layout.desc_at,
        data: Vec::with_capacity(DATA_FLUSH + BLOCK as usize),
        data_end,
        descs: Vec::with_capacity(DESC_FLUSH * PAGE_DESC_SIZE),
        descs_written: 0,
        pending: Vec::with_capacity(super::BATCH_PAGES * BLOCK as usize),
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_WORKERS),
        zero_pages: 0,
    };
    let mut summary = DumpSummary::default();
    let mut last_pfn = None;
    let mut progress = Progress { pages_total: total, ..Progress::default() };
    let stop = read_runs(space.mem_mut(), merged(pages.kept_runs(), 0), control.stop, |event| {
        let (pfn, page) = match event {
            Event::Page(pfn, page) => (pfn, page),
            Event::Batch(bytes_read) => {
                stream.pack_pending(opts, false)?;
                progress.bytes_read = bytes_read;
                progress.bytes_written = stream.data_end + stream.data.len() as u64;
                (control.progress)(&progress);
                return Ok(());
            }
        };
        last_pfn = Some(pfn);
        progress.pages_done += 1;
        match page {
            Ok(p) => {
                summary.pages_written += 1;
                stream.pending.extend_from_slice(p);
            }
            Err(e) => {
                dumped.clear(pfn);
                summary.unreadable_pages += 1;
                if summary.unreadable.len() < FAILURES_KEPT {
                    summary.unreadable.push(describe_failure(pfn, e));
                }
            }
        }
        Ok(())
    })?;
    // A dump stopped inside a batch still has that batch's pages read before the stop.
    stream.pack_pending(opts, true)?;
    summary.zero_pages = stream.zero_pages;
    let (mut out, data_end) = (stream.out, stream.data_end);
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
