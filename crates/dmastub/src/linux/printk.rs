//! The kernel log (`dmesg`) read straight from memory, for `monitor dmesg [N]` and
//! `dmastub dmesg`: after a panic, or on a machine we can only read, it is the first thing one
//! wants and the kernel can no longer print it.
//!
//! Two formats, tried in this order because 5.10+ kernels still have a `log_buf` symbol:
//!
//! * the lockless ring buffer of Linux 5.10+ (`prb`, `struct printk_ringbuffer`): a descriptor
//!   ring, a parallel `printk_info` array and a text data ring;
//! * the `log_buf` of Linux 3.5–5.9: `struct printk_log` headers each followed by their text,
//!   in one byte ring.
//!
//! Everything is untrusted (a crashed kernel, a torn live read, or simply the wrong guess):
//! ring sizes are range-checked, every walk is bounded by the ring size, at most
//! [`MAX_READ_BYTES`] are read, and a bad record is skipped and counted rather than trusted.
//! Arrays are read in [`CHUNK`]-sized pieces on first use, not field by field, because a read
//! may be a DMA round trip of ~10 µs.

use super::readahead::ReadAhead;
use super::{Memory, Symbols, TypeInfo};
use crate::mmu::MemError;

/// Largest `prb_desc_ring.count_bits` accepted: 16 Mi descriptors, far above any real kernel
/// (`log_buf_len` is at most 2 GiB with 32 bytes per descriptor on average), small enough that
/// a garbage value cannot make us walk for minutes.
pub const MAX_COUNT_BITS: u32 = 24;
/// Largest `prb_data_ring.size_bits` accepted (1 GiB of text).
pub const MAX_SIZE_BITS: u32 = 30;
/// Most bytes one [`read_log`] reads, whatever the rings claim.
pub const MAX_READ_BYTES: u64 = 64 << 20;
/// Granule of the array reads: large enough that a typical 128 KiB log takes a handful of
/// reads, small enough that a huge ring is only read where the walk goes.
const CHUNK: u64 = 256 << 10;
/// Largest struct size believed from a layout: a garbage size must not become a huge
/// allocation or an overflow.
const MAX_STRUCT: u64 = 4096;

/// One log record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The kernel's sequence number (in `log_buf` kernels counted from `log_first_seq`).
    pub seq: u64,
    /// `local_clock()` at the time of the `printk`, in nanoseconds since boot.
    pub ts_nsec: u64,
    /// The syslog level (0 = emerg … 7 = debug), if the layout says where it is.
    pub level: Option<u8>,
    /// The text, lossy UTF-8, with control characters other than `\n` and `\t` written as
    /// `\xNN` so that a corrupt record cannot drive the terminal.
    pub text: String,
}

/// The kernel log as found in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelLog {
    /// Oldest first.
    pub records: Vec<Record>,
    /// `"printk ring buffer"` or `"log_buf"`.
    pub format: &'static str,
    /// Where the struct offsets came from, and which were assumed (e.g. the `printk_info.level`
    /// bitfield, which VMCOREINFO does not export).
    pub layout: String,
    /// What was skipped or where reading stopped, one sentence each.
    pub problems: Vec<String>,
}

/// Why no log could be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrintkError {
    #[error(
        "no kernel log symbol: looked for `prb` (printk ring buffer, Linux 5.10+) and `log_buf` (Linux 3.5-5.9)"
    )]
    NoSymbol,
    #[error("the kernel log needs the offset of {field}, which the layout ({origin}) does not give")]
    MissingOffset { field: String, origin: String },
    #[error("the kernel log needs the size of struct {ty}, which the layout ({origin}) does not give")]
    MissingSize { ty: String, origin: String },
    #[error("the layout ({origin}) is not believable: {why}")]
    BadLayout { origin: String, why: String },
    #[error("cannot read {what} at {addr:#x}: {source}")]
    Unreadable {
        what: String,
        addr: u64,
        #[source]
        source: MemError,
    },
    #[error("cannot read {what} at {addr:#x}: the read limit was reached")]
    ReadLimit { what: String, addr: u64 },
    #[error("cannot read {what} at {addr:#x}: outside its array")]
    OutsideArray { what: String, addr: u64 },
    #[error("{what} at {addr:#x} is corrupt: {why}")]
    Corrupt { what: String, addr: u64, why: String },
}

impl PrintkError {
    /// Whether the device itself failed (see [`MemError::is_device_failure`]).
    pub fn is_device_failure(&self) -> bool {
        matches!(self, PrintkError::Unreadable { source, .. } if source.is_device_failure())
    }
}

/// Reads the kernel log: the printk ring buffer if there is a `prb` symbol, else `log_buf`.
pub fn read_log(
    mem: &mut dyn Memory,
    syms: &dyn Symbols,
    types: &dyn TypeInfo,
) -> Result<KernelLog, PrintkError> {
    let mut rd = Reader { ra: ReadAhead::new(mem), cap: MAX_READ_BYTES };
    if let Some(prb) = syms.address("prb") {
        read_prb(&mut rd, prb, types)
    } else if let Some(log_buf) = syms.address("log_buf") {
        read_log_buf(&mut rd, log_buf, syms, types)
    } else {
        Err(PrintkError::NoSymbol)
    }
}

impl KernelLog {
    /// The log as `dmesg` prints it: `[seconds.micros] text` per line, every line of a
    /// multi-line record prefixed, only the `last` N lines if asked; then one `dmesg: …` line
    /// per problem, so that a partial log never looks complete.
    pub fn render(&self, last: Option<usize>) -> String {
        let mut lines = Vec::new();
        for r in &self.records {
            let stamp = format!("[{:5}.{:06}]", r.ts_nsec / 1_000_000_000, r.ts_nsec % 1_000_000_000 / 1000);
            let text = r.text.strip_suffix('\n').unwrap_or(&r.text);
            for line in text.split('\n') {
                lines.push(if line.is_empty() { stamp.clone() } else { format!("{stamp} {line}") });
            }
        }
        let skip = last.map_or(0, |n| lines.len().saturating_sub(n));
        let mut out = String::new();
        for line in &lines[skip..] {
            out.push_str(line);
            out.push('\n');
        }
        for p in &self.problems {
            out.push_str("dmesg: ");
            out.push_str(p);
            out.push('\n');
        }
        out
    }
}

/// Record text as we show it: see [`Record::text`].
fn clean_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reading: a byte budget over `Memory`, and arrays read in chunks.

/// Why a read inside a walk failed.
enum Fetch {
    Unreadable {
        addr: u64,
        why: MemError,
    },
    Cap,
    /// The walk computed an offset outside its array: a bug or a layout we failed to check.
    Outside {
        off: u64,
        len: u64,
    },
}

impl Fetch {
    /// The sentence for [`KernelLog::problems`] when this ends a walk.
    /// `lost`: how many descriptors the walk did not reach, when it knows.
    fn stopped(&self, what: &str, lost: Option<u64>) -> String {
        let lost = lost.map_or(String::new(), |n| format!("; {n} descriptors not read (this one and older)"));
        match self {
            Fetch::Unreadable { addr, why } => format!("stopped at {addr:#x} reading {what}: {why}{lost}"),
            Fetch::Cap => {
                format!(
                    "stopped reading {what}: the {} MiB read limit was reached{lost}",
                    MAX_READ_BYTES >> 20
                )
            }
            Fetch::Outside { off, len } => {
                format!("stopped reading {what}: offset {off:#x} (+{len:#x}) lies outside its array{lost}")
            }
        }
    }

    fn into_error(self, what: &str, addr: u64) -> PrintkError {
        let what = what.to_string();
        match self {
            Fetch::Unreadable { addr, why } => PrintkError::Unreadable { what, addr, source: why },
            Fetch::Cap => PrintkError::ReadLimit { what, addr },
            Fetch::Outside { .. } => PrintkError::OutsideArray { what, addr },
        }
    }
}

/// [`Memory`] with a byte budget, and the arrays the walk reads ahead.
struct Reader<'a> {
    ra: ReadAhead<'a>,
    cap: u64,
}

impl Reader<'_> {
    /// Fails once reading `n` more bytes from memory would pass the budget.
    fn spend(&self, n: u64) -> Result<(), Fetch> {
        if self.ra.bytes_read().saturating_add(n) > self.cap {
            return Err(Fetch::Cap);
        }
        Ok(())
    }

    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fetch> {
        if !self.ra.covers(addr, buf.len()) {
            self.spend(buf.len() as u64)?;
        }
        self.ra.read(addr, buf).map_err(|e| match self.ra.hole_in(addr, buf.len()) {
            Some((addr, why)) => Fetch::Unreadable { addr, why: why.clone() },
            None => Fetch::Unreadable { addr, why: e },
        })
    }

    /// A small item read whole, as a top-level error if it fails.
    fn bytes(&mut self, addr: u64, len: u64, what: &str) -> Result<Vec<u8>, PrintkError> {
        let mut b = vec![0u8; len as usize];
        self.read(addr, &mut b).map_err(|f| f.into_error(what, addr))?;
        Ok(b)
    }

    fn uint(&mut self, addr: u64, size: u64, what: &str) -> Result<u64, PrintkError> {
        Ok(le(&self.bytes(addr, size, what)?, 0, size))
    }
}

/// The little-endian unsigned integer of `size` bytes at `off` in `b`; 0 past the end (the
/// callers check their offsets against the struct size first).
fn le(b: &[u8], off: u64, size: u64) -> u64 {
    let mut v = [0u8; 8];
    let n = size.min(8) as usize;
    if let Some(s) = (off as usize).checked_add(n).and_then(|end| b.get(off as usize..end)) {
        v[..n].copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

/// An array in kernel memory (descriptors, infos, the text ring), read ahead [`CHUNK`] by
/// chunk on first use. A chunk that fails as a whole is read again page by page, so that one
/// missing page costs only the records on it.
#[derive(Clone, Copy)]
struct Region {
    base: u64,
    len: u64,
}

impl Region {
    fn new(base: u64, len: u64) -> Self {
        Self { base, len }
    }

    fn get(&mut self, rd: &mut Reader, off: u64, len: u64) -> Result<Vec<u8>, Fetch> {
        let end = off.checked_add(len).filter(|&e| e <= self.len).ok_or(Fetch::Outside { off, len })?;
        let mut ci = off / CHUNK;
        while ci * CHUNK < end {
            let (start, n) = (self.base + ci * CHUNK, CHUNK.min(self.len - ci * CHUNK));
            if !rd.ra.covers(start, n as usize) {
                rd.spend(n)?;
                rd.ra.fetch_pages(start, n as usize);
            }
            ci += 1;
        }
        let mut out = vec![0u8; len as usize];
        rd.read(self.base + off, &mut out)?;
        Ok(out)
    }
}

/// Counts of skipped records by reason, each with its first example, so that a thousand bad
/// records make one problem line, not a thousand.
#[derive(Default)]
struct Tally(Vec<(&'static str, &'static str, u64, String)>);

impl Tally {
    fn add(&mut self, one: &'static str, many: &'static str, example: impl FnOnce() -> String) {
        match self.0.iter_mut().find(|t| t.0 == one) {
            Some(t) => t.2 += 1,
            None => self.0.push((one, many, 1, example())),
        }
    }

    fn into_problems(self, problems: &mut Vec<String>) {
        for (one, many, n, example) in self.0 {
            let what = if n == 1 { one } else { many };
            problems.push(format!("skipped {n} {what} (e.g. {example})"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layout helpers.

fn offset(types: &dyn TypeInfo, ty: &str, field: &str) -> Result<u64, PrintkError> {
    types
        .member(ty, field)
        .map(|m| m.offset)
        .ok_or_else(|| PrintkError::MissingOffset { field: format!("{ty}.{field}"), origin: types.source() })
}

fn size(types: &dyn TypeInfo, ty: &str) -> Result<u64, PrintkError> {
    let s = types
        .size_of(ty)
        .ok_or_else(|| PrintkError::MissingSize { ty: ty.to_string(), origin: types.source() })?;
    if s == 0 || s > MAX_STRUCT {
        return Err(PrintkError::BadLayout {
            origin: types.source(),
            why: format!("struct {ty} has size {s}"),
        });
    }
    Ok(s)
}

/// Checks that fields of `width` bytes at `offs` fit in a struct of `size` bytes.
fn fits(types: &dyn TypeInfo, ty: &str, size: u64, fields: &[(&str, u64, u64)]) -> Result<(), PrintkError> {
    for &(name, off, width) in fields {
        if off.checked_add(width).is_none_or(|e| e > size) {
            return Err(PrintkError::BadLayout {
                origin: types.source(),
                why: format!("{ty}.{name} at offset {off} (+{width}) lies outside its {size}-byte struct"),
            });
        }
    }
    Ok(())
}

/// Where the syslog level is: `(byte offset, bytes to read, first bit, width)`.
#[derive(Clone, Copy)]
struct LevelField {
    offset: u64,
    bytes: u64,
    shift: u32,
    width: u32,
}

impl LevelField {
    /// The `level:3` bitfield of `ty` from the layout (BTF gives it), else the byte after
    /// `facility` (`default_offset`), bits 5–7: `u8 flags:5; u8 level:3;` in both
    /// `printk_info` and `printk_log`, unchanged since 3.5. VMCOREINFO does not export it.
    fn find(types: &dyn TypeInfo, ty: &str, default_offset: u64, notes: &mut Vec<String>) -> Self {
        if let Some(m) = types.member(ty, "level") {
            let (shift, width) = m.bitfield.unwrap_or((0, 8));
            if width > 0 && width <= 8 && (shift + width) as u64 <= m.size.clamp(1, 8) * 8 {
                return Self { offset: m.offset, bytes: m.size.clamp(1, 8), shift, width };
            }
        }
        notes.push(format!("{ty}.level assumed at byte {default_offset}, bits 5-7"));
        Self { offset: default_offset, bytes: 1, shift: 5, width: 3 }
    }

    fn get(&self, b: &[u8]) -> u8 {
        ((le(b, self.offset, self.bytes) >> self.shift) & ((1 << self.width) - 1)) as u8
    }
}

fn describe_layout(types: &dyn TypeInfo, notes: &[String]) -> String {
    let mut s = format!("offsets from {}", types.source());
    if !notes.is_empty() {
        s.push_str("; ");
        s.push_str(&notes.join("; "));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The printk ring buffer (Linux 5.10+), kernel/printk/printk_ringbuffer.h.

/// `state_var`: the descriptor state in the top 2 bits of an `unsigned long`, the id below.
const DESC_FLAGS_SHIFT: u32 = 62;
const DESC_ID_MASK: u64 = (1 << DESC_FLAGS_SHIFT) - 1;
const DESC_RESERVED: u64 = 0;
const DESC_COMMITTED: u64 = 1;
const DESC_FINALIZED: u64 = 2;
/// Data-less records: both lpos odd. `NO_LPOS` is a record with no text, anything else odd
/// (`FAILED_LPOS`) a record whose text could not be stored.
const NO_LPOS: u64 = 0x3;
/// Data blocks start with the `unsigned long` id of their descriptor.
const ID_SIZE: u64 = 8;

struct PrbLayout {
    desc_ring: u64,
    text_ring: u64,
    count_bits: u64,
    descs: u64,
    infos: u64,
    head_id: u64,
    tail_id: u64,
    desc_size: u64,
    state_var: u64,
    lpos_begin: u64,
    lpos_next: u64,
    info_size: u64,
    seq: u64,
    ts_nsec: u64,
    text_len: u64,
    level: LevelField,
    size_bits: u64,
    data: u64,
    head_lpos: u64,
    tail_lpos: u64,
    /// How many bytes of `struct printk_ringbuffer` to read to have every field above.
    rb_span: u64,
}

impl PrbLayout {
    fn new(types: &dyn TypeInfo, notes: &mut Vec<String>) -> Result<Self, PrintkError> {
        let o = |ty, f| offset(types, ty, f);
        let blk = o("prb_desc", "text_blk_lpos")?;
        let text_len = o("printk_info", "text_len")?;
        let l = Self {
            desc_ring: o("printk_ringbuffer", "desc_ring")?,
            text_ring: o("printk_ringbuffer", "text_data_ring")?,
            count_bits: o("prb_desc_ring", "count_bits")?,
            descs: o("prb_desc_ring", "descs")?,
            infos: o("prb_desc_ring", "infos")?,
            head_id: o("prb_desc_ring", "head_id")?,
            tail_id: o("prb_desc_ring", "tail_id")?,
            desc_size: size(types, "prb_desc")?,
            state_var: o("prb_desc", "state_var")?,
            lpos_begin: blk.saturating_add(o("prb_data_blk_lpos", "begin")?),
            lpos_next: blk.saturating_add(o("prb_data_blk_lpos", "next")?),
            info_size: size(types, "printk_info")?,
            seq: o("printk_info", "seq")?,
            ts_nsec: o("printk_info", "ts_nsec")?,
            text_len,
            level: LevelField::find(types, "printk_info", text_len.saturating_add(3), notes),
            size_bits: o("prb_data_ring", "size_bits")?,
            data: o("prb_data_ring", "data")?,
            head_lpos: o("prb_data_ring", "head_lpos")?,
            tail_lpos: o("prb_data_ring", "tail_lpos")?,
            rb_span: 0,
        };
        fits(
            types,
            "prb_desc",
            l.desc_size,
            &[
                ("state_var", l.state_var, 8),
                ("text_blk_lpos.begin", l.lpos_begin, 8),
                ("text_blk_lpos.next", l.lpos_next, 8),
            ],
        )?;
        fits(
            types,
            "printk_info",
            l.info_size,
            &[
                ("seq", l.seq, 8),
                ("ts_nsec", l.ts_nsec, 8),
                ("text_len", l.text_len, 2),
                ("level", l.level.offset, l.level.bytes),
            ],
        )?;
        let ring_fields = [
            l.desc_ring.saturating_add(l.count_bits.max(l.descs).max(l.infos).max(l.head_id).max(l.tail_id)),
            l.text_ring.saturating_add(l.size_bits.max(l.data).max(l.head_lpos).max(l.tail_lpos)),
        ];
        let rb_span = ring_fields[0].max(ring_fields[1]).saturating_add(8);
        if rb_span > MAX_STRUCT {
            return Err(PrintkError::BadLayout {
                origin: types.source(),
                why: format!("struct printk_ringbuffer fields reach offset {rb_span}"),
            });
        }
        Ok(Self { rb_span, ..l })
    }
}

fn read_prb(rd: &mut Reader, prb_sym: u64, types: &dyn TypeInfo) -> Result<KernelLog, PrintkError> {
    let mut notes = Vec::new();
    let l = PrbLayout::new(types, &mut notes)?;
    let rb = rd.uint(prb_sym, 8, "the `prb` pointer")?;
    let h = rd.bytes(rb, l.rb_span, "struct printk_ringbuffer (*prb)")?;
    let dr = |f: u64| le(&h, l.desc_ring + f, 8);
    let tr = |f: u64| le(&h, l.text_ring + f, 8);
    let count_bits = dr(l.count_bits) as u32;
    let size_bits = tr(l.size_bits) as u32;
    let corrupt =
        |why: String| PrintkError::Corrupt { what: "struct printk_ringbuffer (*prb)".into(), addr: rb, why };
    if count_bits > MAX_COUNT_BITS {
        return Err(corrupt(format!("desc_ring.count_bits is {count_bits}, above {MAX_COUNT_BITS}")));
    }
    if !(3..=MAX_SIZE_BITS).contains(&size_bits) {
        return Err(corrupt(format!("text_data_ring.size_bits is {size_bits}, not in 3..={MAX_SIZE_BITS}")));
    }
    let count = 1u64 << count_bits;
    let ring_size = 1u64 << size_bits;
    let (descs_at, infos_at, data_at) = (dr(l.descs), dr(l.infos), tr(l.data));
    let head = dr(l.head_id) & DESC_ID_MASK;
    let tail = dr(l.tail_id) & DESC_ID_MASK;

    let mut problems = Vec::new();
    // Live descriptors are tail..=head; more than the ring holds means one of them is garbage,
    // and the newest `count` are the ones worth trying.
    let span = (head.wrapping_sub(tail) & DESC_ID_MASK) + 1;
    let mut n = span;
    if span > count {
        problems.push(format!(
            "head_id {head:#x} and tail_id {tail:#x} span more than the {count} descriptors of the ring; \
             reading the newest {count}"
        ));
        n = count;
    }
    // Keep half of the read budget for the text: with a huge ring, the newest records matter.
    let per_desc = l.desc_size + l.info_size;
    let fit = (MAX_READ_BYTES / 2) / per_desc;
    if n > fit {
        problems.push(format!(
            "{n} descriptors exceed the {} MiB read limit; reading the newest {fit}",
            MAX_READ_BYTES >> 20
        ));
        n = fit;
    }

    let mut descs = Region::new(descs_at, count * l.desc_size);
    let mut infos = Region::new(infos_at, count * l.info_size);
    let mut data = Region::new(data_at, ring_size);
    let mut tally = Tally::default();
    let mut truncated = 0u64;
    let mut records = Vec::new();
    let mask = count - 1;
    // Newest first, so that if a read fails or the budget runs out, what we have is the end
    // of the log, which is what one reads after a crash.
    for k in 0..n {
        let id = head.wrapping_sub(k) & DESC_ID_MASK;
        let idx = id & mask;
        let desc_addr = descs_at.wrapping_add(idx * l.desc_size);
        let d = match descs.get(rd, idx * l.desc_size, l.desc_size) {
            Ok(d) => d,
            Err(f) => {
                problems.push(f.stopped(&format!("descriptor {id:#x}"), Some(n - k)));
                break;
            }
        };
        let sv = le(&d, l.state_var, 8);
        if sv & DESC_ID_MASK != id {
            tally.add(
                "descriptor whose id does not match (reused or overwritten)",
                "descriptors whose id does not match (reused or overwritten)",
                || format!("id {id:#x} at {desc_addr:#x} holds id {:#x}", sv & DESC_ID_MASK),
            );
            continue;
        }
        match sv >> DESC_FLAGS_SHIFT {
            DESC_COMMITTED | DESC_FINALIZED => {}
            DESC_RESERVED => {
                tally.add(
                    "record not yet committed (a writer had reserved it)",
                    "records not yet committed (a writer had reserved them)",
                    || format!("id {id:#x} at {desc_addr:#x}"),
                );
                continue;
            }
            _ if id == tail => {
                // The tail may be a freed descriptor the next writer will push past; in a
                // young ring it is the bootstrap descriptor. Nothing is lost.
                continue;
            }
            _ => {
                tally.add("reusable (freed) descriptor", "reusable (freed) descriptors", || {
                    format!("id {id:#x} at {desc_addr:#x}")
                });
                continue;
            }
        }
        let info = match infos.get(rd, idx * l.info_size, l.info_size) {
            Ok(i) => i,
            Err(f) => {
                problems.push(f.stopped(&format!("the printk_info of id {id:#x}"), Some(n - k)));
                break;
            }
        };
        let seq = le(&info, l.seq, 8);
        if seq & mask != idx {
            tally.add(
                "record whose sequence number does not match its id",
                "records whose sequence number does not match their id",
                || format!("id {id:#x} has seq {seq}"),
            );
            continue;
        }
        let text_len = le(&info, l.text_len, 2);
        let (begin, next) = (le(&d, l.lpos_begin, 8), le(&d, l.lpos_next, 8));
        let bytes = if begin & 1 == 1 && next & 1 == 1 {
            if begin != NO_LPOS || next != NO_LPOS {
                tally.add(
                    "record lost (the kernel could not store its text)",
                    "records lost (the kernel could not store their text)",
                    || format!("seq {seq}"),
                );
                continue;
            }
            Vec::new()
        } else {
            // A block lies within one wrap of the ring, or ends in the next one, in which case
            // its data was written at the start of the ring.
            let wraps = |lpos: u64| lpos >> size_bits;
            let (at, size) = if wraps(begin) == wraps(next) && begin < next {
                (begin & (ring_size - 1), next - begin)
            } else if wraps(begin.wrapping_add(ring_size)) == wraps(next) {
                (0, next & (ring_size - 1))
            } else {
                (0, 0)
            };
            if begin % ID_SIZE != 0 || next % ID_SIZE != 0 || size < ID_SIZE {
                tally.add(
                    "record with an invalid data block position",
                    "records with invalid data block positions",
                    || format!("seq {seq}: begin {begin:#x}, next {next:#x}"),
                );
                continue;
            }
            let want = text_len.min(size - ID_SIZE);
            if want < text_len {
                truncated += 1;
            }
            match data.get(rd, at, ID_SIZE + want) {
                Ok(b) if le(&b, 0, 8) == id => b[ID_SIZE as usize..].to_vec(),
                Ok(b) => {
                    tally.add(
                        "record whose text was overwritten",
                        "records whose text was overwritten",
                        || {
                            format!(
                                "seq {seq}: block at {:#x} belongs to id {:#x}",
                                data_at + at,
                                le(&b, 0, 8)
                            )
                        },
                    );
                    continue;
                }
                Err(Fetch::Unreadable { addr, why }) => {
                    tally.add("record whose text is unreadable", "records whose text is unreadable", || {
                        format!("seq {seq} at {addr:#x}: {why}")
                    });
                    continue;
                }
                Err(f) => {
                    problems.push(f.stopped(&format!("the text of seq {seq}"), Some(n - k)));
                    break;
                }
            }
        };
        records.push(Record {
            seq,
            ts_nsec: le(&info, l.ts_nsec, 8),
            level: Some(l.level.get(&info)),
            text: clean_text(&bytes),
        });
    }
    records.reverse();
    if truncated > 0 {
        problems.push(format!("{truncated} records have less text in their data block than text_len says"));
    }
    tally.into_problems(&mut problems);
    Ok(KernelLog { records, format: "printk ring buffer", layout: describe_layout(types, &notes), problems })
}

// ---------------------------------------------------------------------------------------------
// log_buf (Linux 3.5 to 5.9), kernel/printk/printk.c.

/// `struct printk_log` as it has been since 3.5 (x86-64, without `CONFIG_PRINTK_CALLER`):
/// `u64 ts_nsec; u16 len; u16 text_len; u16 dict_len; u8 facility; u8 flags:5, level:3;`.
const PRINTK_LOG_DEFAULTS: [(&str, u64); 4] =
    [("ts_nsec", 0), ("len", 8), ("text_len", 10), ("dict_len", 12)];
const PRINTK_LOG_SIZE: u64 = 16;
/// Kernels cap `log_buf_len` at 2 GiB; anything larger is garbage.
const MAX_LOG_BUF_LEN: u64 = 1 << 31;

fn read_log_buf(
    rd: &mut Reader,
    log_buf_sym: u64,
    syms: &dyn Symbols,
    types: &dyn TypeInfo,
) -> Result<KernelLog, PrintkError> {
    let mut notes = Vec::new();
    let mut defaulted = Vec::new();
    let mut field = |name: &str, default: u64| match types.member("printk_log", name) {
        Some(m) => m.offset,
        None => {
            defaulted.push(name.to_string());
            default
        }
    };
    let [ts_off, len_off, text_len_off, dict_len_off] = PRINTK_LOG_DEFAULTS.map(|(n, d)| field(n, d));
    let hdr = match types.size_of("printk_log") {
        Some(s) if s > 0 && s <= MAX_STRUCT => s,
        _ => {
            defaulted.push("size".to_string());
            PRINTK_LOG_SIZE
        }
    };
    if !defaulted.is_empty() {
        notes.push(format!(
            "struct printk_log {} not in the layout: using the 3.5-5.9 defaults",
            defaulted.join(", ")
        ));
    }
    let level = LevelField::find(types, "printk_log", 15, &mut notes);
    fits(
        types,
        "printk_log",
        hdr,
        &[
            ("ts_nsec", ts_off, 8),
            ("len", len_off, 2),
            ("text_len", text_len_off, 2),
            ("dict_len", dict_len_off, 2),
            ("level", level.offset, level.bytes),
        ],
    )?;

    let need = |name: &str| {
        syms.address(name).ok_or_else(|| PrintkError::Corrupt {
            what: "symbol table".into(),
            addr: log_buf_sym,
            why: format!("`log_buf` is there but `{name}` is not"),
        })
    };
    let buf = rd.uint(log_buf_sym, 8, "the `log_buf` pointer")?;
    let buf_len = rd.uint(need("log_buf_len")?, 4, "log_buf_len")?;
    let first = rd.uint(need("log_first_idx")?, 4, "log_first_idx")?;
    let next = rd.uint(need("log_next_idx")?, 4, "log_next_idx")?;
    let mut problems = Vec::new();
    let first_seq = match syms.address("log_first_seq") {
        Some(a) => rd.uint(a, 8, "log_first_seq")?,
        None => {
            problems.push("no `log_first_seq` symbol: sequence numbers count from 0".to_string());
            0
        }
    };
    let corrupt = |why: String| PrintkError::Corrupt { what: "log_buf".into(), addr: buf, why };
    if buf_len < hdr || buf_len > MAX_LOG_BUF_LEN {
        return Err(corrupt(format!("log_buf_len is {buf_len}")));
    }
    if first >= buf_len || next >= buf_len {
        return Err(corrupt(format!(
            "log_first_idx {first:#x} or log_next_idx {next:#x} is outside the {buf_len}-byte buffer"
        )));
    }

    let mut region = Region::new(buf, buf_len);
    let mut records = Vec::new();
    let mut skipped_dict = false;
    let mut idx = first;
    let mut wrapped = false;
    // Every record takes at least a header, so more steps than this is a loop.
    let max_steps = buf_len / hdr + 2;
    let mut steps = 0;
    while idx != next {
        steps += 1;
        let at = buf.wrapping_add(idx);
        let stop = |why: String| format!("stopped at {at:#x} (log_buf offset {idx:#x}): {why}");
        if steps > max_steps {
            problems.push(stop(format!("still no log_next_idx {next:#x} after {max_steps} records")));
            break;
        }
        if idx + hdr > buf_len {
            problems.push(stop("a record header would run past the end of the buffer".into()));
            break;
        }
        let h = match region.get(rd, idx, hdr) {
            Ok(h) => h,
            Err(f) => {
                problems.push(f.stopped("log_buf", None));
                break;
            }
        };
        let len = le(&h, len_off, 2);
        if len == 0 {
            // The end-of-buffer marker: the next record is at the start.
            if wrapped {
                problems.push(stop("a second end-of-buffer marker (len 0)".into()));
                break;
            }
            wrapped = true;
            idx = 0;
            continue;
        }
        let text_len = le(&h, text_len_off, 2);
        let dict_len = le(&h, dict_len_off, 2);
        if len < hdr || idx + len > buf_len || hdr + text_len + dict_len > len {
            problems.push(stop(format!(
                "record length {len} (text {text_len}, dict {dict_len}) does not fit the header or the buffer"
            )));
            break;
        }
        let text = match region.get(rd, idx + hdr, text_len) {
            Ok(t) => t,
            Err(f) => {
                problems.push(f.stopped("log_buf", None));
                break;
            }
        };
        skipped_dict |= dict_len > 0;
        records.push(Record {
            seq: first_seq.wrapping_add(records.len() as u64),
            ts_nsec: le(&h, ts_off, 8),
            level: Some(level.get(&h)),
            text: clean_text(&text),
        });
        // The kernel always leaves room for an end marker, so a record ending exactly at the
        // end of the buffer is a corrupt one: the walk stops at the header check above.
        idx += len;
    }
    if skipped_dict {
        notes.push("dictionaries (SUBSYSTEM=, DEVICE=) not shown".into());
    }
    Ok(KernelLog { records, format: "log_buf", layout: describe_layout(types, &notes), problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::PhysAddr;
    use crate::linux::TypeMap;
    use crate::mmu::MemError;
    use crate::phys::PhysError;
    use std::collections::{HashMap, VecDeque};

    const BASE: u64 = 0xffff_8880_0100_0000;
    const PRB_VAR: u64 = BASE;
    const RB: u64 = BASE + 0x100;
    const DESCS: u64 = BASE + 0x1000;
    const INFOS: u64 = BASE + 0x10000;
    const DATA: u64 = BASE + 0x40000;
    const LOG_VARS: u64 = BASE + 0x200;
    const LOG_BUF: u64 = BASE + 0x60000;

    /// Kernel memory as one buffer at [`BASE`], with holes, counting reads.
    struct TestMem {
        bytes: Vec<u8>,
        holes: Vec<(u64, u64)>,
        reads: u64,
        read_bytes: u64,
    }

    impl TestMem {
        fn new() -> Self {
            Self { bytes: vec![0; 0x80000], holes: Vec::new(), reads: 0, read_bytes: 0 }
        }
        fn write(&mut self, addr: u64, b: &[u8]) {
            let at = (addr - BASE) as usize;
            self.bytes[at..at + b.len()].copy_from_slice(b);
        }
        fn w64(&mut self, addr: u64, v: u64) {
            self.write(addr, &v.to_le_bytes());
        }
    }

    impl Memory for TestMem {
        fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            self.reads += 1;
            self.read_bytes += buf.len() as u64;
            let end = addr.wrapping_add(buf.len() as u64);
            let bad = addr < BASE
                || end < addr
                || end > BASE + self.bytes.len() as u64
                || self.holes.iter().any(|&(s, e)| s < end && e > addr);
            if bad {
                return Err(MemError::Phys(PhysError::NotRam {
                    addr: PhysAddr(addr),
                    len: buf.len() as u64,
                    source_name: "test".into(),
                }));
            }
            let at = (addr - BASE) as usize;
            buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
            Ok(())
        }
    }

    struct Syms(HashMap<&'static str, u64>);

    impl Symbols for Syms {
        fn address(&self, name: &str) -> Option<u64> {
            self.0.get(name).copied()
        }
    }

    /// Linux 6.1 x86-64, as its VMCOREINFO gives it.
    fn prb_types() -> TypeMap {
        let mut t = TypeMap::new("test VMCOREINFO");
        for (ty, f, o) in [
            ("printk_ringbuffer", "desc_ring", 0),
            ("printk_ringbuffer", "text_data_ring", 48),
            ("prb_desc_ring", "count_bits", 0),
            ("prb_desc_ring", "descs", 8),
            ("prb_desc_ring", "infos", 16),
            ("prb_desc_ring", "head_id", 24),
            ("prb_desc_ring", "tail_id", 32),
            ("prb_desc", "state_var", 0),
            ("prb_desc", "text_blk_lpos", 8),
            ("prb_data_blk_lpos", "begin", 0),
            ("prb_data_blk_lpos", "next", 8),
            ("printk_info", "seq", 0),
            ("printk_info", "ts_nsec", 8),
            ("printk_info", "text_len", 16),
            ("printk_info", "caller_id", 20),
            ("prb_data_ring", "size_bits", 0),
            ("prb_data_ring", "data", 8),
            ("prb_data_ring", "head_lpos", 16),
            ("prb_data_ring", "tail_lpos", 24),
        ] {
            t.insert_member(ty, f, o, 0);
        }
        t.insert_size("prb_desc", 24);
        t.insert_size("printk_info", 88);
        t
    }

    /// A printk ring buffer written the way the kernel writes it (bootstrap descriptor, ids
    /// and seqs advancing by whole wraps, wrapping data blocks stored at the ring start).
    struct PrbSim {
        mem: TestMem,
        count_bits: u32,
        size_bits: u32,
        head_id: u64,
        tail_id: u64,
        head_lpos: u64,
        tail_lpos: u64,
        live: VecDeque<(u64, u64, u64)>,
        wrapping_blocks: u32,
    }

    impl PrbSim {
        fn new(count_bits: u32, size_bits: u32) -> Self {
            let count = 1u64 << count_bits;
            let desc0 = 0u64.wrapping_sub(count + 1) & DESC_ID_MASK;
            let blk0 = 0u64.wrapping_sub(1 << size_bits);
            let mut s = Self {
                mem: TestMem::new(),
                count_bits,
                size_bits,
                head_id: desc0,
                tail_id: desc0,
                head_lpos: blk0,
                tail_lpos: blk0,
                live: VecDeque::new(),
                wrapping_blocks: 0,
            };
            s.mem.w64(PRB_VAR, RB);
            s.write_desc(desc0, 3 << DESC_FLAGS_SHIFT | desc0, 1, 1);
            s.mem.w64(INFOS, 0u64.wrapping_sub(count));
            s.sync();
            s
        }
        fn count(&self) -> u64 {
            1 << self.count_bits
        }
        fn desc_addr(&self, id: u64) -> u64 {
            DESCS + (id & (self.count() - 1)) * 24
        }
        fn info_addr(&self, id: u64) -> u64 {
            INFOS + (id & (self.count() - 1)) * 88
        }
        fn write_desc(&mut self, id: u64, sv: u64, begin: u64, next: u64) {
            let a = self.desc_addr(id);
            self.mem.w64(a, sv);
            self.mem.w64(a + 8, begin);
            self.mem.w64(a + 16, next);
        }
        fn sync(&mut self) {
            let m = &mut self.mem;
            m.write(RB, &self.count_bits.to_le_bytes());
            m.w64(RB + 8, DESCS);
            m.w64(RB + 16, INFOS);
            m.w64(RB + 24, self.head_id);
            m.w64(RB + 32, self.tail_id);
            m.write(RB + 48, &self.size_bits.to_le_bytes());
            m.w64(RB + 56, DATA);
            m.w64(RB + 64, self.head_lpos);
            m.w64(RB + 72, self.tail_lpos);
        }
        fn evict(&mut self) {
            match self.live.front() {
                Some(&(id, _, next)) if id == self.tail_id => {
                    self.live.pop_front();
                    let a = self.desc_addr(id);
                    self.mem.w64(a, 3 << DESC_FLAGS_SHIFT | id);
                    if next & 1 == 0 {
                        self.tail_lpos = next;
                    }
                }
                _ => {}
            }
            self.tail_id = (self.tail_id + 1) & DESC_ID_MASK;
        }
        /// Writes a record in `state` (2 finalized, 0 reserved); returns its id.
        fn add(&mut self, text: &str, ts: u64, level: u8, state: u64) -> u64 {
            let count = self.count();
            let size = 1u64 << self.size_bits;
            let id = (self.head_id + 1) & DESC_ID_MASK;
            while id.wrapping_sub(self.tail_id) & DESC_ID_MASK >= count {
                self.evict();
            }
            let (begin, next) = if text.is_empty() {
                (NO_LPOS, NO_LPOS)
            } else {
                let blk = (8 + text.len() as u64).next_multiple_of(8);
                let begin = self.head_lpos;
                let mut next = begin.wrapping_add(blk);
                if begin >> self.size_bits != next >> self.size_bits {
                    next = (next >> self.size_bits << self.size_bits).wrapping_add(blk);
                }
                while next.wrapping_sub(self.tail_lpos) > size && !self.live.is_empty() {
                    self.evict();
                }
                if begin >> self.size_bits != next >> self.size_bits {
                    self.wrapping_blocks += 1;
                    self.mem.w64(DATA + (begin & (size - 1)), id);
                    self.mem.w64(DATA, id);
                    self.mem.write(DATA + 8, text.as_bytes());
                } else {
                    self.mem.w64(DATA + (begin & (size - 1)), id);
                    self.mem.write(DATA + (begin & (size - 1)) + 8, text.as_bytes());
                }
                self.head_lpos = next;
                (begin, next)
            };
            let ia = self.info_addr(id);
            let idx = id & (count - 1);
            let old = self.mem.bytes[(ia - BASE) as usize..][..8].try_into().map(u64::from_le_bytes).unwrap();
            let seq = if old == 0 && idx != 0 { idx } else { old.wrapping_add(count) };
            self.mem.write(ia, &[0; 88]);
            self.mem.w64(ia, seq);
            self.mem.w64(ia + 8, ts);
            self.mem.write(ia + 16, &(text.len() as u16).to_le_bytes());
            self.mem.write(ia + 19, &[level << 5]);
            self.write_desc(id, state << DESC_FLAGS_SHIFT | id, begin, next);
            self.head_id = id;
            self.live.push_back((id, begin, next));
            self.sync();
            id
        }
        fn push(&mut self, text: &str, ts: u64) -> u64 {
            self.add(text, ts, 6, DESC_FINALIZED)
        }
        fn syms(&self) -> Syms {
            Syms(HashMap::from([("prb", PRB_VAR), ("log_buf", LOG_VARS)]))
        }
        fn read(&mut self) -> Result<KernelLog, PrintkError> {
            let syms = self.syms();
            read_log(&mut self.mem, &syms, &prb_types())
        }
    }

    fn texts(log: &KernelLog) -> Vec<&str> {
        log.records.iter().map(|r| r.text.as_str()).collect()
    }

    #[test]
    fn normal_records_in_few_reads() {
        let mut sim = PrbSim::new(4, 10);
        sim.push("Linux version 6.1.0", 0);
        sim.add("second\x1b[31m red", 1_234_567_000, 3, DESC_FINALIZED);
        sim.push("", 2_000_000_000);
        sim.add("last, committed only", 3_000_000_000, 4, DESC_COMMITTED);
        let log = sim.read().unwrap();
        assert_eq!(log.format, "printk ring buffer");
        assert_eq!(texts(&log), ["Linux version 6.1.0", "second\\x1b[31m red", "", "last, committed only"]);
        assert_eq!(log.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(log.records[1].level, Some(3));
        assert_eq!(log.records[1].ts_nsec, 1_234_567_000);
        assert!(log.problems.is_empty(), "{:?}", log.problems);
        assert!(log.layout.contains("printk_info.level assumed"), "{}", log.layout);
        // The pointer, the header, then one read per array.
        assert!(sim.mem.reads <= 5, "{} reads", sim.mem.reads);
        assert_eq!(
            log.render(None),
            "[    0.000000] Linux version 6.1.0\n[    1.234567] second\\x1b[31m red\n[    2.000000]\n\
             [    3.000000] last, committed only\n"
        );
    }

    #[test]
    fn wrapped_data_blocks_and_a_wrapped_descriptor_ring() {
        let mut sim = PrbSim::new(4, 8);
        let all: Vec<String> =
            (0..40).map(|i| format!("message number {i} {}", "x".repeat(i % 13))).collect();
        for (i, t) in all.iter().enumerate() {
            sim.push(t, i as u64 * 1000);
        }
        assert!(sim.wrapping_blocks > 0, "the test must produce a wrapping block");
        let log = sim.read().unwrap();
        assert!(log.problems.is_empty(), "{:?}", log.problems);
        let got = texts(&log);
        assert!(got.len() >= 3, "{got:?}");
        let want: Vec<&str> = all[all.len() - got.len()..].iter().map(String::as_str).collect();
        assert_eq!(got, want);
        let seqs: Vec<u64> = log.records.iter().map(|r| r.seq).collect();
        assert_eq!(*seqs.last().unwrap(), 39);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }

    #[test]
    fn a_half_written_record_after_a_crash_is_skipped() {
        let mut sim = PrbSim::new(4, 10);
        sim.push("one", 1);
        sim.push("two", 2);
        let id = sim.add("thr", 3, 0, DESC_RESERVED);
        // The writer died before filling in the text length.
        sim.mem.write(sim.info_addr(id) + 16, &[0, 0]);
        let log = sim.read().unwrap();
        assert_eq!(texts(&log), ["one", "two"]);
        assert_eq!(log.problems.len(), 1, "{:?}", log.problems);
        assert!(log.problems[0].starts_with("skipped 1 record not yet committed"), "{:?}", log.problems);
        let text = log.render(None);
        assert!(
            text.ends_with(
                "dmesg: skipped 1 record not yet committed (a writer had reserved it) \
                 (e.g. id 0x3ffffffffffffff2 at 0xffff888001001030)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn descriptors_and_seqs_that_do_not_match_are_skipped() {
        let mut sim = PrbSim::new(4, 10);
        let ids: Vec<u64> = (0..5).map(|i| sim.push(&format!("r{i}"), i)).collect();
        // Record 1's descriptor was reused for a later id; record 3's info is from another wrap.
        let a = sim.desc_addr(ids[1]);
        sim.mem.w64(a, DESC_FINALIZED << DESC_FLAGS_SHIFT | (ids[1] + 16));
        sim.mem.w64(sim.info_addr(ids[3]), 3 + 5);
        let log = sim.read().unwrap();
        assert_eq!(texts(&log), ["r0", "r2", "r4"]);
        let p = log.problems.join("\n");
        assert!(p.contains("skipped 1 descriptor whose id does not match"), "{p}");
        assert!(p.contains("skipped 1 record whose sequence number does not match"), "{p}");
    }

    #[test]
    fn overwritten_text_and_bad_positions_are_skipped() {
        let mut sim = PrbSim::new(4, 10);
        let ids: Vec<u64> = (0..4).map(|i| sim.push(&format!("rec{i}"), i)).collect();
        // Record 1's block claims another id; record 2's positions are in unrelated wraps.
        let begin = sim.live[1].1;
        sim.mem.w64(DATA + (begin & 1023), 0x77);
        let a = sim.desc_addr(ids[2]);
        sim.mem.w64(a + 8, 0x10_0000);
        sim.mem.w64(a + 16, 0x8);
        let log = sim.read().unwrap();
        assert_eq!(texts(&log), ["rec0", "rec3"]);
        let p = log.problems.join("\n");
        assert!(p.contains("skipped 1 record whose text was overwritten"), "{p}");
        assert!(p.contains("skipped 1 record with an invalid data block position"), "{p}");
    }

    #[test]
    fn garbage_ring_sizes_are_refused() {
        let mut sim = PrbSim::new(4, 10);
        sim.push("x", 0);
        sim.mem.write(RB, &60u32.to_le_bytes());
        let e = sim.read().unwrap_err().to_string();
        assert!(e.contains("count_bits is 60"), "{e}");
        sim.mem.write(RB, &4u32.to_le_bytes());
        sim.mem.write(RB + 48, &31u32.to_le_bytes());
        let e = sim.read().unwrap_err().to_string();
        assert!(e.contains("size_bits is 31"), "{e}");
    }

    #[test]
    fn corrupt_head_and_tail_ids_are_bounded_by_the_ring() {
        let mut sim = PrbSim::new(4, 10);
        for i in 0..3 {
            sim.push(&format!("m{i}"), i);
        }
        // tail just after head: 2^62 - 1 descriptors apart.
        sim.mem.w64(RB + 32, sim.head_id + 1);
        let log = sim.read().unwrap();
        assert_eq!(texts(&log), ["m0", "m1", "m2"]);
        let p = log.problems.join("\n");
        assert!(p.contains("span more than the 16 descriptors"), "{p}");
        // Garbage everywhere: still bounded, no panic.
        let mut junk = PrbSim::new(4, 10);
        for (i, b) in junk.mem.bytes[0x1000..0x50000].iter_mut().enumerate() {
            *b = (i.wrapping_mul(2_654_435_761) >> 7) as u8;
        }
        let log = junk.read().unwrap();
        assert!(log.records.len() <= 16);
    }

    #[test]
    fn unreadable_memory_is_named() {
        let mut sim = PrbSim::new(4, 10);
        sim.push("a", 0);
        sim.push("b", 1);
        sim.mem.holes.push((DATA, DATA + 0x1000));
        let log = sim.read().unwrap();
        assert!(log.records.is_empty());
        let p = log.problems.join("\n");
        assert!(
            p.contains("skipped 2 records whose text is unreadable (e.g. seq 1 at 0xffff888001040010"),
            "{p}"
        );
        sim.mem.holes.push((DESCS, DESCS + 0x1000));
        let log = sim.read().unwrap();
        assert!(
            log.problems[0].ends_with("3 descriptors not read (this one and older)"),
            "{:?}",
            log.problems
        );
        assert!(
            log.problems[0]
                .starts_with("stopped at 0xffff888001001018 reading descriptor 0x3ffffffffffffff1: phys"),
            "{:?}",
            log.problems
        );
        sim.mem.w64(PRB_VAR, 0x1234);
        let e = sim.read().unwrap_err().to_string();
        assert!(e.starts_with("cannot read struct printk_ringbuffer (*prb) at 0x1234"), "{e}");
    }

    #[test]
    fn missing_symbols_and_offsets_are_named() {
        let mut mem = TestMem::new();
        let e = read_log(&mut mem, &Syms(HashMap::new()), &prb_types()).unwrap_err().to_string();
        assert!(e.contains("`prb`") && e.contains("`log_buf`"), "{e}");
        let mut t = prb_types();
        t.members.remove(&("prb_desc".to_string(), "state_var".to_string()));
        let e = read_log(&mut mem, &Syms(HashMap::from([("prb", PRB_VAR)])), &t).unwrap_err().to_string();
        assert!(e.contains("prb_desc.state_var") && e.contains("test VMCOREINFO"), "{e}");
    }

    /// `log_buf` written as Linux 3.5-5.9's `log_store` writes it.
    struct LogBufSim {
        mem: TestMem,
        len: u64,
        first: u64,
        next: u64,
        first_seq: u64,
        next_seq: u64,
        wraps: u32,
    }

    impl LogBufSim {
        fn new(len: u64) -> Self {
            let mut s =
                Self { mem: TestMem::new(), len, first: 0, next: 0, first_seq: 0, next_seq: 0, wraps: 0 };
            s.mem.w64(LOG_VARS, LOG_BUF);
            s.sync();
            s
        }
        fn rec_len(&self, idx: u64) -> u64 {
            let at = (LOG_BUF - BASE + idx) as usize + 8;
            u16::from_le_bytes([self.mem.bytes[at], self.mem.bytes[at + 1]]) as u64
        }
        fn has_space(&self, size: u64) -> bool {
            let free = if self.next > self.first || self.first_seq == self.next_seq {
                (self.len - self.next).max(self.first)
            } else {
                self.first - self.next
            };
            free >= size + 16
        }
        fn push(&mut self, text: &str, ts: u64, level: u8) {
            let size = (16 + text.len() as u64).next_multiple_of(8);
            while self.first_seq < self.next_seq && !self.has_space(size) {
                let l = self.rec_len(self.first);
                self.first = if l == 0 { self.rec_len(0) } else { self.first + l };
                self.first_seq += 1;
            }
            if self.next + size + 16 > self.len {
                self.mem.write(LOG_BUF + self.next, &[0; 16]);
                self.next = 0;
                self.wraps += 1;
            }
            let at = LOG_BUF + self.next;
            self.mem.w64(at, ts);
            self.mem.write(at + 8, &(size as u16).to_le_bytes());
            self.mem.write(at + 10, &(text.len() as u16).to_le_bytes());
            self.mem.write(at + 12, &[0, 0, 0, level << 5]);
            self.mem.write(at + 16, text.as_bytes());
            self.next += size;
            self.next_seq += 1;
            self.sync();
        }
        fn sync(&mut self) {
            let m = &mut self.mem;
            m.write(LOG_VARS + 8, &(self.len as u32).to_le_bytes());
            m.write(LOG_VARS + 16, &(self.first as u32).to_le_bytes());
            m.write(LOG_VARS + 24, &(self.next as u32).to_le_bytes());
            m.w64(LOG_VARS + 32, self.first_seq);
        }
        fn read(&mut self) -> Result<KernelLog, PrintkError> {
            let syms = Syms(HashMap::from([
                ("log_buf", LOG_VARS),
                ("log_buf_len", LOG_VARS + 8),
                ("log_first_idx", LOG_VARS + 16),
                ("log_next_idx", LOG_VARS + 24),
                ("log_first_seq", LOG_VARS + 32),
            ]));
            read_log(&mut self.mem, &syms, &TypeMap::new("empty test layout"))
        }
    }

    #[test]
    fn log_buf_with_a_wrap() {
        let mut sim = LogBufSim::new(256);
        let all: Vec<String> = (0..20).map(|i| format!("old-style {i}{}", "y".repeat(i % 7))).collect();
        for (i, t) in all.iter().enumerate() {
            sim.push(t, i as u64 * 1_000_000, (i % 8) as u8);
        }
        assert!(sim.wraps > 0);
        let log = sim.read().unwrap();
        assert_eq!(log.format, "log_buf");
        assert!(log.problems.is_empty(), "{:?}", log.problems);
        assert!(log.layout.contains("using the 3.5-5.9 defaults"), "{}", log.layout);
        let got = texts(&log);
        assert!(got.len() >= 3, "{got:?}");
        let want: Vec<&str> = all[all.len() - got.len()..].iter().map(String::as_str).collect();
        assert_eq!(got, want);
        let last = log.records.last().unwrap();
        assert_eq!((last.seq, last.level, last.ts_nsec), (19, Some(3), 19_000_000));
    }

    #[test]
    fn corrupt_log_buf_stops_with_a_reason() {
        let mut sim = LogBufSim::new(256);
        for i in 0..4 {
            sim.push(&format!("line {i}"), i, 6);
        }
        // The second record claims to run past the end of the buffer.
        let second = sim.rec_len(0);
        sim.mem.write(LOG_BUF + second + 8, &600u16.to_le_bytes());
        let log = sim.read().unwrap();
        assert_eq!(texts(&log), ["line 0"]);
        assert!(
            log.problems[0]
                .starts_with("stopped at 0xffff888001060018 (log_buf offset 0x18): record length 600"),
            "{:?}",
            log.problems
        );
        // A loop of end markers: the first record wraps to itself.
        sim.mem.write(LOG_BUF + 8, &[0, 0]);
        let log = sim.read().unwrap();
        assert!(log.records.is_empty());
        assert!(log.problems[0].contains("a second end-of-buffer marker"), "{:?}", log.problems);
        sim.mem.write(LOG_VARS + 8, &u32::MAX.to_le_bytes());
        let e = sim.read().unwrap_err().to_string();
        assert!(e.contains("log_buf_len is 4294967295"), "{e}");
    }

    #[test]
    fn render_last_lines_prefixes_every_line() {
        let log = KernelLog {
            records: vec![
                Record { seq: 0, ts_nsec: 5, level: Some(6), text: "first".into() },
                Record { seq: 1, ts_nsec: 12_345_678_901, level: Some(4), text: "a\nb\tc\nlast\n".into() },
            ],
            format: "printk ring buffer",
            layout: String::new(),
            problems: vec!["skipped 3 records not yet committed".into()],
        };
        assert_eq!(
            log.render(Some(2)),
            "[   12.345678] b\tc\n[   12.345678] last\ndmesg: skipped 3 records not yet committed\n"
        );
        assert_eq!(log.render(Some(100)).lines().count(), 5);
        assert_eq!(log.render(Some(0)), "dmesg: skipped 3 records not yet committed\n");
    }
}
