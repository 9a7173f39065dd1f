//! What every file format comes down to: a sorted table of [`FileRange`]s saying which bytes
//! of the file hold which physical addresses, and random access to a file being parsed
//! ([`ReadAt`]). A leaf module: the format parsers ([`super::elf`], [`super::lime`]) build the
//! table, [`super::file`] reads through it, and neither needs the other.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Where one physical range lives in the file: `[phys_start, phys_start + len)` is RAM, its
/// first `file_len` bytes are at `file_offset`, and the rest reads as zeros (ELF
/// `p_filesz < p_memsz`, which makedumpfile uses for pages it knows are zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRange {
    /// The first physical address of the range.
    pub phys_start: u64,
    /// Bytes of RAM in the range.
    pub len: u64,
    /// Where the file holds its first byte.
    pub file_offset: u64,
    /// How many of its bytes the file holds (at most `len`); the rest are zeros.
    pub file_len: u64,
}

impl FileRange {
    pub(crate) fn phys_end(&self) -> u64 {
        self.phys_start.saturating_add(self.len)
    }
}

/// Which header of the file a range came from, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeOrigin {
    /// An ELF program header, numbered from 0 as `readelf -l` lists them.
    ProgramHeader(u64),
    /// The LiME header at this file offset.
    LimeHeader(u64),
}

impl fmt::Display for RangeOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeOrigin::ProgramHeader(i) => write!(f, "PT_LOAD {i}"),
            RangeOrigin::LimeHeader(off) => write!(f, "range at offset {off:#x}"),
        }
    }
}

/// A table of ranges that cannot describe memory.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// A range runs past 2^64.
    #[error(
        "{origin} at phys {phys_start:#x} (+{len:#x} bytes) runs past the top of the 64-bit address space"
    )]
    PastTop {
        /// Where it came from.
        origin: RangeOrigin,
        /// Its first address.
        phys_start: u64,
        /// Its length.
        len: u64,
    },
    /// Two ranges share addresses.
    #[error("{origin} [{:#x}, {:#x}) overlaps {other} [{:#x}, {:#x})", range.0, range.1, other_range.0, other_range.1)]
    Overlap {
        /// The later range.
        origin: RangeOrigin,
        /// Its `[start, end)`.
        range: (u64, u64),
        /// The range it overlaps.
        other: RangeOrigin,
        /// That one's `[start, end)`.
        other_range: (u64, u64),
    },
}

/// What to do with a range that lies wholly inside another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Aliases {
    /// Any overlap is an error (LiME: a dump of disjoint ranges).
    Refuse,
    /// Drop the contained range. Real kdump vmcores need this: the kernel and kexec-tools add a
    /// PT_LOAD for the kernel text mapping whose physical range is also inside a System RAM
    /// PT_LOAD; both were read from the same memory, so either copy is the truth. Partial
    /// overlaps are still refused.
    DropContained,
}

/// Sorts `ranges` by physical address and checks that they neither overlap nor wrap around
/// the 64-bit space: the one check ELF and LiME share. `origin(i)` says where the `i`th range
/// of the input came from. Zero-length ranges are dropped.
pub(crate) fn sort_ranges(
    ranges: Vec<FileRange>,
    aliases: Aliases,
    origin: impl Fn(usize) -> RangeOrigin,
) -> Result<Vec<FileRange>, RangeError> {
    for (i, r) in ranges.iter().enumerate() {
        if r.phys_start.checked_add(r.len).is_none() {
            return Err(RangeError::PastTop { origin: origin(i), phys_start: r.phys_start, len: r.len });
        }
    }
    let mut order: Vec<usize> = (0..ranges.len()).filter(|&i| ranges[i].len > 0).collect();
    // By start, and the longer first at the same start, so a contained range always comes
    // after the range that contains it.
    order.sort_by_key(|&i| (ranges[i].phys_start, std::cmp::Reverse(ranges[i].len)));
    let mut kept: Vec<usize> = Vec::with_capacity(order.len());
    for i in order {
        let r = &ranges[i];
        if let Some(&k) = kept.last() {
            // Kept ranges are disjoint and sorted, so only the last one can reach past r's start.
            let last = &ranges[k];
            if r.phys_start < last.phys_end() {
                if aliases == Aliases::DropContained && r.phys_end() <= last.phys_end() {
                    log::debug!(
                        "{} [{:#x}, {:#x}) lies inside {}: ignored as an alias",
                        origin(i),
                        r.phys_start,
                        r.phys_end(),
                        origin(k)
                    );
                    continue;
                }
                return Err(RangeError::Overlap {
                    origin: origin(i),
                    range: (r.phys_start, r.phys_end()),
                    other: origin(k),
                    other_range: (last.phys_start, last.phys_end()),
                });
            }
        }
        kept.push(i);
    }
    Ok(kept.into_iter().map(|i| ranges[i]).collect())
}

/// Random access to the bytes of a file being parsed: the whole file as a slice (tests), or an
/// open file read with `pread` ([`FileReader`]). The header parsers read through it, so they
/// never need the file mapped.
pub(crate) trait ReadAt {
    /// The file's size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` from offset `off`; `false` if any byte of it is past the end or unreadable.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool;
}

impl ReadAt for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool {
        let from = usize::try_from(off).ok();
        match from.and_then(|f| self.get(f..f.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool {
        self.as_slice().read_at(off, buf)
    }
}

/// The `N` bytes at `off` of a `dyn ReadAt`: a header to read fields from with
/// [`LeBytes`](crate::bytes::LeBytes).
pub(crate) fn array_at<const N: usize>(data: &dyn ReadAt, off: u64) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    data.read_at(off, &mut b).then_some(b)
}

/// An open file as [`ReadAt`], with the size it had when opened.
pub(crate) struct FileReader<'a> {
    pub(crate) file: &'a File,
    pub(crate) size: u64,
}

impl ReadAt for FileReader<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, off: u64, buf: &mut [u8]) -> bool {
        off.checked_add(buf.len() as u64).is_some_and(|end| end <= self.size)
            && self.file.read_exact_at(buf, off).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(phys_start: u64, len: u64) -> FileRange {
        FileRange { phys_start, len, file_offset: 0, file_len: len }
    }

    #[test]
    fn sorting_and_overlaps() {
        let label = |i: usize| RangeOrigin::ProgramHeader(i as u64);
        let sorted = sort_ranges(vec![r(0x3000, 0x1000), r(0, 0x1000), r(0x1000, 0)], Aliases::Refuse, label);
        assert_eq!(sorted, Ok(vec![r(0, 0x1000), r(0x3000, 0x1000)]));
        let e = sort_ranges(vec![r(0, 0x2000), r(0x1000, 0x2000)], Aliases::DropContained, label)
            .map_err(|e| e.to_string());
        assert_eq!(e, Err("PT_LOAD 1 [0x1000, 0x3000) overlaps PT_LOAD 0 [0x0, 0x2000)".to_string()));
        let inner = vec![r(0x1000, 0x1000), r(0, 0x4000), r(0x4000, 0x1000)];
        assert!(sort_ranges(inner.clone(), Aliases::Refuse, label).is_err());
        let kept = sort_ranges(inner, Aliases::DropContained, label);
        assert_eq!(kept, Ok(vec![r(0, 0x4000), r(0x4000, 0x1000)]));
        let e = sort_ranges(vec![r(u64::MAX - 1, 4)], Aliases::Refuse, label).unwrap_err().to_string();
        assert!(e.contains("PT_LOAD 0 at phys 0xfffffffffffffffe"), "{e}");
    }
}
