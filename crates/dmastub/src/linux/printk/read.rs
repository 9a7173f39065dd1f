//! Reading: a byte budget over `Memory`, arrays read ahead in chunks, skipped records
//! counted, and the layout helpers both formats share.

use super::*;

/// Why a read inside a walk failed.
pub(super) enum Fetch {
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
    pub(super) fn stopped(&self, what: &str, lost: Option<u64>) -> String {
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

    pub(super) fn into_error(self, what: &str, addr: u64) -> PrintkError {
        let what = what.to_string();
        match self {
            Fetch::Unreadable { addr, why } => PrintkError::Unreadable { what, addr, source: why },
            Fetch::Cap => PrintkError::ReadLimit { what, addr },
            Fetch::Outside { .. } => PrintkError::OutsideArray { what, addr },
        }
    }
}

/// [`Memory`] with a byte budget, and the arrays the walk reads ahead.
pub(super) struct Reader<'a> {
    ra: ReadAhead<'a>,
    cap: u64,
}

impl<'a> Reader<'a> {
    /// Reads through `mem`, at most [`MAX_READ_BYTES`].
    pub(super) fn new(mem: &'a mut dyn Memory) -> Self {
        Reader { ra: ReadAhead::new(mem), cap: MAX_READ_BYTES }
    }

    /// Fails once reading `n` more bytes from memory would pass the budget.
    pub(super) fn spend(&self, n: u64) -> Result<(), Fetch> {
        if self.ra.bytes_read().saturating_add(n) > self.cap {
            return Err(Fetch::Cap);
        }
        Ok(())
    }

    pub(super) fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), Fetch> {
        if !self.ra.covers(addr, buf.len()) {
            self.spend(buf.len() as u64)?;
        }
        self.ra.read(addr, buf).map_err(|e| match self.ra.hole_in(addr, buf.len()) {
            Some((addr, why)) => Fetch::Unreadable { addr, why: why.clone() },
            None => Fetch::Unreadable { addr, why: e },
        })
    }

    /// A small item read whole, as a top-level error if it fails.
    pub(super) fn bytes(&mut self, addr: u64, len: u64, what: &str) -> Result<Vec<u8>, PrintkError> {
        let mut b = vec![0u8; len as usize];
        self.read(addr, &mut b).map_err(|f| f.into_error(what, addr))?;
        Ok(b)
    }

    pub(super) fn uint(&mut self, addr: u64, size: u64, what: &str) -> Result<u64, PrintkError> {
        Ok(self.bytes(addr, size, what)?.uint_at(0, size as usize).unwrap_or(0))
    }
}

/// An array in kernel memory (descriptors, infos, the text ring), read ahead [`CHUNK`] by
/// chunk on first use. A chunk that fails as a whole is read again page by page, so that one
/// missing page costs only the records on it.
#[derive(Clone, Copy)]
pub(super) struct Region {
    base: u64,
    len: u64,
}

impl Region {
    pub(super) fn new(base: u64, len: u64) -> Self {
        Self { base, len }
    }

    pub(super) fn get(&mut self, rd: &mut Reader, off: u64, len: u64) -> Result<Vec<u8>, Fetch> {
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
pub(super) struct Tally(Vec<(&'static str, &'static str, u64, String)>);

impl Tally {
    pub(super) fn add(&mut self, one: &'static str, many: &'static str, example: impl FnOnce() -> String) {
        match self.0.iter_mut().find(|t| t.0 == one) {
            Some(t) => t.2 += 1,
            None => self.0.push((one, many, 1, example())),
        }
    }

    pub(super) fn into_problems(self, problems: &mut Vec<String>) {
        for (one, many, n, example) in self.0 {
            let what = if n == 1 { one } else { many };
            problems.push(format!("skipped {n} {what} (e.g. {example})"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layout helpers.

pub(super) fn offset(types: &dyn TypeInfo, ty: &str, field: &str) -> Result<u64, PrintkError> {
    types
        .member(ty, field)
        .map(|m| m.offset)
        .ok_or_else(|| PrintkError::MissingOffset { field: format!("{ty}.{field}"), origin: types.source() })
}

pub(super) fn size(types: &dyn TypeInfo, ty: &str) -> Result<u64, PrintkError> {
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
pub(super) fn fits(
    types: &dyn TypeInfo,
    ty: &str,
    size: u64,
    fields: &[(&str, u64, u64)],
) -> Result<(), PrintkError> {
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
pub(super) struct LevelField {
    pub(super) offset: u64,
    pub(super) bytes: u64,
    shift: u32,
    width: u32,
}

impl LevelField {
    /// The `level:3` bitfield of `ty` from the layout (BTF gives it), else the byte after
    /// `facility` (`default_offset`), bits 5–7: `u8 flags:5; u8 level:3;` in both
    /// `printk_info` and `printk_log`, unchanged since 3.5. VMCOREINFO does not export it.
    pub(super) fn find(types: &dyn TypeInfo, ty: &str, default_offset: u64, notes: &mut Vec<String>) -> Self {
        if let Some(m) = types.member(ty, "level") {
            let (shift, width) = m.bitfield.unwrap_or((0, 8));
            if width > 0 && width <= 8 && (shift + width) as u64 <= m.size.clamp(1, 8) * 8 {
                return Self { offset: m.offset, bytes: m.size.clamp(1, 8), shift, width };
            }
        }
        notes.push(format!("{ty}.level assumed at byte {default_offset}, bits 5-7"));
        Self { offset: default_offset, bytes: 1, shift: 5, width: 3 }
    }

    pub(super) fn get(&self, b: &[u8]) -> u8 {
        ((b.uint_at(self.offset as usize, self.bytes as usize).unwrap_or(0) >> self.shift)
            & ((1 << self.width) - 1)) as u8
    }
}

pub(super) fn describe_layout(types: &dyn TypeInfo, notes: &[String]) -> String {
    let mut s = format!("offsets from {}", types.source());
    if !notes.is_empty() {
        s.push_str("; ");
        s.push_str(&notes.join("; "));
    }
    s
}
