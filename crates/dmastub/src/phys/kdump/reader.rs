//! [`KdumpMem`]: a kdump-compressed file (plain or flattened) as physical memory.
//!
//! At open, the headers are checked against the file's size and both bitmaps are read into
//! memory (32 KiB per GiB of RAM each); bitmap2 gets a rank index, so the descriptor of any pfn
//! is found in O(1). A read then takes the descriptors of a run of consecutive pages with one
//! `pread`, their data (when it lies back to back, as makedumpfile writes it) with another, and
//! decompresses each page into a bounded cache. Nothing is mapped (see
//! [`FileMem`](crate::phys::FileMem) on SIGBUS).

use super::codec::Compression;
use super::error::KdumpError;
use super::header::{
    DISK_DUMP_HEADER_SIZE, DUMP_DH_COMPRESSED_INCOMPLETE, DUMP_DH_COMPRESSED_MASK, DiskDumpHeader,
    PAGE_DESC_SIZE, PageDesc, SUB_HEADER_SIZE, SubHeader, excluded_classes,
};
use super::store::{FLAT_SIGNATURE, Store};
use crate::addr::PhysAddr;
use crate::phys::elf::{self, CoreNote};
use crate::phys::ranges::ReadAt;
use crate::phys::{Exclusion, PhysError, PhysMem, RamRange, SourceKind, find_range, human_bytes};
use std::collections::HashMap;
use std::fs::File;

/// Pages of decompressed data kept: 4 MiB of 4 KiB pages.
const CACHE_BYTES: u64 = 4 << 20;
/// At most this many pages are fetched with one descriptor read.
const MAX_RUN: u64 = 256;
/// Bounds on what the sub-header area may point at.
const MAX_NOTE_BYTES: u64 = 64 << 20;
const MAX_VMCOREINFO: u64 = 1 << 20;
/// No machine has more pfns than this (2^44 pfns of 4 KiB: 64 PiB).
const MAX_PFNS: u64 = 1 << 44;

/// A bitmap with a rank index: bit `i` is bit `i % 64` of word `i / 64` (byte `i / 8`, bit
/// `i % 8`, as the file lays it out), and `ranks[b]` counts the ones before word `8 * b`.
pub(crate) struct Bitmap {
    words: Vec<u64>,
    ranks: Vec<u64>,
}

impl Bitmap {
    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        let words: Vec<u64> = bytes
            .chunks(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect();
        let mut ranks = Vec::with_capacity(words.len() / 8 + 1);
        let mut ones = 0u64;
        for block in words.chunks(8) {
            ranks.push(ones);
            ones += block.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
        }
        ranks.push(ones);
        Bitmap { words, ranks }
    }

    /// One past the highest set bit; 0 when none is set.
    pub(crate) fn end_of_ones(&self) -> u64 {
        match self.words.iter().rposition(|&w| w != 0) {
            Some(i) => i as u64 * 64 + 64 - u64::from(self.words[i].leading_zeros()),
            None => 0,
        }
    }

    /// Bits the bitmap holds.
    pub(crate) fn len(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    pub(crate) fn get(&self, i: u64) -> bool {
        self.words.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    /// Ones before bit `i` (all of them for `i` past the end).
    pub(crate) fn rank(&self, i: u64) -> u64 {
        let i = i.min(self.len());
        let word = (i / 64) as usize;
        let block = word / 8;
        let mut r = self.ranks[block];
        for w in &self.words[block * 8..word] {
            r += u64::from(w.count_ones());
        }
        if let Some(w) = self.words.get(word) {
            r += u64::from((w & ((1u64 << (i % 64)) - 1)).count_ones());
        }
        r
    }

    /// Ones in the whole bitmap.
    pub(crate) fn ones(&self) -> u64 {
        self.ranks.last().copied().unwrap_or_default()
    }

    /// The runs of ones below `limit`, as `[start, end)`.
    fn runs(&self, limit: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut push = |s: u64, e: u64| match runs.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => runs.push((s, e)),
        };
        for (wi, &w) in self.words.iter().enumerate() {
            let base = wi as u64 * 64;
            if base >= limit {
                break;
            }
            if w == u64::MAX && base + 64 <= limit {
                push(base, base + 64);
                continue;
            }
            let mut rest = w;
            while rest != 0 {
                let b = u64::from(rest.trailing_zeros());
                let ones = u64::from((rest >> b).trailing_ones());
                let (s, e) = (base + b, (base + b + ones).min(limit));
                if s < e {
                    push(s, e);
                }
                rest = if b + ones >= 64 { 0 } else { rest & !(((1u64 << ones) - 1) << b) };
            }
        }
        runs
    }
}

/// A bounded cache of decompressed pages, evicted in the order they came in.
struct PageCache {
    map: HashMap<u64, usize>,
    slots: Vec<(u64, Box<[u8]>)>,
    next: usize,
    cap: usize,
    page: usize,
}

impl PageCache {
    fn new(page: usize) -> Self {
        let cap = ((CACHE_BYTES / page as u64) as usize).max(MAX_RUN as usize * 2);
        PageCache { map: HashMap::new(), slots: Vec::new(), next: 0, cap, page }
    }

    fn get(&self, pfn: u64) -> Option<&[u8]> {
        self.map.get(&pfn).map(|&i| &*self.slots[i].1)
    }

    fn contains(&self, pfn: u64) -> bool {
        self.map.contains_key(&pfn)
    }

    /// A slot for `pfn` to fill; [`PageCache::forget`] it if filling fails.
    fn slot(&mut self, pfn: u64) -> &mut [u8] {
        if let Some(&i) = self.map.get(&pfn) {
            return &mut self.slots[i].1;
        }
        let i = if self.slots.len() < self.cap {
            self.slots.push((pfn, vec![0u8; self.page].into_boxed_slice()));
            self.slots.len() - 1
        } else {
            let i = self.next;
            self.next = (self.next + 1) % self.cap;
            self.map.remove(&self.slots[i].0);
            self.slots[i].0 = pfn;
            i
        };
        self.map.insert(pfn, i);
        &mut self.slots[i].1
    }

    fn forget(&mut self, pfn: u64) {
        self.map.remove(&pfn);
    }
}

/// A kdump-compressed vmcore (makedumpfile, QEMU `dump-guest-memory -z/-l/-s`), plain or
/// flattened, as physical memory. RAM is the pages bitmap1 marks valid; a page valid but not
/// dumped reads as [`PhysError::Excluded`], never as zeros.
pub struct KdumpMem {
    name: String,
    store: Store,
    header: DiskDumpHeader,
    sub: SubHeader,
    page: u64,
    shift: u32,
    valid: Bitmap,
    dumped: Bitmap,
    /// Pfns below this may be RAM: max_mapnr, cut to the bitmaps' real length.
    pfn_limit: u64,
    desc_offset: u64,
    incomplete: bool,
    /// One past the last page the dump holds.
    dumped_end: u64,
    ram: Vec<RamRange>,
    notes: Vec<CoreNote>,
    cache: PageCache,
    descs: Vec<u8>,
    data: Vec<u8>,
}

impl KdumpMem {
    /// Opens a kdump-compressed or flattened file (told apart by its first bytes).
    pub fn open(path: &std::path::Path) -> Result<Self, crate::phys::OpenError> {
        let io = |what: &'static str| {
            move |source| crate::phys::OpenError::Io { path: path.to_path_buf(), what, source }
        };
        let file = File::open(path).map_err(io("open"))?;
        let size = file.metadata().map_err(io("read metadata"))?.len();
        let name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy().into_owned();
        Self::from_file(name, file, size)
            .map_err(|source| crate::phys::OpenError::Kdump { path: path.to_path_buf(), source })
    }

    /// Reads the headers of an open file of `size` bytes, plain or flattened.
    pub(crate) fn from_file(name: String, file: File, size: u64) -> Result<Self, KdumpError> {
        let reader = crate::phys::ranges::FileReader { file: &file, size };
        let mut sig = [0u8; 12];
        let flattened = reader.read_at(0, &mut sig) && sig == FLAT_SIGNATURE;
        let store = if flattened { Store::flattened(file, size)? } else { Store::plain(file, size) };
        Self::from_store(name, store)
    }

    fn from_store(name: String, store: Store) -> Result<Self, KdumpError> {
        let size = store.size();
        let past_end = |what, offset, len| KdumpError::PastEnd { what, offset, len, size };
        let mut head = vec![0u8; DISK_DUMP_HEADER_SIZE];
        if !store.read_at(0, &mut head) {
            let mut sig = [0u8; 8];
            if store.read_at(0, &mut sig)
                && sig != super::header::SIGNATURE
                && sig != super::header::DISKDUMP_SIGNATURE
            {
                return Err(KdumpError::Signature { found: String::from_utf8_lossy(&sig).into_owned() });
            }
            return Err(past_end("disk_dump_header", 0, DISK_DUMP_HEADER_SIZE as u64));
        }
        let header = DiskDumpHeader::parse(&head)?;
        let bad = |what, value: u64, offset, why| KdumpError::BadField { what, value, offset, why };
        if header.header_version == 0 || header.header_version > 1000 {
            let v = u64::from(header.header_version);
            return Err(bad("header_version", v, 8, "is not a kdump header version (1 to 6)"));
        }
        let bs = u64::from(header.block_size);
        if !bs.is_power_of_two() || !(512..=1 << 16).contains(&bs) {
            return Err(bad("block_size", bs, 0x1ac, "is not a power of two from 512 to 64 KiB"));
        }
        let sub_blocks = u64::from(header.sub_hdr_size);
        let sub_at = bs;
        if sub_blocks == 0 {
            return Err(bad("sub_hdr_size", 0, 0x1b0, "is zero: there is no sub-header"));
        }
        if sub_blocks.saturating_add(1).saturating_mul(bs) > size {
            return Err(past_end("sub-header area", sub_at, sub_blocks.saturating_mul(bs)));
        }
        let mut sub_bytes = vec![0u8; SUB_HEADER_SIZE];
        if !store.read_at(sub_at, &mut sub_bytes) {
            return Err(past_end("kdump_sub_header", sub_at, SUB_HEADER_SIZE as u64));
        }
        let sub = SubHeader::parse(&sub_bytes)?.for_version(header.header_version);

        let bitmap_at = (1 + sub_blocks) * bs;
        let bitmap_len = u64::from(header.bitmap_blocks) * bs;
        if header.bitmap_blocks == 0 {
            return Err(bad("bitmap_blocks", 0, 0x1b4, "is zero: there are no bitmaps"));
        }
        if bitmap_at.checked_add(bitmap_len).is_none_or(|e| e > size) {
            return Err(past_end("bitmaps", bitmap_at, bitmap_len));
        }
        let half = bitmap_len / 2;
        let mut bytes = vec![0u8; half as usize];
        if !store.read_at(bitmap_at, &mut bytes) {
            return Err(past_end("bitmap1", bitmap_at, half));
        }
        let valid = Bitmap::from_bytes(&bytes);
        if !store.read_at(bitmap_at + half, &mut bytes) {
            return Err(past_end("bitmap2", bitmap_at + half, half));
        }
        let dumped = Bitmap::from_bytes(&bytes);
        drop(bytes);

        let max_mapnr = if header.header_version >= 6 && sub.max_mapnr_64 != 0 {
            sub.max_mapnr_64
        } else {
            u64::from(header.max_mapnr)
        };
        if max_mapnr > MAX_PFNS {
            return Err(bad("max_mapnr", max_mapnr, bs + 96, "is more pfns than any machine has"));
        }
        // QEMU 7.2 sizes the bitmaps from the guest's RAM, not from max_mapnr: pfns past a
        // bitmap's real length are not RAM.
        let pfn_limit = max_mapnr.min(valid.len());
        let desc_offset = bitmap_at + bitmap_len;
        let incomplete = header.status & DUMP_DH_COMPRESSED_INCOMPLETE != 0;
        let desc_len = dumped.ones() * PAGE_DESC_SIZE as u64;
        if !incomplete && desc_offset.checked_add(desc_len).is_none_or(|e| e > size) {
            return Err(past_end("page descriptors", desc_offset, desc_len));
        }

        let ram: Vec<RamRange> = valid
            .runs(pfn_limit)
            .into_iter()
            .map(|(s, e)| RamRange { start: PhysAddr(s * bs), len: (e - s) * bs })
            .collect();
        if ram.is_empty() {
            return Err(KdumpError::NoRam { offset: bitmap_at });
        }

        let notes = read_notes(&store, &sub, bs)?;
        let page = bs as usize;
        Ok(KdumpMem {
            name,
            store,
            header,
            sub,
            page: bs,
            shift: bs.trailing_zeros(),
            valid,
            dumped_end: dumped.end_of_ones(),
            dumped,
            pfn_limit,
            desc_offset,
            incomplete,
            ram,
            notes,
            cache: PageCache::new(page),
            descs: Vec::new(),
            data: Vec::new(),
        })
    }

    /// The file's `disk_dump_header`.
    pub fn header(&self) -> &DiskDumpHeader {
        &self.header
    }

    /// Its `kdump_sub_header` (fields its version lacks are zero).
    pub fn sub_header(&self) -> &SubHeader {
        &self.sub
    }

    /// Whether `pfn` is RAM the dump describes (bitmap1, below max_mapnr).
    pub fn valid(&self, pfn: u64) -> bool {
        pfn < self.pfn_limit && self.valid.get(pfn)
    }

    /// Whether the dump holds `pfn`'s data (bitmap2).
    pub fn dumped(&self, pfn: u64) -> bool {
        pfn < self.pfn_limit && self.dumped.get(pfn)
    }

    /// The dump level (`makedumpfile -d`): which page classes were left out.
    pub fn dump_level(&self) -> u32 {
        self.sub.dump_level
    }

    /// One past the highest pfn that may be RAM (max_mapnr, cut to the bitmaps' length).
    pub fn max_pfn(&self) -> u64 {
        self.pfn_limit
    }

    /// Pages the dump holds.
    pub fn dumped_pages(&self) -> u64 {
        self.dumped.ones()
    }

    /// Whether the file is makedumpfile's flattened form.
    pub fn is_flattened(&self) -> bool {
        self.store.is_flattened()
    }

    /// Why the dump does not hold RAM page `pfn`: its dump level, or, past the last page an
    /// incomplete dump holds, the stop (at level 0 surely; above it, or the level).
    fn why_not_dumped(&self, pfn: u64) -> Exclusion {
        let level = self.sub.dump_level;
        match (self.incomplete && pfn >= self.dumped_end, level) {
            (false, _) => Exclusion::DumpLevel(level),
            (true, 0) => Exclusion::NotCaptured,
            (true, level) => Exclusion::NotCapturedOrLevel(level),
        }
    }

    /// Whether the header says the dump was stopped before every page was written.
    pub fn is_incomplete(&self) -> bool {
        self.incomplete
    }

    /// The compression the header names (pages say their own; this is the dump's choice).
    pub fn compression(&self) -> Compression {
        Compression::from_flags(self.header.status & DUMP_DH_COMPRESSED_MASK).unwrap_or_default()
    }

    fn device(&self, pfn: u64, why: String) -> PhysError {
        PhysError::device(PhysAddr(pfn << self.shift), self.name.clone(), why)
    }

    fn excluded(&self, addr: u64, reason: Exclusion) -> PhysError {
        PhysError::Excluded { addr: PhysAddr(addr), source_name: self.name.clone(), reason }
    }

    /// Reads and decompresses `n` consecutive dumped pages from `pfn` into the cache.
    fn load_run(&mut self, pfn: u64, n: u64, first_addr: u64) -> Result<(), PhysError> {
        let idx = self.dumped.rank(pfn);
        let at = self.desc_offset + idx * PAGE_DESC_SIZE as u64;
        let len = (n as usize) * PAGE_DESC_SIZE;
        self.descs.resize(len, 0);
        if let Err(why) = self.store.pread(at, &mut self.descs) {
            if !self.incomplete {
                return Err(
                    self.device(pfn, format!("page descriptor of pfn {pfn:#x} at offset {at:#x}: {why}"))
                );
            }
            // An incomplete dump may end inside its descriptor table: what is missing was never
            // written. Read descriptor by descriptor, the missing ones as zero.
            for i in 0..n as usize {
                let d = &mut self.descs[i * PAGE_DESC_SIZE..(i + 1) * PAGE_DESC_SIZE];
                if self.store.pread(at + (i * PAGE_DESC_SIZE) as u64, d).is_err() {
                    d.fill(0);
                }
            }
        }
        let descs: Vec<PageDesc> =
            self.descs.chunks_exact(PAGE_DESC_SIZE).map(PageDesc::from_array).collect();
        let mut i = 0usize;
        while i < descs.len() {
            let p = pfn + i as u64;
            self.check_desc(p, &descs[i], at + (i * PAGE_DESC_SIZE) as u64, first_addr)?;
            // Pages whose data lies back to back are read with one pread.
            let mut j = i + 1;
            let mut bytes = u64::from(descs[i].size);
            while j < descs.len()
                && descs[j].offset == descs[j - 1].offset + u64::from(descs[j - 1].size)
                && self.check_desc(pfn + j as u64, &descs[j], at + (j * PAGE_DESC_SIZE) as u64, 0).is_ok()
            {
                bytes += u64::from(descs[j].size);
                j += 1;
            }
            self.data.resize(bytes as usize, 0);
            if let Err(why) = self.store.pread(descs[i].offset, &mut self.data) {
                let why = format!("data of pfn {p:#x} at offset {:#x}: {why}", descs[i].offset);
                return Err(self.device(p, why));
            }
            let mut from = 0usize;
            for (k, d) in descs.iter().enumerate().take(j).skip(i) {
                let p = pfn + k as u64;
                let src = &self.data[from..from + d.size as usize];
                from += d.size as usize;
                // check_desc accepted the flags.
                let c = Compression::from_flags(d.flags).unwrap_or_default();
                let out = self.cache.slot(p);
                if let Err(why) = c.decompress(src, out) {
                    self.cache.forget(p);
                    let why = format!(
                        "page data of pfn {p:#x} at offset {:#x} ({} bytes, {c}): {why}",
                        d.offset, d.size
                    );
                    return Err(self.device(p, why));
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Whether descriptor `d` of `pfn` (at file offset `at`) can be read.
    fn check_desc(&self, pfn: u64, d: &PageDesc, at: u64, first_addr: u64) -> Result<(), PhysError> {
        if d.offset == 0 && self.incomplete {
            return Err(self.excluded(first_addr.max(pfn << self.shift), Exclusion::NotCaptured));
        }
        let bad = |what: String| {
            self.device(pfn, format!("page descriptor of pfn {pfn:#x} at offset {at:#x}: {what}"))
        };
        if d.size == 0 {
            return Err(bad(format!("size 0 (data offset {:#x})", d.offset)));
        }
        if u64::from(d.size) > self.page {
            return Err(bad(format!("size {:#x} is larger than a page ({:#x})", d.size, self.page)));
        }
        let c = Compression::from_flags(d.flags).map_err(|e| bad(e.to_string()))?;
        if c == Compression::None && u64::from(d.size) != self.page {
            return Err(bad(format!("an uncompressed page of {:#x} bytes, not {:#x}", d.size, self.page)));
        }
        if d.offset < self.desc_offset
            || d.offset.checked_add(u64::from(d.size)).is_none_or(|e| e > self.store.size())
        {
            return Err(bad(format!(
                "data at offset {:#x} ({:#x} bytes) lies outside the page data (file is {:#x} bytes)",
                d.offset,
                d.size,
                self.store.size()
            )));
        }
        Ok(())
    }
}

/// The ELF notes the sub-header points at, plus its VMCOREINFO as a note when the notes lack one.
fn read_notes(store: &Store, sub: &SubHeader, bs: u64) -> Result<Vec<CoreNote>, KdumpError> {
    let size = store.size();
    let mut notes = Vec::new();
    if sub.size_note > 0 {
        if sub.size_note > MAX_NOTE_BYTES {
            let why = "is larger than any dump's notes (64 MiB)";
            return Err(KdumpError::BadField {
                what: "size_note",
                value: sub.size_note,
                offset: bs + 56,
                why,
            });
        }
        notes = elf::parse_notes(store, sub.offset_note, sub.size_note)
            .map_err(|source| KdumpError::Notes { offset: sub.offset_note, source })?;
    }
    if sub.size_vmcoreinfo > 0 && !notes.iter().any(|n| n.name == "VMCOREINFO") {
        let (at, len) = (sub.offset_vmcoreinfo, sub.size_vmcoreinfo);
        if len > MAX_VMCOREINFO {
            let why = "is larger than any VMCOREINFO (1 MiB)";
            return Err(KdumpError::BadField { what: "size_vmcoreinfo", value: len, offset: bs + 40, why });
        }
        let mut desc = vec![0u8; len as usize];
        if !store.read_at(at, &mut desc) {
            return Err(KdumpError::PastEnd { what: "VMCOREINFO", offset: at, len, size });
        }
        notes.push(CoreNote { name: "VMCOREINFO".into(), n_type: 0, desc });
    }
    Ok(notes)
}

impl PhysMem for KdumpMem {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Kdump
    }

    fn ram(&self) -> &[RamRange] {
        &self.ram
    }

    fn core_notes(&self) -> &[CoreNote] {
        &self.notes
    }

    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        let len = buf.len() as u64;
        let not_ram = || PhysError::NotRam { addr, len, source_name: self.name.clone() };
        if addr.0.checked_add(len).is_none() || (len > 0 && find_range(&self.ram, addr, len).is_none()) {
            return Err(not_ram());
        }
        let end = addr.0 + len;
        let mut cur = addr.0;
        while cur < end {
            let pfn = cur >> self.shift;
            let in_page = (cur & (self.page - 1)) as usize;
            let n = ((self.page - in_page as u64).min(end - cur)) as usize;
            if let Some(page) = self.cache.get(pfn) {
                let at = (cur - addr.0) as usize;
                buf[at..at + n].copy_from_slice(&page[in_page..in_page + n]);
                cur += n as u64;
                continue;
            }
            if !self.dumped.get(pfn) {
                return Err(self.excluded(cur, self.why_not_dumped(pfn)));
            }
            let last = (end - 1) >> self.shift;
            let mut run = 1;
            while pfn + run <= last
                && run < MAX_RUN
                && self.dumped.get(pfn + run)
                && !self.cache.contains(pfn + run)
            {
                run += 1;
            }
            self.load_run(pfn, run, cur)?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let n = self.ram.len();
        let mut s = format!(
            "{}{} ({}, dump level {}: {} left out), {} RAM in {} range{}, {} of it dumped",
            SourceKind::Kdump,
            if self.is_flattened() { ", flattened" } else { "" },
            self.compression(),
            self.sub.dump_level,
            excluded_classes(self.sub.dump_level),
            human_bytes(self.ram_bytes()),
            n,
            if n == 1 { "" } else { "s" },
            human_bytes(self.dumped.ones() * self.page),
        );
        if self.incomplete {
            s.push_str(", incomplete dump: pages after the point it stopped were not captured");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::Bitmap;

    #[test]
    fn rank_and_runs() {
        let mut bytes = vec![0u8; 200];
        let set = [0u64, 1, 2, 63, 64, 65, 511, 512, 513, 1000, 1599];
        for &b in &set {
            bytes[(b / 8) as usize] |= 1 << (b % 8);
        }
        let bm = Bitmap::from_bytes(&bytes);
        assert_eq!(bm.len(), 1600);
        for i in 0..1700 {
            let want = set.iter().filter(|&&b| b < i).count() as u64;
            assert_eq!(bm.rank(i), want, "rank({i})");
            assert_eq!(bm.get(i), set.contains(&i));
        }
        assert_eq!(bm.ones(), set.len() as u64);
        assert_eq!(bm.runs(1600), vec![(0, 3), (63, 66), (511, 514), (1000, 1001), (1599, 1600)]);
        assert_eq!(bm.runs(512), vec![(0, 3), (63, 66), (511, 512)]);
        let full = Bitmap::from_bytes(&[0xff; 24]);
        assert_eq!(full.runs(1000), vec![(0, 192)]);
        assert_eq!(full.runs(100), vec![(0, 100)]);
    }
}
