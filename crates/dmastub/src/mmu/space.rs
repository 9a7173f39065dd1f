//! [`AddressSpace`]: what the gdb layer reads and writes through.

use super::cache::{TABLE_BYTES, TableCache, TranslationCache};
use super::error::{MemError, TranslateError};
use super::stats::MmuStats;
use super::walk::{DirectReader, TableReader, Translation, WalkTrace, walk, walk_trace};
use super::{MmuConfig, Paging};
use crate::addr::{PAGE_SIZE, PhysAddr, VirtAddr};
use crate::phys::{BufferMem, Lockstep, PhysError, PhysMem, Segment, SourceKind, find_range};
use std::time::{Duration, Instant};

/// An idle gap longer than this ends a burst of requests: on a volatile source everything
/// cached is dropped, since the target may have run meanwhile.
pub const IDLE_FLUSH: Duration = Duration::from_millis(50);

/// Even a burst that never pauses does not keep a volatile source's tables longer than this.
pub const MAX_BURST: Duration = Duration::from_secs(1);

/// Physical memory seen through an x86-64 MMU: reads and writes of physical memory, and of
/// virtual memory in the address space a caller names by its CR3 (the page-table root).
///
/// Which addresses a debugger means (physical or virtual, under which CR3) is the debugger's
/// state, not this type's: see [`crate::gdb::SessionState`].
///
/// Table pages and translations are cached. For a static source (a dump) the caches last until
/// [`AddressSpace::flush`]; for a volatile one (live RAM, DMA) they are also dropped whenever
/// requests pause for more than [`IDLE_FLUSH`], so a stale mapping never outlives a burst.
pub struct AddressSpace {
    mem: Box<dyn PhysMem>,
    config: MmuConfig,
    tables: TableCache,
    tlb: TranslationCache,
    stats: MmuStats,
    /// End of the previous request (volatile sources only).
    last_access: Option<Instant>,
    /// Start of the current burst (volatile sources only).
    burst_start: Option<Instant>,
    /// Counts flushes: what a caller keeps beside the caches is fresh while this is unchanged.
    generation: u64,
    /// The device failure that ended a batch's table reads, while the batch's walks go on:
    /// a table they still miss is not asked for again (each would wait out the timeout).
    batch_device_failure: Option<PhysError>,
}

/// The walk's view of memory on the hot path: table pages through the cache.
struct CachedTables<'a> {
    mem: &'a mut dyn PhysMem,
    cache: &'a mut TableCache,
    stats: &'a mut MmuStats,
    /// When set, a table not cached fails at once with this device failure.
    device_failed: Option<&'a PhysError>,
}

impl TableReader for CachedTables<'_> {
    fn read_entry(&mut self, table: PhysAddr, index: u16) -> Result<u64, PhysError> {
        if let Some(e) = self.cache.entry(table, index) {
            self.stats.table_cache_hits += 1;
            return Ok(e);
        }
        if let Some(e) = self.device_failed {
            return Err(e.not_sent_after(table, "the batch's page-table reads"));
        }
        self.stats.table_reads += 1;
        if find_range(self.mem.ram(), table, TABLE_BYTES as u64).is_some() {
            let mem = &mut *self.mem;
            let page = self.cache.fill(table, |page| mem.read(table, page))?;
            return Ok(super::cache::entry_of(page, index));
        }
        // The page is not wholly RAM (or the source does not say): read just the entry, and
        // let the source tell why it cannot.
        DirectReader::new(&mut *self.mem).read_entry(table, index)
    }
}

/// The walk's view when only the table cache may answer: a table page not cached is noted as
/// the one the walk needs next, and ends the walk.
struct CachedOnly<'a> {
    cache: &'a TableCache,
    missing: Option<PhysAddr>,
}

impl TableReader for CachedOnly<'_> {
    fn read_entry(&mut self, table: PhysAddr, index: u16) -> Result<u64, PhysError> {
        self.cache.entry(table, index).ok_or_else(|| {
            self.missing = Some(table);
            PhysError::NotRam { addr: table, len: TABLE_BYTES as u64, source_name: "the table cache".into() }
        })
    }
}

/// Most pages whose walks one batch prepares (a batch of stacks is a few hundred).
const MAX_PREFETCH_PAGES: usize = 16 * 1024;

impl AddressSpace {
    /// An address space over `mem`, translating as `config` says, with empty caches.
    pub fn new(mem: Box<dyn PhysMem>, config: MmuConfig) -> Self {
        Self {
            mem,
            config,
            tables: TableCache::default(),
            tlb: TranslationCache::new(),
            stats: MmuStats::default(),
            last_access: None,
            burst_start: None,
            generation: 0,
            batch_device_failure: None,
        }
    }

    /// Replaces the table cache with one of `pages` pages (at least one).
    pub fn with_table_cache_pages(mut self, pages: usize) -> Self {
        self.tables = TableCache::new(pages);
        self
    }

    /// The source read through.
    pub fn mem(&self) -> &dyn PhysMem {
        &*self.mem
    }

    /// The source itself. Writing through it bypasses the caches: call [`flush`](Self::flush)
    /// after changing page tables that way.
    pub fn mem_mut(&mut self) -> &mut dyn PhysMem {
        &mut *self.mem
    }

    /// Runs `first` here and `second` on another thread, each over its own address space (the
    /// same configuration, its own caches), their reads in [`Lockstep`]: over a device source,
    /// where each batch costs a round trip, two independent chains of reads cost the longer
    /// one's round trips instead of both. Other sources run `second`, then `first`, here.
    pub fn in_lockstep<A, B>(
        &mut self,
        first: impl FnOnce(&mut AddressSpace) -> A,
        second: impl FnOnce(&mut AddressSpace) -> B + Send,
    ) -> (A, B)
    where
        B: Send,
    {
        if self.mem.kind() != SourceKind::NetTlp {
            let b = second(self);
            return (first(self), b);
        }
        let detached = || -> Box<dyn PhysMem> {
            Box::new(BufferMem::new("a source in use by readers in lockstep", Vec::new()))
        };
        let mut lockstep = Lockstep::new(std::mem::replace(&mut self.mem, detached()));
        self.mem = Box::new(lockstep.reader());
        let mut other = AddressSpace::new(Box::new(lockstep.reader()), self.config);
        // The table pages read so far serve both: the other need not read them again.
        other.tables = self.tables.snapshot();
        let (a, b, other_stats) = std::thread::scope(|scope| {
            let helper = scope.spawn(move || {
                let b = second(&mut other);
                (b, other.stats)
            });
            let a = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| first(&mut *self)));
            // Our reader goes now, so that the other one never waits for it.
            self.mem = detached();
            match helper.join() {
                Ok((b, stats)) => (a, Ok(b), stats),
                Err(panic) => (a, Err(panic), MmuStats::default()),
            }
        });
        match lockstep.into_source() {
            Ok(source) => self.mem = source,
            Err(_) => log::error!("a reader in lockstep outlived its thread: the source is detached"),
        }
        self.stats.absorb(&other_stats);
        match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(panic), _) | (_, Err(panic)) => std::panic::resume_unwind(panic),
        }
    }

    /// How addresses translate.
    pub fn config(&self) -> MmuConfig {
        self.config
    }

    /// Changes paging depth and physical width; flushes, since every translation changes.
    pub fn set_config(&mut self, config: MmuConfig) {
        self.config = config;
        self.flush();
    }

    /// The paging depth.
    pub fn paging(&self) -> Paging {
        self.config.paging
    }

    /// Changes the paging depth; flushes.
    pub fn set_paging(&mut self, paging: Paging) {
        self.set_config(MmuConfig { paging, ..self.config });
    }

    /// Drops every cached table page and translation. Cheap: the gdb layer calls it at every
    /// stop and every monitor command.
    pub fn flush(&mut self) {
        self.tables.clear();
        self.tlb.clear();
        self.stats.flushes += 1;
        self.burst_start = None;
        self.generation = self.generation.wrapping_add(1);
    }

    /// Starts a request as a read would (on a volatile source an idle gap or an over-long burst
    /// flushes) and returns the cache generation: data a caller keeps from this address space
    /// is as fresh as its page tables while the generation stays the same.
    pub fn cache_generation(&mut self) -> u64 {
        self.begin();
        self.generation
    }

    /// The work done since the last [`reset_stats`](Self::reset_stats).
    pub fn stats(&self) -> MmuStats {
        self.stats
    }

    /// Zeroes the counters.
    pub fn reset_stats(&mut self) {
        self.stats = MmuStats::default();
    }

    /// Start of a request: on a volatile source, an idle gap or an over-long burst flushes.
    fn begin(&mut self) {
        if !self.mem.is_volatile() {
            return;
        }
        let now = Instant::now();
        let idle = self.last_access.is_some_and(|t| now.saturating_duration_since(t) > IDLE_FLUSH);
        let long = self.burst_start.is_some_and(|t| now.saturating_duration_since(t) > MAX_BURST);
        if idle || long {
            self.flush();
        }
        if self.burst_start.is_none() {
            self.burst_start = Some(now);
        }
        self.last_access = Some(now);
    }

    /// End of a request that may have taken a while: the idle gap counts from here.
    fn end(&mut self) {
        if self.last_access.is_some() {
            self.last_access = Some(Instant::now());
        }
    }

    /// Translates `virt` under the page-table root named by `cr3` (e.g. a process's `pgd`),
    /// through the caches.
    pub fn translate_in(&mut self, cr3: u64, virt: VirtAddr) -> Result<Translation, TranslateError> {
        self.begin();
        self.translate_at(self.config.root_of(cr3), virt)
    }

    /// The hot path: one array probe per page size on a hit, a cached walk on a miss.
    fn translate_at(&mut self, root: PhysAddr, virt: VirtAddr) -> Result<Translation, TranslateError> {
        if let Some(t) = self.tlb.get(root, virt) {
            self.stats.translation_hits += 1;
            return Ok(t);
        }
        self.stats.translation_misses += 1;
        self.stats.walks += 1;
        let mut reader = CachedTables {
            mem: &mut *self.mem,
            cache: &mut self.tables,
            stats: &mut self.stats,
            device_failed: self.batch_device_failure.as_ref(),
        };
        let t = walk(&mut reader, self.config, root.0, virt, None)?;
        self.tlb.insert(root, virt, t);
        Ok(t)
    }

    /// The walk of `virt` under `cr3`, every entry read fresh from the source (not the
    /// caches), for display.
    pub fn vtop_in(&mut self, cr3: u64, virt: VirtAddr) -> WalkTrace {
        let mut reader = DirectReader::new(&mut *self.mem);
        let trace = walk_trace(&mut reader, self.config, cr3, virt);
        self.stats.table_reads += reader.reads;
        self.stats.walks += 1;
        trace
    }

    /// Reads at physical `addr`, filling `buf` from the start and stopping at the first byte
    /// that fails: `Ok(n)` when `n > 0` bytes were read (or `buf` is empty), else why the first
    /// byte failed.
    pub fn read_phys_partial(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<usize, MemError> {
        self.begin();
        let (n, err) = self.phys_partial(addr, buf);
        self.end();
        match err {
            Some(e) if n == 0 => Err(e.into()),
            _ => Ok(n),
        }
    }

    /// Reads at virtual `addr` under `cr3`, filling `buf` from the start and stopping at the
    /// first byte that fails: `Ok(n)` when `n > 0` bytes were read (or `buf` is empty), else
    /// why the first byte failed.
    pub fn read_in(&mut self, cr3: u64, addr: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        self.begin();
        let (n, err) = self.read_virt_partial(self.config.root_of(cr3), VirtAddr(addr), buf);
        self.end();
        match err {
            Some(e) if n == 0 => Err(e),
            _ => Ok(n),
        }
    }

    /// Reads all of `buf` at physical `addr`, or fails.
    pub fn read_phys(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.begin();
        let (_, err) = self.phys_partial(addr, buf);
        self.end();
        err.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Reads all of `buf` at `virt` under `cr3`, or fails.
    pub fn read_virt_in(&mut self, cr3: u64, virt: VirtAddr, buf: &mut [u8]) -> Result<(), MemError> {
        self.begin();
        let (_, err) = self.read_virt_partial(self.config.root_of(cr3), virt, buf);
        self.end();
        err.map_or(Ok(()), Err)
    }

    /// Reads physical memory up to the first failure, one backend read per RAM range touched.
    fn phys_partial(&mut self, addr: PhysAddr, buf: &mut [u8]) -> (usize, Option<PhysError>) {
        let len = buf.len();
        self.read_runs(&[(addr, len)], buf)
    }

    /// Cuts runs of physical memory (`(address, length)`) where RAM ranges end, so a read that
    /// runs off RAM still returns the bytes inside it; outside every range the source is asked
    /// anyway, up to the next range (it says why it cannot). Stops at an address wrap.
    fn ram_pieces(&self, runs: &[(PhysAddr, usize)]) -> (Vec<(PhysAddr, usize)>, Option<PhysError>) {
        let mut pieces = Vec::with_capacity(runs.len());
        let ram = self.mem.ram();
        for &(addr, len) in runs {
            let mut done = 0usize;
            while done < len {
                let rest = (len - done) as u64;
                let Some(a) = addr.0.checked_add(done as u64) else {
                    let at = PhysAddr(addr.0.wrapping_add(done as u64));
                    let e =
                        PhysError::NotRam { addr: at, len: rest, source_name: self.mem.name().to_string() };
                    return (pieces, Some(e));
                };
                let i = ram.partition_point(|r| r.end() <= a);
                let limit = match ram.get(i) {
                    Some(r) if r.start.0 <= a => r.end(),
                    Some(r) => r.start.0,
                    None => u64::MAX,
                };
                let n = rest.min(limit.saturating_sub(a)).max(1) as usize;
                pieces.push((PhysAddr(a), n));
                done += n;
            }
        }
        (pieces, None)
    }

    /// Reads `buf` as consecutive runs of physical memory (lengths adding up to at most
    /// `buf.len()`) up to the first failure, all pieces in one [`PhysMem::read_segments`], so
    /// a device source has them in flight together.
    fn read_runs(&mut self, runs: &[(PhysAddr, usize)], buf: &mut [u8]) -> (usize, Option<PhysError>) {
        let (pieces, wrap) = self.ram_pieces(runs);
        let total: usize = pieces.iter().map(|p| p.1).sum();
        let mut segments = split_into_segments(&pieces, buf);
        match self.mem.read_segments(&mut segments) {
            Ok(()) => {
                self.stats.data_reads += segments.len() as u64;
                self.stats.data_bytes += total as u64;
                (total, wrap)
            }
            Err(e) => {
                let done: usize = pieces[..e.index].iter().map(|p| p.1).sum();
                self.stats.data_reads += e.index as u64 + 1;
                self.stats.data_bytes += done as u64;
                (done, Some(e.error))
            }
        }
    }

    /// The physical runs behind `len` bytes at `virt` (pages translated through the caches,
    /// physically contiguous ones merged), up to the first page that does not translate.
    fn virt_runs(
        &mut self,
        root: PhysAddr,
        virt: VirtAddr,
        len: usize,
    ) -> (Vec<(PhysAddr, usize)>, Option<MemError>) {
        let mut runs: Vec<(PhysAddr, usize)> = Vec::new();
        let mut done = 0usize;
        while done < len {
            let Some(va) = virt.0.checked_add(done as u64) else {
                return (runs, Some(TranslateError::Wraps { virt }.into()));
            };
            let t = match self.translate_at(root, VirtAddr(va)) {
                Ok(t) => t,
                Err(e) => return (runs, Some(e.into())),
            };
            let n = t.bytes_to_page_end().min((len - done) as u64) as usize;
            match runs.last_mut() {
                Some((phys, run)) if phys.0.checked_add(*run as u64) == Some(t.phys.0) => *run += n,
                _ => runs.push((t.phys, n)),
            }
            done += n;
        }
        (runs, None)
    }

    /// Reads virtual memory up to the first failure: the whole range is translated first, and
    /// the data is then read in one go.
    fn read_virt_partial(
        &mut self,
        root: PhysAddr,
        virt: VirtAddr,
        buf: &mut [u8],
    ) -> (usize, Option<MemError>) {
        let (runs, stop) = self.virt_runs(root, virt, buf.len());
        let (n, err) = self.read_runs(&runs, buf);
        match err {
            Some(e) => (n, Some(e.into())),
            None => (n, stop),
        }
    }

    /// Reads several physical objects together (one batch for a device source). Each result
    /// is that object's, all or nothing.
    pub fn read_phys_many(&mut self, reads: &mut [(PhysAddr, &mut [u8])]) -> Vec<Result<(), MemError>> {
        self.begin();
        let runs = reads.iter().map(|(addr, buf)| Ok(vec![(*addr, buf.len())])).collect();
        let results = self.read_objects(runs, reads.iter_mut().map(|(_, b)| &mut **b));
        self.end();
        results
    }

    /// Reads several virtual objects under `cr3` together: every object's pages are translated
    /// first, then all of them are read in one batch. Each result is that object's, all or
    /// nothing, as [`AddressSpace::read_virt_in`] would give it.
    pub fn read_virt_many_in(
        &mut self,
        cr3: u64,
        reads: &mut [(VirtAddr, &mut [u8])],
    ) -> Vec<Result<(), MemError>> {
        self.begin();
        let root = self.config.root_of(cr3);
        self.batch_device_failure = self.prefetch_tables(root, reads.iter().map(|(v, b)| (*v, b.len())));
        let runs = reads
            .iter()
            .map(|(virt, buf)| match self.virt_runs(root, *virt, buf.len()) {
                (_, Some(e)) => Err(e),
                (runs, None) => Ok(runs),
            })
            .collect();
        self.batch_device_failure = None;
        let results = self.read_objects(runs, reads.iter_mut().map(|(_, b)| &mut **b));
        self.end();
        results
    }

    /// Reads the page-table pages that the walks of many objects will need, level by level, the
    /// pages missing at each level in one batch: a DMA source then pays a round trip per level
    /// for all the walks together, instead of one per missing page. What cannot be read here
    /// is left to the walks themselves, which say why; the device failing is returned, for
    /// the walks to fail at once.
    fn prefetch_tables(
        &mut self,
        root: PhysAddr,
        objects: impl Iterator<Item = (VirtAddr, usize)>,
    ) -> Option<PhysError> {
        let mut pages: Vec<VirtAddr> = Vec::new();
        'objects: for (virt, len) in objects {
            let first = virt.0 & !(PAGE_SIZE - 1);
            let Some(last) = virt.0.checked_add(len.saturating_sub(1) as u64) else { continue };
            let mut page = first;
            while page <= last {
                if pages.len() >= MAX_PREFETCH_PAGES {
                    break 'objects;
                }
                if self.tlb.get(root, VirtAddr(page)).is_none() {
                    pages.push(VirtAddr(page));
                }
                let Some(next) = page.checked_add(PAGE_SIZE) else { break };
                page = next;
            }
        }
        for _ in 0..self.config.paging.levels() {
            let mut missing: Vec<PhysAddr> = Vec::new();
            pages.retain(|&va| {
                let mut reader = CachedOnly { cache: &self.tables, missing: None };
                let _ = walk(&mut reader, self.config, root.0, va, None);
                reader.missing.inspect(|&t| missing.push(t)).is_some()
            });
            missing.sort_unstable_by_key(|t| t.0);
            missing.dedup();
            missing.retain(|&t| find_range(self.mem.ram(), t, TABLE_BYTES as u64).is_some());
            if missing.is_empty() {
                return None;
            }
            let mut bufs = vec![[0u8; TABLE_BYTES]; missing.len()];
            let mut segments: Vec<Segment<'_>> =
                missing.iter().zip(bufs.iter_mut()).map(|(&addr, buf)| Segment { addr, buf }).collect();
            let mut ok = vec![true; segments.len()];
            let mut from = 0;
            while from < segments.len() {
                match self.mem.read_segments(&mut segments[from..]) {
                    Ok(()) => break,
                    Err(e) if e.error.is_device_failure() => return Some(e.error),
                    Err(e) => {
                        ok[from + e.index] = false;
                        from += e.index + 1;
                    }
                }
            }
            drop(segments);
            self.stats.table_reads += missing.len() as u64;
            let mut filled = false;
            for ((&table, page), ok) in missing.iter().zip(&bufs).zip(ok) {
                if ok {
                    let _ = self.tables.fill(table, |slot| {
                        slot.copy_from_slice(page);
                        Ok::<(), ()>(())
                    });
                    filled = true;
                }
            }
            if !filled {
                return None;
            }
        }
        None
    }

    /// Reads objects, given as their physical runs (or the error that stopped their
    /// translation), in one batch. A hole fails only its object and the rest are asked for
    /// again; the device itself failing (no adapter, timeouts) fails everything left at once,
    /// since each would fail the same way after the same wait.
    fn read_objects<'b>(
        &mut self,
        runs: Vec<Result<Vec<(PhysAddr, usize)>, MemError>>,
        bufs: impl Iterator<Item = &'b mut [u8]>,
    ) -> Vec<Result<(), MemError>> {
        let mut results = Vec::with_capacity(runs.len());
        let mut owners = Vec::new();
        let mut segments = Vec::new();
        for (i, (object, buf)) in runs.into_iter().zip(bufs).enumerate() {
            let pieces = match object.map(|runs| self.ram_pieces(&runs)) {
                Ok((pieces, None)) => pieces,
                Ok((_, Some(wrap))) => {
                    results.push(Err(wrap.into()));
                    continue;
                }
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            results.push(Ok(()));
            for s in split_into_segments(&pieces, buf) {
                owners.push(i);
                segments.push(s);
            }
        }
        let mut from = 0;
        while from < segments.len() {
            let r = self.mem.read_segments(&mut segments[from..]);
            let filled = r.as_ref().err().map_or(segments.len() - from, |e| e.index);
            self.stats.data_reads += (filled + usize::from(r.is_err())) as u64;
            self.stats.data_bytes +=
                segments[from..from + filled].iter().map(|s| s.buf.len() as u64).sum::<u64>();
            match r {
                Ok(()) => break,
                Err(e) if e.error.is_device_failure() => {
                    for &owner in &owners[from + e.index..] {
                        results[owner] = Err(e.error.clone().into());
                    }
                    break;
                }
                Err(e) => {
                    let owner = owners[from + e.index];
                    results[owner] = Err(e.error.into());
                    // The failed object's other pieces are not asked for again.
                    from += e.index + 1;
                    while owners.get(from) == Some(&owner) {
                        from += 1;
                    }
                }
            }
        }
        results
    }

    /// Writes `data` at physical `addr` through the source (which refuses when read-only).
    /// Caches are flushed when anything was written: the write may have changed page tables.
    pub fn write_phys(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), MemError> {
        self.begin();
        let r = self.mem.write(addr, data).map_err(MemError::from);
        if !data.is_empty() {
            self.flush();
        }
        self.end();
        r
    }

    /// Writes `data` at `virt` under `cr3` through the source. Every page is translated before
    /// anything is written, so a hole in the range writes nothing. Caches are flushed when
    /// anything was written.
    pub fn write_virt_in(&mut self, cr3: u64, virt: VirtAddr, data: &[u8]) -> Result<(), MemError> {
        self.begin();
        let r = self.write_virt_at(self.config.root_of(cr3), virt, data);
        if !data.is_empty() {
            self.flush();
        }
        self.end();
        r
    }

    fn write_virt_at(&mut self, root: PhysAddr, virt: VirtAddr, data: &[u8]) -> Result<(), MemError> {
        // (physical address, start, end) of each piece of `data`; at most one per page + 1.
        let mut pieces: Vec<(PhysAddr, usize, usize)> =
            Vec::with_capacity(data.len() / PAGE_SIZE as usize + 2);
        let mut done = 0usize;
        while done < data.len() {
            let va = virt.0.checked_add(done as u64).ok_or(TranslateError::Wraps { virt })?;
            let t = self.translate_at(root, VirtAddr(va))?;
            let n = t.bytes_to_page_end().min((data.len() - done) as u64) as usize;
            pieces.push((t.phys, done, done + n));
            done += n;
        }
        for (phys, start, end) in pieces {
            self.mem.write(phys, &data[start..end])?;
        }
        Ok(())
    }
}

/// `buf` cut into consecutive segments at `pieces` (`(address, length)`).
fn split_into_segments<'a>(pieces: &[(PhysAddr, usize)], buf: &'a mut [u8]) -> Vec<Segment<'a>> {
    let mut segments = Vec::with_capacity(pieces.len());
    let mut rest = buf;
    for &(addr, n) in pieces {
        let r = std::mem::take(&mut rest);
        let (head, tail) = r.split_at_mut(n.min(r.len()));
        segments.push(Segment { addr, buf: head });
        rest = tail;
    }
    segments
}
