//! Finding the tables: sampling `.rodata` for a sorted run of addresses, extending it to the
//! whole address table, then finding and checking every other table against it and decoding
//! the names.

use super::*;

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

fn entry(b: &[u8], i: usize, enc: Encoding) -> u64 {
    // Past the end reads as 0, which no sorted run or name offset contains.
    let v = if enc == Encoding::Absolute { b.u64_at(i * 8) } else { b.u32_at(i * 4).map(u64::from) };
    v.unwrap_or(0)
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
pub(crate) fn find(
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
    if idx.u16_at(0).unwrap_or(0) != 0 {
        return None;
    }
    let offs: Vec<u16> = (0..256).map(|i| idx.u16_at(i * 2).unwrap_or(0)).collect();
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
    let last = idx.u16_at(510).unwrap_or(0) as u64;
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
            let v = if width == 4 {
                raw.u32_at(i * 4).unwrap_or(0) as u64
            } else {
                raw.u64_at(i * 8).unwrap_or(0)
            };
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
    let base = if enc == Encoding::Absolute { 0 } else { tail.u64_at(0).unwrap_or(0) };
    if enc != Encoding::Absolute && base < 0xffff_0000_0000_0000 {
        return Err(inconsistent(after, format!("relative base {base:#x} is not a kernel address")));
    }
    let num_at = if enc == Encoding::Absolute { after } else { after + 8 };
    let (raw_names, tokens) = if read(c, num_at, 4)?.u32_at(0).unwrap_or(0) as u64 == num {
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
        if raw.u32_at(0).unwrap_or(0) != 0 {
            continue;
        }
        let want: Vec<u64> = (0..count as usize).map(|i| raw.u32_at(i * 4).unwrap_or(0) as u64).collect();
        let last = want[want.len() - 1];
        // The last marker is the offset of a name at most 255 names before the end.
        let hi = markers.saturating_sub(last);
        let lo = hi.saturating_sub(256 * 600).max(region.start);
        let at = align8(lo);
        let window = read(c, at, hi.saturating_sub(at))?;
        for off in (0..window.len().saturating_sub(7)).step_by(8) {
            if window.u32_at(off).unwrap_or(0) as u64 != num {
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
