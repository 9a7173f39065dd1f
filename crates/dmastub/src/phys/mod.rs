//! Physical memory sources.
//!
//! Everything dmastub reads ends here, at a physical address. A source says which physical
//! ranges it holds ([`PhysMem::ram`]); a read that touches anything else is an error, never
//! zeros, because a forensic tool that makes up bytes is worse than one that says "I can't".
//!
//! Sources: [`BufferMem`] (bytes in memory: tests and the synthetic demo), the
//! file-backed sources opened by [`open_file`]: raw images and live RAM files, ELF cores
//! (QEMU `dump-guest-memory`, kdump) and LiME dumps, told apart by their first bytes; and
//! [`nettlp::NetTlpMem`], a machine read by DMA through a NetTLP adapter.
//!
//! Errors: a failed read is a [`PhysError`] (never fatal to a gdb session; a device failure says
//! so through [`PhysError::is_device_failure`]); a file that cannot be opened is an
//! [`OpenError`], which keeps the parser's [`ElfError`] or [`LimeError`] as its source; a
//! NetTLP client that cannot be set up is a [`nettlp::NetTlpError`]. Where the user can do
//! something about an error, its `remedy()` says what as a [`Remedy`], for each front end to
//! put in its own words.

pub(crate) mod buffer;
pub(crate) mod elf;
mod error;
mod file;
mod format;
pub mod kdump;
mod lime;
mod lockstep;
pub mod nettlp;
mod open;
mod ranges;

pub use buffer::BufferMem;
pub use elf::{CoreNote, ElfError, encode_note};
pub use error::{Exclusion, IoError, NetTlpSetting, PhysError, Remedy, SegmentError};
pub use file::FileMem;
pub use file::WriteMode;
pub use format::{Format, Unreadable};
pub use kdump::KdumpError;
pub use lime::LimeError;
pub use lockstep::{Lockstep, LockstepReader};
pub use open::{OpenError, OpenOptions, open_file};
pub use ranges::{FileRange, RangeError, RangeOrigin};

use crate::addr::PhysAddr;
use std::fmt;

/// One range of physical memory a source holds: `[start, start + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// The first address.
    pub start: PhysAddr,
    /// Bytes in the range.
    pub len: u64,
}

impl RamRange {
    /// One past the last byte (saturating at 2^64, which no real range reaches).
    pub fn end(&self) -> u64 {
        self.start.0.saturating_add(self.len)
    }

    /// Whether `[addr, addr + len)` lies wholly inside this range.
    pub fn contains(&self, addr: PhysAddr, len: u64) -> bool {
        addr.0 >= self.start.0 && addr.0.checked_add(len).is_some_and(|e| e <= self.end())
    }
}

impl fmt::Display for RamRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x})", self.start.0, self.end())
    }
}

/// What kind of thing a source reads from, for messages and `monitor` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Bytes held in this process (tests, the synthetic demo).
    Buffer,
    /// A raw image: file offset = physical address.
    RawImage,
    /// A live RAM file (e.g. QEMU `memory-backend-file,share=on`): changes while we read it.
    LiveRam,
    /// An ELF core: QEMU `dump-guest-memory` or a kdump vmcore.
    ElfCore,
    /// A LiME dump.
    Lime,
    /// A machine read by DMA through a NetTLP adapter: live, and slow per request.
    NetTlp,
    /// A kdump-compressed (diskdump) vmcore, or makedumpfile's flattened form of one.
    Kdump,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Buffer => "in-memory buffer",
            SourceKind::RawImage => "raw image",
            SourceKind::LiveRam => "live RAM file",
            SourceKind::ElfCore => "ELF core",
            SourceKind::Lime => "LiME dump",
            SourceKind::NetTlp => "NetTLP adapter",
            SourceKind::Kdump => "kdump-compressed vmcore",
        })
    }
}

/// One piece of a scattered read: fill `buf` from `addr`.
#[derive(Debug)]
pub struct Segment<'a> {
    /// Where the bytes start.
    pub addr: PhysAddr,
    /// Where they go; its length is how many to read.
    pub buf: &'a mut [u8],
}

/// A source of physical memory.
///
/// Reads take `&mut self` because a device source (NetTLP) keeps per-request state; file
/// sources simply ignore it.
pub trait PhysMem: Send {
    /// A short name for messages, usually the file name.
    fn name(&self) -> &str;

    /// What kind of source this is.
    fn kind(&self) -> SourceKind;

    /// The physical ranges this source holds, sorted by address and never overlapping.
    fn ram(&self) -> &[RamRange];

    /// Whether the memory changes under us (a live machine): then nothing read may be kept
    /// past a burst of requests.
    fn is_volatile(&self) -> bool {
        false
    }

    /// Fills `buf` with the bytes at `addr`. Fails, filling nothing reliable, when any byte of
    /// the range is outside [`PhysMem::ram`].
    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError>;

    /// Fills every segment. A device source puts all of them on the wire at once, so callers
    /// that know several ranges they need (a page table's pages, a run of scattered pages)
    /// should ask for them together; file sources just read them in turn.
    fn read_segments(&mut self, segments: &mut [Segment<'_>]) -> Result<(), SegmentError> {
        for (index, s) in segments.iter_mut().enumerate() {
            self.read(s.addr, s.buf).map_err(|error| SegmentError { index, error })?;
        }
        Ok(())
    }

    /// One line about the traffic a device source has carried (requests, round trips,
    /// retries), for `monitor stats` and benchmarks. `None` for sources without any.
    fn traffic(&self) -> Option<String> {
        None
    }

    /// Starts the [`PhysMem::traffic`] counters again.
    fn reset_traffic(&mut self) {}

    /// Writes `data` at `addr`. Sources are read-only unless opened for writing.
    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), PhysError> {
        let _ = (addr, data);
        Err(PhysError::ReadOnly { source_name: self.name().to_string() })
    }

    /// The notes the source carries about the machine (an ELF core's PT_NOTE segments:
    /// VMCOREINFO, per-CPU NT_PRSTATUS), so later layers can use the kernel's own description of
    /// itself. Empty for sources that have none.
    fn core_notes(&self) -> &[CoreNote] {
        &[]
    }

    /// The bytes at `addr` in place, when the source holds them contiguously and they cannot
    /// change (a dump file): large structures are then parsed without a copy. `None` otherwise;
    /// callers fall back to [`PhysMem::read`].
    fn bytes_at(&self, _addr: PhysAddr, _len: u64) -> Option<&[u8]> {
        None
    }

    /// Total bytes of RAM the source holds.
    fn ram_bytes(&self) -> u64 {
        self.ram().iter().map(|r| r.len).sum()
    }

    /// One line for the startup banner: "ELF core, 256 MiB RAM in 2 ranges".
    fn describe(&self) -> String {
        let n = self.ram().len();
        format!(
            "{}, {} RAM in {} range{}",
            self.kind(),
            human_bytes(self.ram_bytes()),
            n,
            if n == 1 { "" } else { "s" }
        )
    }
}

/// `bytes` as "256 MiB", "1.5 GiB", "12 KiB" or "100 bytes".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            return if bytes.is_multiple_of(size) {
                format!("{} {unit}", bytes / size)
            } else {
                format!("{:.1} {unit}", bytes as f64 / size as f64)
            };
        }
    }
    format!("{bytes} bytes")
}

/// The range of `ram` that wholly holds `[addr, addr + len)`, if one does.
pub fn find_range(ram: &[RamRange], addr: PhysAddr, len: u64) -> Option<&RamRange> {
    let i = ram.partition_point(|r| r.end() <= addr.0);
    ram.get(i).filter(|r| r.contains(addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(256 << 20), "256 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(100), "100 bytes");
    }

    #[test]
    fn ranges_are_found_only_when_whole() {
        let ram = [
            RamRange { start: PhysAddr(0x1000), len: 0x1000 },
            RamRange { start: PhysAddr(0x10000), len: 0x2000 },
        ];
        assert_eq!(find_range(&ram, PhysAddr(0x1800), 0x800), Some(&ram[0]));
        assert_eq!(find_range(&ram, PhysAddr(0x1800), 0x801), None);
        assert_eq!(find_range(&ram, PhysAddr(0x0), 1), None);
        assert_eq!(find_range(&ram, PhysAddr(0x11fff), 1), Some(&ram[1]));
        assert_eq!(find_range(&ram, PhysAddr(0x12000), 1), None);
        assert_eq!(find_range(&ram, PhysAddr(u64::MAX), 2), None);
    }
}
