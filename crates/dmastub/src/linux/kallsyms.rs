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
use crate::mmu::MemError;

/// Sampling stride through `.rodata`: smaller than any kernel's address table (≥ 20k symbols).
pub const SAMPLE_STRIDE: u64 = 64 * 1024;
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
    #[error(
        "no kallsyms address table in {start:#x}..{end:#x} ({sampled} pages sampled); give --system-map or --vmlinux"
    )]
    NotFound { start: u64, end: u64, sampled: u64 },
    #[error("kallsyms tables near {at:#x} are inconsistent: {why}")]
    Inconsistent { at: u64, why: String },
    #[error("reading kallsyms at {at:#x}: {err}")]
    Read {
        at: u64,
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
    pub fn len(&self) -> usize {
        self.entries.len()
    }

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

/// What the search reads goes through a [`ReadAhead`] without windows, which counts it.
type Counting<'a> = ReadAhead<'a>;

/// `len` bytes at `addr`.
fn read(c: &mut Counting, addr: u64, len: u64) -> Result<Vec<u8>, KallsymsError> {
    let mut buf = vec![0u8; len as usize];
    c.read(addr, &mut buf).map_err(|err| KallsymsError::Read { at: addr, err })?;
    Ok(buf)
}

/// `len` bytes at `addr`, if they can be read.
fn try_read(c: &mut Counting, addr: u64, len: u64) -> Option<Vec<u8>> {
    read(c, addr, len).ok()
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default())
}

fn entry(b: &[u8], i: usize, enc: Encoding) -> u64 {
    if enc == Encoding::Absolute { u64_at(b, i * 8) } else { u32_at(b, i * 4) as u64 }
}

/// Does this page look like a run of a sorted address table in this encoding?
fn page_is_table(page: &[u8], enc: Encoding) -> bool {
    let n = page.len() / enc.width() as usize;
    let mut distinct = 0;
    let mut prev = enc.order_key(entry(page, 0, enc));
    if enc == Encoding::Absolute && !(0xffff_0000_0000_0000..u64::MAX).contains(&entry(page, 0, enc)) {
        return false;
    }
    for i in 1..n {
        let k = enc.order_key(entry(page, i, enc));
        if !enc.in_order_keys(prev, k) {
            return false;
        }
        distinct += (k != prev) as usize;
        prev = k;
    }
    // Text symbols are a few hundred bytes apart: a sorted run of mostly distinct values.
    distinct * 2 > n
}

/// Finds and decodes the kallsyms tables. `samples` are the addresses of pages to probe for the
/// address table (the kernel's read-only data, `SAMPLE_STRIDE` apart); `region` bounds every
/// table (the kernel image).
pub fn find(
    mem: &mut dyn Memory,
    samples: &[u64],
    region: std::ops::Range<u64>,
) -> Result<Kallsyms, KallsymsError> {
    let mut c = ReadAhead::new(mem);
    let mut last_err = None;
    let mut rejected: Vec<(Encoding, std::ops::Range<u64>)> = Vec::new();
    for &page_addr in samples {
        let Some(page) = try_read(&mut c, page_addr, 4096) else { continue };
        for enc in [Encoding::AbsolutePercpu, Encoding::Relative, Encoding::Absolute] {
            if rejected.iter().any(|(e, r)| *e == enc && r.contains(&page_addr)) || !page_is_table(&page, enc)
            {
                continue;
            }
            match decode_around(&mut c, page_addr, enc, &region, &mut rejected) {
                Ok(mut k) => {
                    k.bytes_read = c.bytes_read();
                    return Ok(k);
                }
                Err(e) => {
                    log::debug!("kallsyms candidate at {page_addr:#x} ({enc:?}): {e}");
                    last_err = Some(e);
                }
            }
        }
    }
    Err(last_err.unwrap_or(KallsymsError::NotFound {
        start: region.start,
        end: region.end,
        sampled: samples.len() as u64,
    }))
}

/// Extends a sorted run found in one page to the whole table: its first entry's address and
/// its bytes, read once (the addresses are decoded from them later).
fn table_bounds(
    c: &mut Counting,
    page_addr: u64,
    enc: Encoding,
    region: &std::ops::Range<u64>,
) -> Result<(u64, Vec<u8>), KallsymsError> {
    let w = enc.width();
    let wu = w as usize;
    let here = read(c, page_addr, w)?;
    // Backwards, a chunk at a time, to the first entry that breaks the order.
    let mut back: Vec<Vec<u8>> = Vec::new();
    let mut start = page_addr;
    let mut first = entry(&here, 0, enc);
    while start > region.start {
        let from = start.saturating_sub(CHUNK).max(region.start);
        let chunk = read(c, from, start - from)?;
        let n = chunk.len() / wu;
        let mut taken = n;
        for i in (0..n).rev() {
            let v = entry(&chunk, i, enc);
            if !enc.in_order(v, first) || (enc == Encoding::Absolute && v < 0xffff_0000_0000_0000) {
                break;
            }
            first = v;
            taken = i;
        }
        start = from + (taken * wu) as u64;
        back.push(chunk[taken * wu..n * wu].to_vec());
        if taken > 0 || n == 0 {
            break;
        }
        if (page_addr - start) / w > MAX_SYMBOLS {
            return Err(inconsistent(start, "address table longer than any kernel's"));
        }
    }
    let mut bytes: Vec<u8> = back.iter().rev().flatten().copied().collect();
    bytes.extend_from_slice(&here);
    // Forwards likewise.
    let mut end = page_addr + w;
    let mut last = entry(&here, 0, enc);
    while end < region.end {
        let to = (end + CHUNK).min(region.end);
        let chunk = read(c, end, to - end)?;
        let n = chunk.len() / wu;
        let mut taken = 0;
        for i in 0..n {
            let v = entry(&chunk, i, enc);
            if !enc.in_order(last, v) {
                break;
            }
            last = v;
            taken = i + 1;
        }
        bytes.extend_from_slice(&chunk[..taken * wu]);
        end += (taken * wu) as u64;
        if taken < n || n == 0 {
            break;
        }
        if (end - start) / w > MAX_SYMBOLS {
            return Err(inconsistent(start, "address table longer than any kernel's"));
        }
    }
    Ok((start, bytes))
}

fn align8(x: u64) -> u64 {
    x.checked_next_multiple_of(8).unwrap_or(!7)
}

/// The token table and index: 256 NUL-terminated strings and their offsets.
fn tokens_at(c: &mut Counting, table: u64, index: u64) -> Option<Vec<Vec<u8>>> {
    let idx = try_read(c, index, 512)?;
    if u16_at(&idx, 0) != 0 {
        return None;
    }
    let offs: Vec<u16> = (0..256).map(|i| u16_at(&idx, i * 2)).collect();
    if offs.windows(2).any(|w| w[1] <= w[0]) {
        return None;
    }
    let len = offs[255] as u64 + 256;
    let text = try_read(c, table, len.min(index.saturating_sub(table)))?;
    let mut tokens = Vec::with_capacity(256);
    for (i, &o) in offs.iter().enumerate() {
        let s = text.get(o as usize..)?;
        let nul = s.iter().position(|&b| b == 0)?;
        if i < 255 && o as usize + nul + 1 != offs[i + 1] as usize {
            return None;
        }
        tokens.push(s[..nul].to_vec());
    }
    Some(tokens)
}

/// The token table that ends just before `index` (up to 7 bytes of alignment between them):
/// its last string ends at a NUL, and starts `token_index[255]` bytes after the table.
fn tokens_ending_at(c: &mut Counting, index: u64) -> Option<(u64, Vec<Vec<u8>>)> {
    let idx = try_read(c, index, 512)?;
    let last = u16_at(&idx, 510) as u64;
    let before = 512u64.min(index);
    let tail = try_read(c, index - before, before)?;
    for pad in 1..=8u64 {
        let Some(nul) = before.checked_sub(pad).map(|n| n as usize) else { break };
        if tail[nul] != 0 {
            continue;
        }
        // The last token is the string before this NUL.
        let start = tail[..nul].iter().rposition(|&b| b == 0).map_or(0, |p| p + 1);
        let table = (index - before + start as u64).checked_sub(last)?;
        if let Some(t) = tokens_at(c, table, index) {
            return Some((table, t));
        }
    }
    None
}

/// Decodes `num` names from the raw `kallsyms_names` bytes (already walked by [`walk_names`])
/// into one string, returning it and each name's (start, length).
fn decode_names(
    raw: &[u8],
    at: u64,
    num: u64,
    tokens: &[Vec<u8>],
) -> Result<(String, Vec<(u32, u32)>), KallsymsError> {
    // The tokens side by side in one buffer: names are built with byte pushes, not a copy
    // call per token (most tokens are 1 to 4 bytes).
    let mut flat = Vec::with_capacity(tokens.iter().map(Vec::len).sum());
    let mut token_at = [(0u32, 0u32); 256];
    for (slot, t) in token_at.iter_mut().zip(tokens) {
        *slot = (flat.len() as u32, t.len() as u32);
        flat.extend_from_slice(t);
    }
    let mut arena: Vec<u8> = Vec::with_capacity(raw.len() * 7 / 4);
    let mut spans = Vec::with_capacity(num as usize);
    let mut pos = 0usize;
    for i in 0..num {
        let b0 = raw[pos] as usize;
        let (len, hdr) =
            if b0 & 0x80 != 0 { ((b0 & 0x7f) | ((raw[pos + 1] as usize) << 7), 2) } else { (b0, 1) };
        // The first character is the symbol type; the rest is the name. Both go into the
        // arena, and the span leaves the type out.
        let start = arena.len();
        for &t in &raw[pos + hdr..pos + hdr + len] {
            let (o, l) = token_at[t as usize];
            for &b in &flat[o as usize..(o + l) as usize] {
                arena.push(b);
            }
        }
        if arena.len() - start < 2 || !arena[start].is_ascii_alphabetic() {
            return Err(inconsistent(at + pos as u64, format!("name {i} does not start with a symbol type")));
        }
        if !arena[start + 1..].is_ascii() {
            let body = String::from_utf8_lossy(&arena[start + 1..]).into_owned();
            arena.truncate(start + 1);
            arena.extend_from_slice(body.as_bytes());
        }
        spans.push((start as u32 + 1, (arena.len() - start - 1) as u32));
        pos += hdr + len;
    }
    // Only ASCII or from_utf8_lossy output went in.
    let arena = String::from_utf8(arena).map_err(|_| inconsistent(at, "names are not text"))?;
    Ok((arena, spans))
}

/// Checks the decoded name offsets against `kallsyms_markers` at `at` (4- or 8-byte entries).
fn markers_match(c: &mut Counting, at: u64, markers: &[u64]) -> Option<u64> {
    for width in [4u64, 8] {
        let Some(raw) = try_read(c, at, markers.len() as u64 * width) else { continue };
        let ok = markers.iter().enumerate().all(|(i, &m)| {
            let v = if width == 4 { u32_at(&raw, i * 4) as u64 } else { u64_at(&raw, i * 8) };
            v == m
        });
        if ok {
            return Some(width);
        }
    }
    None
}

/// Decodes the tables around the sorted run that holds `page_addr`. The run's range goes into
/// `rejected` first, so that a failure is not tried again from the run's other pages.
fn decode_around(
    c: &mut Counting,
    page_addr: u64,
    enc: Encoding,
    region: &std::ops::Range<u64>,
    rejected: &mut Vec<(Encoding, std::ops::Range<u64>)>,
) -> Result<Kallsyms, KallsymsError> {
    let (run_start, run) = table_bounds(c, page_addr, enc, region)?;
    let w = enc.width();
    rejected.push((enc, run_start..run_start + run.len() as u64));
    // Alignment zeros before the table look like leading per-CPU offsets of 0: the table
    // proper starts where its length agrees with `kallsyms_num_syms` or the token index ends.
    // The error for the run as found is the one to report if no trimmed start works either.
    let mut first_err = None;
    for skip in 0..=2u64 {
        if skip > 0 && (run.len() as u64 <= skip * w || entry(&run, skip as usize - 1, enc) != 0) {
            break;
        }
        let table = &run[(skip * w) as usize..];
        match decode_table(c, run_start + skip * w, table, enc, region) {
            Ok(k) => return Ok(k),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| inconsistent(run_start, "no table next to the sorted run")))
}

/// `raw` is the address table, which starts at `start`.
fn decode_table(
    c: &mut Counting,
    start: u64,
    raw: &[u8],
    enc: Encoding,
    region: &std::ops::Range<u64>,
) -> Result<Kallsyms, KallsymsError> {
    let w = enc.width();
    let num = raw.len() as u64 / w;
    let end = start + num * w;
    if num < 1000 {
        return Err(inconsistent(start, format!("only {num} sorted entries")));
    }
    let after = align8(end);
    let tail = read(c, after, 16)?;
    let base = if enc == Encoding::Absolute { 0 } else { u64_at(&tail, 0) };
    if enc != Encoding::Absolute && base < 0xffff_0000_0000_0000 {
        return Err(inconsistent(after, format!("relative base {base:#x} is not a kernel address")));
    }
    let num_at = if enc == Encoding::Absolute { after } else { after + 8 };
    let (raw_names, tokens) = if u32_at(&read(c, num_at, 4)?, 0) as u64 == num {
        // Before 6.4: num_syms, names, markers, [seqs_of_names], token_table, token_index follow.
        tokens_after(c, align8(num_at + 4), num, region)?
    } else {
        // From 6.4: the token index ends where the address table starts.
        let index = start.checked_sub(512).ok_or_else(|| inconsistent(start, "no room for a token index"))?;
        let (table, tokens) = tokens_ending_at(c, index)
            .ok_or_else(|| inconsistent(index, "no token index before the address table"))?;
        (names_before(c, table, num, region)?, tokens)
    };
    let (arena, spans) = decode_names(&raw_names, start, num, &tokens)?;
    let entries = spans
        .into_iter()
        .enumerate()
        .map(|(i, (s, l))| (enc.address(entry(raw, i, enc), base), s, l))
        .collect();
    let mut k = Kallsyms::from_arena(arena, entries);
    k.table_addr = start;
    Ok(k)
}

/// Before 6.4 the names, markers, `seqs_of_names` (6.2–6.3) and token tables follow
/// `num_syms`. Walking the names gives their end; the markers there must agree with the walk.
fn tokens_after(
    c: &mut Counting,
    names: u64,
    num: u64,
    region: &std::ops::Range<u64>,
) -> Result<(Vec<u8>, Vec<Vec<u8>>), KallsymsError> {
    let (raw, markers) = walk_names(c, names, num, region.end)?;
    let mut at = align8(names + raw.len() as u64);
    let width = markers_match(c, at, &markers)
        .ok_or_else(|| inconsistent(at, "kallsyms_markers disagree with the names"))?;
    at = align8(at + markers.len() as u64 * width);
    for skip in [0, align8(num * 3), align8(num * 4)] {
        let table = at + skip;
        if table >= region.end {
            break;
        }
        // The index follows the 256th NUL of the table.
        let blob = read(c, table, (16 * 1024).min(region.end - table))?;
        if blob.first() == Some(&0) {
            continue;
        }
        if let Some(i) = blob.iter().enumerate().filter(|(_, b)| **b == 0).nth(255).map(|(i, _)| i)
            && let Some(tokens) = tokens_at(c, table, align8(table + i as u64 + 1))
        {
            return Ok((raw, tokens));
        }
    }
    Err(inconsistent(at, "no token table after kallsyms_markers"))
}

/// Walks `num` name entries by their lengths, reading no further than `limit`: the raw table
/// (exactly its bytes) and the offset of every 256th name, as `kallsyms_markers` should hold.
fn walk_names(
    c: &mut Counting,
    names: u64,
    num: u64,
    limit: u64,
) -> Result<(Vec<u8>, Vec<u64>), KallsymsError> {
    let mut markers = Vec::with_capacity(num.div_ceil(256) as usize);
    let mut raw: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    for i in 0..num {
        if i % 256 == 0 {
            markers.push(pos as u64);
        }
        // Keep one maximal entry (2-byte length + 0x7fff tokens) ahead of the cursor.
        while pos + 2 > raw.len() || {
            let b0 = raw[pos] as usize;
            let need =
                if b0 & 0x80 != 0 { 2 + ((b0 & 0x7f) | ((raw[pos + 1] as usize) << 7)) } else { 1 + b0 };
            pos + need > raw.len()
        } {
            let from = names + raw.len() as u64;
            let to = (from + CHUNK * 4).min(limit);
            if to <= from || raw.len() as u64 > MAX_NAMES_BYTES {
                return Err(inconsistent(names + pos as u64, format!("name {i} runs past the names table")));
            }
            raw.extend(read(c, from, to - from)?);
        }
        let b0 = raw[pos] as usize;
        let len = if b0 & 0x80 != 0 { 2 + ((b0 & 0x7f) | ((raw[pos + 1] as usize) << 7)) } else { 1 + b0 };
        if b0 == 0 {
            return Err(inconsistent(names + pos as u64, format!("name {i} is empty")));
        }
        pos += len;
    }
    raw.truncate(pos);
    Ok((raw, markers))
}

/// From 6.4: `num_syms` and the names come first, then the markers, which end just before the
/// token table. The start of the names is where `num_syms` sits, found by searching back.
fn names_before(
    c: &mut Counting,
    token_table: u64,
    num: u64,
    region: &std::ops::Range<u64>,
) -> Result<Vec<u8>, KallsymsError> {
    let count = num.div_ceil(256);
    let markers_len = count * 4;
    for pad in 0..8 {
        let Some(markers) = token_table.checked_sub(pad + markers_len) else { break };
        if markers % 4 != 0 {
            continue;
        }
        let Some(raw) = try_read(c, markers, markers_len) else { continue };
        if u32_at(&raw, 0) != 0 {
            continue;
        }
        let want: Vec<u64> = (0..count as usize).map(|i| u32_at(&raw, i * 4) as u64).collect();
        let last = want[want.len() - 1];
        // The last marker is the offset of a name at most 255 names before the end.
        let hi = markers.saturating_sub(last);
        let lo = hi.saturating_sub(256 * 600).max(region.start);
        let at = align8(lo);
        let window = read(c, at, hi.saturating_sub(at))?;
        for off in (0..window.len().saturating_sub(7)).step_by(8) {
            if u32_at(&window, off) as u64 != num {
                continue;
            }
            let names = at + off as u64 + 8;
            if let Ok((names_raw, m)) = walk_names(c, names, num, markers + 8)
                && align8(names + names_raw.len() as u64) == markers - markers % 8
                && m == want
            {
                return Ok(names_raw);
            }
        }
    }
    Err(inconsistent(token_table, "no kallsyms_num_syms and names before the markers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xffff_ffff_8200_0000;
    const TEXT: u64 = 0xffff_ffff_8100_0000;

    /// Kernel memory as one buffer at `BASE`.
    struct Buf(Vec<u8>);

    impl Memory for Buf {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let off = addr.checked_sub(BASE).map(|o| o as usize);
            match off.and_then(|o| self.0.get(o..o + buf.len())) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(MemError::Phys(crate::phys::PhysError::NotRam {
                    addr: crate::PhysAddr(addr),
                    len: buf.len() as u64,
                    source_name: "test".into(),
                })),
            }
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Order {
        /// Before 6.4: offsets, relative_base, num_syms, names, markers, [seqs], tokens.
        /// `wide`: 4.x kernels, whose `num_syms` and markers are `unsigned long` (8 bytes).
        Old { seqs: bool, wide: bool },
        /// From 6.4: num_syms, names, markers, tokens, offsets, relative_base, seqs.
        New,
    }

    fn align(v: &mut Vec<u8>) {
        while !v.len().is_multiple_of(8) {
            v.push(0);
        }
    }

    /// The symbols: a few per-CPU (absolute, small) then many text symbols, as x86-64 has.
    fn symbols(n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> =
            (0..4).map(|i| (format!("Dpercpu_var_{i}"), 0x1000 * i as u64)).collect();
        v.extend((0..n).map(|i| (format!("Tfunction_number_{i}"), TEXT + 0x40 * i as u64)));
        v.push(("Dinit_task".into(), TEXT + 0x40 * n as u64 + 0x1000));
        v
    }

    /// Tables as scripts/kallsyms writes them (absolute per-CPU encoding), after `pad` bytes of
    /// unrelated data.
    fn tables(syms: &[(String, u64)], order: Order, pad: usize) -> Vec<u8> {
        // Tokens: each printable byte stands for itself; codes that never occur in names stand
        // for longer strings, as the kernel's compression makes them ("function_" here).
        let token = |i: usize| -> Vec<u8> {
            match i {
                0xf0.. => b"function_".to_vec(),
                0..0x20 => format!("_{i}").into_bytes(),
                _ => vec![i as u8],
            }
        };
        let mut names = Vec::new();
        let mut markers = Vec::new();
        for (i, (n, _)) in syms.iter().enumerate() {
            if i % 256 == 0 {
                markers.push(names.len() as u32);
            }
            let enc: Vec<u8> = n.replace("function_", "\u{f0}").chars().map(|c| c as u32 as u8).collect();
            names.push(enc.len() as u8);
            names.extend(enc);
        }
        let mut tt = Vec::new();
        let mut ti = Vec::new();
        for i in 0..256 {
            ti.push(tt.len() as u16);
            tt.extend(token(i));
            tt.push(0);
        }
        let offsets: Vec<u8> = syms
            .iter()
            .flat_map(|(_, a)| {
                let off = if *a < 0x1_0000_0000 { *a as i32 } else { (TEXT as i64 - 1 - *a as i64) as i32 };
                off.to_le_bytes()
            })
            .collect();
        let num = syms.len() as u32;
        let mut m = vec![0x90u8; pad];
        align(&mut m);
        let push_tokens = |m: &mut Vec<u8>| {
            m.extend(&tt);
            align(m);
            m.extend(ti.iter().flat_map(|v| v.to_le_bytes()));
            align(m);
        };
        let wide = matches!(order, Order::Old { wide: true, .. });
        let push_names = |m: &mut Vec<u8>| {
            if wide {
                m.extend((num as u64).to_le_bytes());
            } else {
                m.extend(num.to_le_bytes());
            }
            align(m);
            m.extend(&names);
            align(m);
            if wide {
                m.extend(markers.iter().flat_map(|&v| (v as u64).to_le_bytes()));
            } else {
                m.extend(markers.iter().flat_map(|v| v.to_le_bytes()));
            }
            align(m);
        };
        match order {
            Order::Old { seqs, .. } => {
                m.extend(&offsets);
                align(&mut m);
                m.extend(TEXT.to_le_bytes());
                push_names(&mut m);
                if seqs {
                    m.extend(vec![0x11u8; syms.len() * 3]);
                    align(&mut m);
                }
                push_tokens(&mut m);
            }
            Order::New => {
                push_names(&mut m);
                push_tokens(&mut m);
                m.extend(&offsets);
                align(&mut m);
                m.extend(TEXT.to_le_bytes());
                m.extend(vec![0x11u8; syms.len() * 3]);
            }
        }
        m.extend(vec![0u8; 4096]);
        m
    }

    fn samples(len: usize) -> Vec<u64> {
        (0..len as u64).step_by(SAMPLE_STRIDE as usize).map(|o| BASE + o).collect()
    }

    #[test]
    fn decodes_every_layout() {
        let syms = symbols(40_000);
        for order in [
            Order::Old { seqs: false, wide: true },
            Order::Old { seqs: false, wide: false },
            Order::Old { seqs: true, wide: false },
            Order::New,
        ] {
            for pad in [0, 12_345] {
                let m = tables(&syms, order, pad);
                let len = m.len();
                let k = find(&mut Buf(m), &samples(len), BASE..BASE + len as u64).expect("kallsyms");
                assert_eq!(k.len(), syms.len());
                assert_eq!(k.address("init_task"), Some(TEXT + 0x40 * 40_000 + 0x1000));
                assert_eq!(k.address("function_number_39999"), Some(TEXT + 0x40 * 39_999));
                assert_eq!(k.address("percpu_var_3"), Some(0x3000));
                assert_eq!(k.address("function_number_40000"), None);
                assert_eq!(k.lookup(TEXT + 0x40 * 7 + 3), Some(("function_number_7", 3)));
                assert!(k.bytes_read < 4 * len as u64, "read {} of {len}", k.bytes_read);
            }
        }
    }

    #[test]
    fn corrupt_tables_are_refused_with_where() {
        let syms = symbols(20_000);
        let m = tables(&syms, Order::Old { seqs: false, wide: false }, 0);
        let len = m.len();
        let probe = find(&mut Buf(m.clone()), &samples(len), BASE..BASE + len as u64).unwrap();
        assert_eq!(probe.table_addr, BASE);
        let mut broken = m.clone();
        // The names start after offsets (4 per symbol), the relative base and num_syms.
        let names = (syms.len() * 4).div_ceil(8) * 8 + 16;
        broken[names] = 0; // an empty name
        let e =
            find(&mut Buf(broken), &samples(len), BASE..BASE + len as u64).expect_err("refused").to_string();
        assert!(e.contains("inconsistent") && e.contains("0x"), "{e}");
        // Nothing but code: not found, and the message says which hint to give.
        let code = vec![0x90u8; 256 * 1024];
        let e = find(&mut Buf(code), &samples(256 * 1024), BASE..BASE + 256 * 1024)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("--system-map"), "{e}");
        // Cut short: the names run past the region.
        let cut = names + 1000;
        let e = find(&mut Buf(m[..cut].to_vec()), &samples(cut), BASE..BASE + cut as u64)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("past") || e.contains("reading"), "{e}");
    }

    #[test]
    fn lookups_on_file_symbols() {
        let k = Kallsyms::from_pairs([
            ("b".to_string(), 0xffff_ffff_8100_0010),
            ("a".into(), 0x20),
            ("b".into(), 0xffff_ffff_8100_0000),
        ]);
        // Duplicate names: the lowest address wins, as kallsyms_lookup_name() does.
        assert_eq!(k.address("b"), Some(0xffff_ffff_8100_0000));
        let slid = k.slid(0x100_0000);
        assert_eq!(slid.address("b"), Some(0xffff_ffff_8200_0000));
        assert_eq!(slid.address("a"), Some(0x20), "per-CPU offsets do not move");
        assert_eq!(Kallsyms::default().address("a"), None);
    }

    #[test]
    fn sizes_run_to_the_next_symbol_at_a_higher_address() {
        let k = Kallsyms::from_pairs([
            ("f".to_string(), 0x1000),
            ("f_alias".into(), 0x1000),
            ("g".into(), 0x1040),
            ("last".into(), 0x2000),
        ]);
        let (name, off, size) = k.lookup_sized(0x1010).unwrap();
        assert!(name.starts_with('f'));
        assert_eq!((off, size), (0x10, Some(0x40)), "an alias does not end its twin");
        assert_eq!(k.lookup_sized(0x1040), Some(("g", 0, Some(0xfc0))));
        assert_eq!(k.lookup_sized(0x2008), Some(("last", 8, None)));
        assert_eq!(k.lookup_sized(0xfff), None);
    }
}
