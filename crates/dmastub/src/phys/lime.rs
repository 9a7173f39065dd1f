//! LiME dumps: headers to [`FileRange`]s.
//!
//! A LiME file is a run of 32-byte headers `{ magic u32, version u32, s_addr u64, e_addr u64
//! (inclusive), reserved [u8; 8] }`, each followed by the `e_addr - s_addr + 1` bytes of that
//! physical range. Only the headers are parsed here; [`super::file::FileMem`] does the reading.

use super::ranges::{Aliases, FileRange, RangeError, RangeOrigin, ReadAt, array_at, sort_ranges};
use crate::bytes::LeBytes;

/// `"EMiL"` read as a little-endian u32: the first four bytes of every LiME header.
pub(crate) const MAGIC: u32 = 0x4C69_4D45;
/// AVML's compressed variant of the header (`"AVML"`): recognised only to say how to convert it.
pub(crate) const AVML_MAGIC: u32 = 0x4C4D_5641;
const HEADER_SIZE: usize = 32;
/// More ranges than any machine's memory map has: a bound so a corrupt file cannot make us
/// allocate without limit.
const MAX_RANGES: usize = 1 << 20;

/// Why a file is not a LiME dump dmastub can read: what is wrong, and at which file offset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimeError {
    /// The file does not start with a LiME header.
    #[error("no LiME magic at offset 0 (found {0:#010x})")]
    NoMagic(u32),
    /// Fewer bytes than a header after the last range.
    #[error("{len} bytes at offset {offset:#x} after the last range are not a LiME header (one is 32 bytes)")]
    ShortTail {
        /// Where they start.
        offset: u64,
        /// How many there are.
        len: u64,
    },
    /// Something other than a header after the last range.
    #[error("bytes at offset {offset:#x} after the last range are not a LiME header (magic {magic:#010x})")]
    NotAHeader {
        /// Where they start.
        offset: u64,
        /// What stands where the magic should.
        magic: u32,
    },
    /// A header version other than 1.
    #[error("header at offset {offset:#x}: version {version}, only version 1 is known")]
    Version {
        /// The header's file offset.
        offset: u64,
        /// Its version.
        version: u32,
    },
    /// A range that ends before it starts.
    #[error("header at offset {offset:#x}: end address {e_addr:#x} is below start address {s_addr:#x}")]
    Backwards {
        /// The header's file offset.
        offset: u64,
        /// Its first address.
        s_addr: u64,
        /// Its last address (inclusive).
        e_addr: u64,
    },
    /// A range whose bytes are not all in the file.
    #[error(
        "header at offset {offset:#x}: range [{s_addr:#x}, {e_addr:#x}] needs {:#x} bytes from offset \
         {:#x}, past the end of the file at {size:#x}",
        (e_addr - s_addr).saturating_add(1),
        offset + HEADER_SIZE as u64
    )]
    PastEnd {
        /// The header's file offset.
        offset: u64,
        /// Its first address.
        s_addr: u64,
        /// Its last address (inclusive).
        e_addr: u64,
        /// The file's size.
        size: u64,
    },
    /// More ranges than any machine has.
    #[error("more than {MAX_RANGES} ranges (header at offset {0:#x}): not a plausible dump")]
    TooManyRanges(u64),
    /// No range at all.
    #[error("no ranges: the dump holds no memory")]
    Empty,
    /// Ranges that overlap or wrap around.
    #[error(transparent)]
    Ranges(#[from] RangeError),
}

/// Parses the headers of a LiME file (`data` is the whole file, read only at the headers).
pub(crate) fn parse(data: &dyn ReadAt) -> Result<Vec<FileRange>, LimeError> {
    let size = data.size();
    let mut ranges = Vec::new();
    let mut offsets = Vec::new();
    let mut off = 0u64;
    while off < size {
        let Some(h) = array_at::<HEADER_SIZE>(data, off) else {
            return Err(LimeError::ShortTail { offset: off, len: size - off });
        };
        let h = &h[..];
        // `h` is exactly 32 bytes: the fixed-offset fields below lie inside it.
        let magic = h.u32_at(0).unwrap_or_default();
        if magic != MAGIC {
            return Err(if off == 0 {
                LimeError::NoMagic(magic)
            } else {
                LimeError::NotAHeader { offset: off, magic }
            });
        }
        let version = h.u32_at(4).unwrap_or_default();
        let (s_addr, e_addr) = (h.u64_at(8).unwrap_or_default(), h.u64_at(16).unwrap_or_default());
        if version != 1 {
            return Err(LimeError::Version { offset: off, version });
        }
        if e_addr < s_addr {
            return Err(LimeError::Backwards { offset: off, s_addr, e_addr });
        }
        let data_at = off + HEADER_SIZE as u64;
        let len = (e_addr - s_addr).checked_add(1);
        let Some((len, next)) =
            len.and_then(|len| Some((len, data_at.checked_add(len)?))).filter(|(_, n)| *n <= size)
        else {
            return Err(LimeError::PastEnd { offset: off, s_addr, e_addr, size });
        };
        if ranges.len() >= MAX_RANGES {
            return Err(LimeError::TooManyRanges(off));
        }
        ranges.push(FileRange { phys_start: s_addr, len, file_offset: data_at, file_len: len });
        offsets.push(off);
        off = next;
    }
    if ranges.is_empty() {
        return Err(LimeError::Empty);
    }
    Ok(sort_ranges(ranges, Aliases::Refuse, |i| {
        RangeOrigin::LimeHeader(offsets.get(i).copied().unwrap_or_default())
    })?)
}

/// Builds LiME files for tests.
#[cfg(test)]
pub(crate) fn build(ranges: &[(u64, &[u8])]) -> Vec<u8> {
    let mut v = Vec::new();
    for (start, bytes) in ranges {
        v.extend_from_slice(&MAGIC.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&start.to_le_bytes());
        v.extend_from_slice(&(start + bytes.len() as u64 - 1).to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(bytes);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(data: &[u8]) -> String {
        match parse(&data) {
            Ok(r) => panic!("parsed: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn ranges_in_file_order_come_out_sorted() {
        let f = build(&[(0x10000, &[1; 0x100]), (0, &[2; 0x40])]);
        let r = parse(&f).unwrap();
        assert_eq!(
            r,
            vec![
                FileRange { phys_start: 0, len: 0x40, file_offset: 0x140, file_len: 0x40 },
                FileRange { phys_start: 0x10000, len: 0x100, file_offset: 0x20, file_len: 0x100 },
            ]
        );
    }

    #[test]
    fn refuses_bad_files() {
        let good = build(&[(0, &[1; 0x100]), (0x1000, &[2; 0x100])]);
        let mut v2 = good.clone();
        v2[0x124] = 2;
        assert_eq!(err(&v2), "header at offset 0x120: version 2, only version 1 is known");
        let mut backwards = good.clone();
        backwards[0x130..0x138].copy_from_slice(&0x800u64.to_le_bytes());
        assert!(err(&backwards).starts_with("header at offset 0x120: end address 0x800 is below"));
        let e = err(&good[..good.len() - 1]);
        assert!(e.starts_with("header at offset 0x120: range [0x1000, 0x10ff] needs 0x100 bytes"), "{e}");
        let mut huge = good.clone();
        huge[0x10..0x18].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&huge).contains("past the end of the file"));
        let e = err(&[&good[..], &[0xaa; 40]].concat());
        assert!(e.starts_with("bytes at offset 0x240 after the last range are not a LiME header"), "{e}");
        let e = err(&[&good[..], &[0xaa; 5]].concat());
        assert!(e.starts_with("5 bytes at offset 0x240 after the last range"), "{e}");
        let e = err(&build(&[(0, &[1; 0x100]), (0x80, &[2; 0x100])]));
        assert_eq!(e, "range at offset 0x120 [0x80, 0x180) overlaps range at offset 0x0 [0x0, 0x100)");
    }
}
