//! The walk over the struct page array: RAM pfns in batches, each batch's virtual range
//! translated to physical runs and read together, every page decided in pfn order with what
//! a free block or compound page decides skipped (as makedumpfile skips it).

use super::layout::PageLayout;
use super::{DumpLevel, PageClass, PageFilterError, PageSet, max_pfn_of, ram_pfns};
use crate::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::mmu::{AddressSpace, TranslateError};
use crate::phys::RamRange;

/// Bytes of struct page read in one batch: 1 MiB, the struct pages of 64 MiB of RAM (16 Ki
/// pages of 64 bytes), in one request burst over a device.
pub const BATCH_BYTES: u64 = 1 << 20;

/// Most pfns a page set may cover: 2^38, 1 PiB of RAM (a 32 GiB bitmap); a source claiming
/// more is not believed.
pub(crate) const MAX_PFNS: u64 = 1 << 38;

/// One batch's struct pages as read: the bytes, and which pfns' struct pages were readable.
struct Batch {
    first: u64,
    bytes: Vec<u8>,
    readable: Vec<bool>,
    /// Pages whose struct page the kernel never mapped: not memory the kernel manages.
    absent: Vec<bool>,
}

impl Batch {
    fn page<'a>(&'a self, layout: &PageLayout, pfn: u64) -> Option<&'a [u8]> {
        let i = pfn.checked_sub(self.first)? as usize;
        if !*self.readable.get(i)? {
            return None;
        }
        let size = layout.page_size as usize;
        self.bytes.get(i * size..(i + 1) * size)
    }
}

/// State of one classification.
struct Walk<'a> {
    layout: &'a PageLayout,
    space: &'a mut AddressSpace,
    cr3: u64,
    set: PageSet,
}

impl Walk<'_> {
    /// Reads the struct pages of `[first, end)`: the batch's virtual range translated page by
    /// page (a translation covers its whole 4 KiB, 2 MiB or 1 GiB page), physically adjacent
    /// pieces merged, and all pieces read in one request. What does not translate or read is
    /// marked unreadable; only the device failing is an error.
    fn read(&mut self, first: u64, end: u64) -> Result<Batch, PageFilterError> {
        let size = self.layout.page_size;
        let n = (end - first) as usize;
        let mut batch = Batch {
            first,
            bytes: vec![0; n * size as usize],
            readable: vec![true; n],
            absent: vec![false; n],
        };
        let start = self.layout.vmemmap.wrapping_add(first.wrapping_mul(size));
        let len = n as u64 * size;
        // (offset in the batch, physical address, length)
        let mut runs: Vec<(u64, u64, u64)> = Vec::new();
        let mut holes: Vec<(u64, u64)> = Vec::new();
        let mut absent: Vec<(u64, u64)> = Vec::new();
        let mut off = 0u64;
        while off < len {
            let va = start.wrapping_add(off);
            match self.space.translate_in(self.cr3, VirtAddr(va)) {
                Ok(t) => {
                    let step = t.bytes_to_page_end().min(len - off);
                    match runs.last_mut() {
                        Some((o, p, l)) if *o + *l == off && p.checked_add(*l) == Some(t.phys.0) => {
                            *l += step
                        }
                        _ => runs.push((off, t.phys.0, step)),
                    }
                    off += step;
                }
                Err(e) if e.is_device_failure() => return Err(PageFilterError::Device(e.into())),
                Err(e) => {
                    let step = (PAGE_SIZE - (va & (PAGE_SIZE - 1))).min(len - off);
                    holes.push((off, step));
                    if matches!(e, TranslateError::NotPresent { .. }) {
                        absent.push((off, step));
                    }
                    off += step;
                }
            }
        }
        let results = {
            let mut reads: Vec<(PhysAddr, &mut [u8])> = Vec::with_capacity(runs.len());
            let mut rest: &mut [u8] = &mut batch.bytes;
            let mut at = 0u64;
            for &(o, p, l) in &runs {
                let (_, tail) = std::mem::take(&mut rest).split_at_mut((o - at) as usize);
                let (piece, tail) = tail.split_at_mut(l as usize);
                reads.push((PhysAddr(p), piece));
                rest = tail;
                at = o + l;
            }
            self.space.read_phys_many(&mut reads)
        };
        for (&(o, p, l), r) in runs.iter().zip(results) {
            self.set.mem_map_bytes += l;
            match r {
                Ok(()) => {
                    let (s, e) = (p & !(PAGE_SIZE - 1), (p + l).div_ceil(PAGE_SIZE) * PAGE_SIZE);
                    match self.set.mem_map_ranges.last_mut() {
                        Some((ls, ll)) if *ls + *ll >= s && *ls <= s => *ll = (*ll).max(e - *ls),
                        _ => self.set.mem_map_ranges.push((s, e - s)),
                    }
                }
                Err(e) if e.is_device_failure() => return Err(PageFilterError::Device(e)),
                Err(e) => {
                    log::debug!("struct pages at phys {p:#x}+{l:#x} unreadable: {e}");
                    holes.push((o, l));
                }
            }
        }
        for (o, l) in holes {
            let (a, b) = (o / size, (o + l).div_ceil(size).min(n as u64));
            batch.readable[a as usize..b as usize].fill(false);
        }
        // Only struct pages wholly inside unmapped vmemmap are absent.
        for (o, l) in absent {
            let (a, b) = (o.div_ceil(size), ((o + l) / size).min(n as u64));
            if a < b {
                batch.absent[a as usize..b as usize].fill(true);
            }
        }
        Ok(batch)
    }
}

/// RAM pfns in `[start, end)`, `runs` being the sorted RAM pfn runs.
fn ram_pages_in(runs: &[(u64, u64)], start: u64, end: u64) -> u64 {
    let i = runs.partition_point(|r| r.1 <= start);
    runs[i..].iter().take_while(|r| r.0 < end).map(|r| r.1.min(end).saturating_sub(r.0.max(start))).sum()
}

/// [`classify`](super::classify) with the layout given: the struct page array at
/// `layout.vmemmap`, read under `cr3`, for the pfns of `ram`. For tests and for callers that
/// found the layout themselves.
pub fn classify_with(
    layout: &PageLayout,
    space: &mut AddressSpace,
    cr3: u64,
    ram: &[RamRange],
    level: DumpLevel,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PageSet, PageFilterError> {
    let per_batch = (BATCH_BYTES / layout.page_size).max(1);
    classify_batched(layout, space, cr3, ram, level, progress, per_batch)
}

/// [`classify_with`] reading `per_batch` struct pages at a time (tests make batches small).
pub(super) fn classify_batched(
    layout: &PageLayout,
    space: &mut AddressSpace,
    cr3: u64,
    ram: &[RamRange],
    level: DumpLevel,
    progress: &mut dyn FnMut(u64, u64),
    per_batch: u64,
) -> Result<PageSet, PageFilterError> {
    let max_pfn = max_pfn_of(ram);
    if max_pfn > MAX_PFNS {
        return Err(PageFilterError::TooMuchRam { max_pfn, limit: MAX_PFNS });
    }
    let runs: Vec<(u64, u64)> = ram_pfns(ram).collect();
    let total: u64 = runs.iter().map(|r| r.1 - r.0).sum();
    let mut walk = Walk { layout, space, cr3, set: PageSet::empty(ram) };
    walk.set.managed_end = 0;
    walk.set.notes = layout.notes.clone();
    for &(a, b) in &runs {
        walk.set.set_range(a, b, true);
    }
    let per_batch = per_batch.max(1);
    // Pfns below this were decided by a free block or compound page already.
    let mut decided_until = 0u64;
    let mut done = 0u64;
    for &(a, b) in &runs {
        let mut pfn = a;
        while pfn < b {
            if pfn < decided_until {
                let e = decided_until.min(b);
                done += e - pfn;
                pfn = e;
                continue;
            }
            let end = b.min((pfn / per_batch + 1) * per_batch);
            // One struct page more, when in the same RAM run: a compound head's order and
            // destructor are in its first tail page.
            let batch = walk.read(pfn, if end < b { end + 1 } else { end })?;
            for p in pfn..end {
                if p < decided_until {
                    continue;
                }
                let absent = batch.absent.get((p - batch.first) as usize) == Some(&true);
                if !absent {
                    walk.set.managed_end = walk.set.managed_end.max(p + 1);
                }
                let Some(page) = batch.page(layout, p) else {
                    if absent {
                        // No struct page: not memory the kernel manages (a QEMU core's BIOS
                        // ROM). makedumpfile leaves these out too: its max_mapnr ends at the
                        // last memory section.
                        walk.set.set_range(p, p + 1, false);
                        walk.set.counts.no_struct_page += 1;
                    } else {
                        walk.set.counts.unreadable += 1;
                    }
                    continue;
                };
                let d = layout.decide(level, p, page, batch.page(layout, p + 1));
                if d.class == PageClass::Kept {
                    continue;
                }
                let e = p.saturating_add(d.pages).min(max_pfn);
                walk.set.managed_end = walk.set.managed_end.max(e);
                walk.set.set_range(p, e, false);
                walk.set.counts.add(d.class, ram_pages_in(&runs, p, e));
                decided_until = e;
            }
            done += end - pfn;
            pfn = end;
            progress(done, total);
        }
    }
    let kept = walk.set.kept_count();
    walk.set.counts.pages[PageClass::Kept.index()] = kept;
    Ok(walk.set)
}
