//! The on-disk structures of a kdump-compressed (diskdump) file, x86-64 little-endian, as
//! makedumpfile 1.7 (header version 6) and QEMU's `dump-guest-memory -z/-l/-s` write them.
//!
//! ```text
//! block 0                      struct disk_dump_header (464 bytes, rest of the block zero)
//! block 1                      struct kdump_sub_header (104 bytes at version 6), then the
//!                              ELF notes, VMCOREINFO and erase info the sub-header points at,
//!                              all within sub_hdr_size blocks
//! block 1 + sub_hdr_size       bitmap1 (valid pfns), bitmap_blocks * block_size / 2 bytes
//!                              bitmap2 (dumped pfns), the same size; bit pfn % 8 of byte pfn / 8
//! then                         one struct page_desc (24 bytes) per bit set in bitmap2, pfn order
//! then                         the page data each descriptor points at
//! ```
//!
//! Each structure here parses from and writes to exactly that layout, so the reader and
//! `dmastub dump` share one definition. Parsing only checks that the bytes are there and the
//! signature; what the values mean (a power-of-two block size, bitmaps inside the file) is
//! checked by the reader, which knows the file's size.

use super::error::KdumpError;
use crate::bytes::LeBytes;

/// The signature makedumpfile and QEMU write at offset 0: `"KDUMP   "`.
pub const SIGNATURE: [u8; 8] = *b"KDUMP   ";
/// The signature of the older diskdump format, read the same way.
pub const DISKDUMP_SIGNATURE: [u8; 8] = *b"DISKDUMP";
/// The header version makedumpfile 1.7 writes: the sub-header has every field up to
/// `max_mapnr_64`.
pub const HEADER_VERSION: u32 = 6;

/// `status` / `page_desc.flags` bit: zlib-compressed pages.
pub const DUMP_DH_COMPRESSED_ZLIB: u32 = 0x1;
/// LZO1X-compressed pages.
pub const DUMP_DH_COMPRESSED_LZO: u32 = 0x2;
/// Raw-snappy-compressed pages.
pub const DUMP_DH_COMPRESSED_SNAPPY: u32 = 0x4;
/// `status` bit: the dump was stopped before every page was written (e.g. the disk filled up);
/// pages whose descriptor is still zero were never captured.
pub const DUMP_DH_COMPRESSED_INCOMPLETE: u32 = 0x8;
/// `status` bit: unused vmemmap pages were excluded (`makedumpfile -e`).
pub const DUMP_DH_EXCLUDED_VMEMMAP: u32 = 0x10;
/// zstd-compressed pages.
pub const DUMP_DH_COMPRESSED_ZSTD: u32 = 0x20;
/// Every compression bit.
pub const DUMP_DH_COMPRESSED_MASK: u32 =
    DUMP_DH_COMPRESSED_ZLIB | DUMP_DH_COMPRESSED_LZO | DUMP_DH_COMPRESSED_SNAPPY | DUMP_DH_COMPRESSED_ZSTD;

/// Bytes of `struct disk_dump_header` on x86-64 (up to and including `nr_cpus`).
pub const DISK_DUMP_HEADER_SIZE: usize = 464;
/// Bytes of `struct kdump_sub_header` at header version 6.
pub const SUB_HEADER_SIZE: usize = 104;
/// Bytes of one `struct page_desc`.
pub const PAGE_DESC_SIZE: usize = 24;
/// Bytes of one field of `struct new_utsname`.
pub const UTS_LEN: usize = 65;

/// `struct new_utsname`: the machine's `uname`, each field NUL-padded to 65 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UtsName {
    /// "Linux".
    pub sysname: [u8; UTS_LEN],
    /// The host name.
    pub nodename: [u8; UTS_LEN],
    /// The kernel release, e.g. "6.1.0-56-amd64".
    pub release: [u8; UTS_LEN],
    /// The build string, e.g. "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (...)".
    pub version: [u8; UTS_LEN],
    /// "x86_64".
    pub machine: [u8; UTS_LEN],
    /// The NIS domain name, usually "(none)".
    pub domainname: [u8; UTS_LEN],
}

impl Default for UtsName {
    fn default() -> Self {
        let z = [0u8; UTS_LEN];
        UtsName { sysname: z, nodename: z, release: z, version: z, machine: z, domainname: z }
    }
}

impl UtsName {
    /// Fields from strings, each cut to 64 bytes so a NUL always ends it.
    pub fn new(
        sysname: &str,
        nodename: &str,
        release: &str,
        version: &str,
        machine: &str,
        domainname: &str,
    ) -> Self {
        UtsName {
            sysname: field(sysname),
            nodename: field(nodename),
            release: field(release),
            version: field(version),
            machine: field(machine),
            domainname: field(domainname),
        }
    }

    /// A field as text, up to its first NUL.
    pub fn text(f: &[u8; UTS_LEN]) -> String {
        let end = f.iter().position(|&b| b == 0).unwrap_or(UTS_LEN);
        String::from_utf8_lossy(&f[..end]).into_owned()
    }

    fn fields(&self) -> [&[u8; UTS_LEN]; 6] {
        [&self.sysname, &self.nodename, &self.release, &self.version, &self.machine, &self.domainname]
    }
}

fn field(s: &str) -> [u8; UTS_LEN] {
    let mut f = [0u8; UTS_LEN];
    let n = s.len().min(UTS_LEN - 1);
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    f
}

/// The bytes a structure needs at the start of `data`, or the error naming it.
fn need<'a>(data: &'a [u8], len: usize, what: &'static str) -> Result<&'a [u8], KdumpError> {
    data.get(..len).ok_or(KdumpError::PastEnd { what, offset: 0, len: len as u64, size: data.len() as u64 })
}

/// `struct disk_dump_header`, at offset 0 of the file (block 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskDumpHeader {
    /// [`SIGNATURE`] (or [`DISKDUMP_SIGNATURE`]).
    pub signature: [u8; 8],
    /// Which fields the sub-header has: [`HEADER_VERSION`] for makedumpfile 1.7.
    pub header_version: u32,
    /// The machine's `uname`.
    pub utsname: UtsName,
    /// When the dump was taken: seconds since the epoch (`struct timeval tv_sec`).
    pub timestamp_sec: i64,
    /// ... and microseconds (`tv_usec`).
    pub timestamp_usec: i64,
    /// `DUMP_DH_*` bits: the compression used, [`DUMP_DH_COMPRESSED_INCOMPLETE`].
    pub status: u32,
    /// Bytes per block, which is also the page size (4096 on x86-64).
    pub block_size: u32,
    /// Blocks of the sub-header area (the sub-header and the notes it points at).
    pub sub_hdr_size: u32,
    /// Blocks of both bitmaps together.
    pub bitmap_blocks: u32,
    /// Pfns the bitmaps describe, cut to 32 bits (obsolete: see [`SubHeader::max_mapnr_64`]).
    pub max_mapnr: u32,
    /// Pages the dump was to hold.
    pub total_ram_blocks: u32,
    /// Blocks of the dump device (diskdump; 0 from makedumpfile).
    pub device_blocks: u32,
    /// Blocks written (diskdump; 0 from makedumpfile).
    pub written_blocks: u32,
    /// The CPU that took the dump.
    pub current_cpu: u32,
    /// CPUs of the machine.
    pub nr_cpus: u32,
}

impl Default for DiskDumpHeader {
    fn default() -> Self {
        DiskDumpHeader {
            signature: SIGNATURE,
            header_version: HEADER_VERSION,
            utsname: UtsName::default(),
            timestamp_sec: 0,
            timestamp_usec: 0,
            status: 0,
            block_size: 4096,
            sub_hdr_size: 1,
            bitmap_blocks: 0,
            max_mapnr: 0,
            total_ram_blocks: 0,
            device_blocks: 0,
            written_blocks: 0,
            current_cpu: 0,
            nr_cpus: 1,
        }
    }
}

impl DiskDumpHeader {
    /// Parses the header at the start of `data`: [`DISK_DUMP_HEADER_SIZE`] bytes, starting with
    /// a known signature.
    pub fn parse(data: &[u8]) -> Result<Self, KdumpError> {
        if let Some(sig) = data.get(..8)
            && sig != SIGNATURE
            && sig != DISKDUMP_SIGNATURE
        {
            return Err(KdumpError::Signature { found: String::from_utf8_lossy(sig).into_owned() });
        }
        let h = need(data, DISK_DUMP_HEADER_SIZE, "disk_dump_header")?;
        // `h` is DISK_DUMP_HEADER_SIZE bytes: every field below lies inside it.
        let u32_at = |o| h.u32_at(o).unwrap_or_default();
        let i64_at = |o| h.u64_at(o).unwrap_or_default() as i64;
        let uts = |i: usize| {
            let mut f = [0u8; UTS_LEN];
            f.copy_from_slice(&h[12 + i * UTS_LEN..12 + (i + 1) * UTS_LEN]);
            f
        };
        let mut signature = [0u8; 8];
        signature.copy_from_slice(&h[..8]);
        Ok(DiskDumpHeader {
            signature,
            header_version: u32_at(8),
            utsname: UtsName {
                sysname: uts(0),
                nodename: uts(1),
                release: uts(2),
                version: uts(3),
                machine: uts(4),
                domainname: uts(5),
            },
            timestamp_sec: i64_at(408),
            timestamp_usec: i64_at(416),
            status: u32_at(424),
            block_size: u32_at(428),
            sub_hdr_size: u32_at(432),
            bitmap_blocks: u32_at(436),
            max_mapnr: u32_at(440),
            total_ram_blocks: u32_at(444),
            device_blocks: u32_at(448),
            written_blocks: u32_at(452),
            current_cpu: u32_at(456),
            nr_cpus: u32_at(460),
        })
    }

    /// The header's [`DISK_DUMP_HEADER_SIZE`] bytes (the padding after the utsname zero); a
    /// writer pads them to `block_size`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(DISK_DUMP_HEADER_SIZE);
        v.extend_from_slice(&self.signature);
        v.extend_from_slice(&self.header_version.to_le_bytes());
        for f in self.utsname.fields() {
            v.extend_from_slice(f);
        }
        v.resize(408, 0); // struct timeval is 8-aligned
        v.extend_from_slice(&self.timestamp_sec.to_le_bytes());
        v.extend_from_slice(&self.timestamp_usec.to_le_bytes());
        for x in [
            self.status,
            self.block_size,
            self.sub_hdr_size,
            self.bitmap_blocks,
            self.max_mapnr,
            self.total_ram_blocks,
            self.device_blocks,
            self.written_blocks,
            self.current_cpu,
            self.nr_cpus,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        debug_assert_eq!(v.len(), DISK_DUMP_HEADER_SIZE);
        v
    }
}

/// `struct kdump_sub_header`, at block 1. Which fields are meaningful depends on the header
/// version (noted on each); [`SubHeader::parse`] reads the version-6 layout and
/// [`SubHeader::for_version`] zeroes what an older version does not have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubHeader {
    /// The kernel's `phys_base` as the dumper saw it. Not to be trusted: QEMU 7.2 writes
    /// garbage here; discovery finds the real one.
    pub phys_base: u64,
    /// The dump level (version 1 on): which page classes were left out (1 zero, 2 cache,
    /// 4 private cache, 8 user, 16 free).
    pub dump_level: u32,
    /// Whether this file is one part of a split dump (version 2 on).
    pub split: u32,
    /// A split part's first pfn, 32-bit (version 2 on; obsolete, see `start_pfn_64`).
    pub start_pfn: u64,
    /// A split part's end pfn, 32-bit (version 2 on; obsolete, see `end_pfn_64`).
    pub end_pfn: u64,
    /// File offset of the VMCOREINFO text (version 3 on).
    pub offset_vmcoreinfo: u64,
    /// Its length.
    pub size_vmcoreinfo: u64,
    /// File offset of the ELF notes: NT_PRSTATUS per CPU, VMCOREINFO (version 4 on).
    pub offset_note: u64,
    /// Their length.
    pub size_note: u64,
    /// File offset of the erase info (`makedumpfile --config`, version 5 on).
    pub offset_eraseinfo: u64,
    /// Its length.
    pub size_eraseinfo: u64,
    /// A split part's first pfn (version 6 on).
    pub start_pfn_64: u64,
    /// A split part's end pfn (version 6 on).
    pub end_pfn_64: u64,
    /// Pfns the bitmaps describe (version 6 on; replaces the header's 32-bit `max_mapnr`).
    pub max_mapnr_64: u64,
}

impl SubHeader {
    /// Parses the version-6 layout at the start of `data` ([`SUB_HEADER_SIZE`] bytes; a real
    /// sub-header is a whole block, so they are always there).
    pub fn parse(data: &[u8]) -> Result<Self, KdumpError> {
        let h = need(data, SUB_HEADER_SIZE, "kdump_sub_header")?;
        // `h` is SUB_HEADER_SIZE bytes: every field below lies inside it.
        let u64_at = |o| h.u64_at(o).unwrap_or_default();
        let u32_at = |o| h.u32_at(o).unwrap_or_default();
        Ok(SubHeader {
            phys_base: u64_at(0),
            dump_level: u32_at(8),
            split: u32_at(12),
            start_pfn: u64_at(16),
            end_pfn: u64_at(24),
            offset_vmcoreinfo: u64_at(32),
            size_vmcoreinfo: u64_at(40),
            offset_note: u64_at(48),
            size_note: u64_at(56),
            offset_eraseinfo: u64_at(64),
            size_eraseinfo: u64_at(72),
            start_pfn_64: u64_at(80),
            end_pfn_64: u64_at(88),
            max_mapnr_64: u64_at(96),
        })
    }

    /// The fields a header of `version` has; the others zero (a version-2 file's bytes past
    /// `end_pfn` are whatever the writer left there).
    pub fn for_version(mut self, version: u32) -> Self {
        if version < 1 {
            self.dump_level = 0;
        }
        if version < 2 {
            (self.split, self.start_pfn, self.end_pfn) = (0, 0, 0);
        }
        if version < 3 {
            (self.offset_vmcoreinfo, self.size_vmcoreinfo) = (0, 0);
        }
        if version < 4 {
            (self.offset_note, self.size_note) = (0, 0);
        }
        if version < 5 {
            (self.offset_eraseinfo, self.size_eraseinfo) = (0, 0);
        }
        if version < 6 {
            (self.start_pfn_64, self.end_pfn_64, self.max_mapnr_64) = (0, 0, 0);
        }
        self
    }

    /// The version-6 layout's [`SUB_HEADER_SIZE`] bytes; a writer pads them to the block.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(SUB_HEADER_SIZE);
        v.extend_from_slice(&self.phys_base.to_le_bytes());
        v.extend_from_slice(&self.dump_level.to_le_bytes());
        v.extend_from_slice(&self.split.to_le_bytes());
        for x in [
            self.start_pfn,
            self.end_pfn,
            self.offset_vmcoreinfo,
            self.size_vmcoreinfo,
            self.offset_note,
            self.size_note,
            self.offset_eraseinfo,
            self.size_eraseinfo,
            self.start_pfn_64,
            self.end_pfn_64,
            self.max_mapnr_64,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        debug_assert_eq!(v.len(), SUB_HEADER_SIZE);
        v
    }
}

/// `struct page_desc`: where one dumped page's data is and how it is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageDesc {
    /// File offset of the page's data (`off_t`; makedumpfile's zero page descriptors all point
    /// at one shared zero page). 0 in an incomplete dump: never written.
    pub offset: u64,
    /// Bytes of data: the block size for a raw page, less for a compressed one.
    pub size: u32,
    /// The compression (`DUMP_DH_COMPRESSED_*`), 0 for a raw page.
    pub flags: u32,
    /// The page's `struct page` flags (informational).
    pub page_flags: u64,
}

impl PageDesc {
    /// Parses one descriptor from the start of `data` ([`PAGE_DESC_SIZE`] bytes).
    pub fn parse(data: &[u8]) -> Result<Self, KdumpError> {
        let d = need(data, PAGE_DESC_SIZE, "page_desc")?;
        Ok(Self::from_array(d))
    }

    /// From exactly [`PAGE_DESC_SIZE`] bytes (the caller checked the length).
    pub(crate) fn from_array(d: &[u8]) -> Self {
        PageDesc {
            offset: d.u64_at(0).unwrap_or_default(),
            size: d.u32_at(8).unwrap_or_default(),
            flags: d.u32_at(12).unwrap_or_default(),
            page_flags: d.u64_at(16).unwrap_or_default(),
        }
    }

    /// The descriptor's [`PAGE_DESC_SIZE`] bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(PAGE_DESC_SIZE);
        self.write_to(&mut v);
        v
    }

    /// Appends the descriptor's bytes to `out` (a writer's descriptor buffer).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.page_flags.to_le_bytes());
    }
}

/// The page classes dump level `level` leaves out, as makedumpfile names them: "zero, cache,
/// private cache, user and free pages".
pub fn excluded_classes(level: u32) -> String {
    const CLASSES: [&str; 5] = ["zero", "cache", "private cache", "user", "free"];
    let names: Vec<&str> =
        CLASSES.iter().enumerate().filter(|(i, _)| level & (1 << i) != 0).map(|(_, n)| *n).collect();
    match names.as_slice() {
        [] => "no page class".to_string(),
        [one] => format!("{one} pages"),
        [init @ .., last] => format!("{} and {last} pages", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_at_the_c_offsets() {
        let h = DiskDumpHeader {
            utsname: UtsName::new("Linux", "host", "6.1.0-56-amd64", "#1 SMP", "x86_64", "(none)"),
            timestamp_sec: 1_700_000_000,
            timestamp_usec: 123,
            status: DUMP_DH_COMPRESSED_ZSTD | DUMP_DH_COMPRESSED_INCOMPLETE,
            block_size: 4096,
            sub_hdr_size: 2,
            bitmap_blocks: 4,
            max_mapnr: 0x10000,
            total_ram_blocks: 77,
            current_cpu: 1,
            nr_cpus: 2,
            ..DiskDumpHeader::default()
        };
        let b = h.to_bytes();
        assert_eq!(b.len(), DISK_DUMP_HEADER_SIZE);
        assert_eq!(&b[..8], b"KDUMP   ");
        assert_eq!(b.u32_at(8), Some(6));
        assert_eq!(&b[12 + 2 * 65..12 + 2 * 65 + 14], b"6.1.0-56-amd64");
        assert_eq!(b.u64_at(408), Some(1_700_000_000));
        assert_eq!(b.u32_at(424), Some(0x28));
        assert_eq!(b.u32_at(428), Some(4096));
        assert_eq!(b.u32_at(436), Some(4));
        assert_eq!(b.u32_at(440), Some(0x10000));
        assert_eq!(b.u32_at(460), Some(2));
        assert_eq!(DiskDumpHeader::parse(&b), Ok(h.clone()));
        assert_eq!(UtsName::text(&h.utsname.release), "6.1.0-56-amd64");
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(DiskDumpHeader::parse(&bad).unwrap_err().to_string().contains("XDUMP"));
        let e = DiskDumpHeader::parse(&b[..100]).unwrap_err().to_string();
        assert!(e.contains("disk_dump_header"), "{e}");
    }

    #[test]
    fn sub_header_and_descriptor_round_trip() {
        let s = SubHeader {
            phys_base: 0x1_0000_0000,
            dump_level: 31,
            split: 0,
            start_pfn: 1,
            end_pfn: 2,
            offset_vmcoreinfo: 0x1234,
            size_vmcoreinfo: 0x56,
            offset_note: 0x1068,
            size_note: 0x400,
            offset_eraseinfo: 0,
            size_eraseinfo: 0,
            start_pfn_64: 0,
            end_pfn_64: 0x10000,
            max_mapnr_64: 0x10000,
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), SUB_HEADER_SIZE);
        assert_eq!(b.u32_at(8), Some(31));
        assert_eq!(b.u64_at(48), Some(0x1068));
        assert_eq!(b.u64_at(96), Some(0x10000));
        assert_eq!(SubHeader::parse(&b), Ok(s.clone()));
        let v3 = s.clone().for_version(3);
        assert_eq!((v3.offset_vmcoreinfo, v3.offset_note, v3.max_mapnr_64), (0x1234, 0, 0));
        assert!(SubHeader::parse(&b[..50]).is_err());

        let d = PageDesc {
            offset: 0x5000,
            size: 1234,
            flags: DUMP_DH_COMPRESSED_ZLIB,
            page_flags: 0x17ffffc0000000,
        };
        let b = d.to_bytes();
        assert_eq!(b.len(), PAGE_DESC_SIZE);
        assert_eq!(b.u64_at(0), Some(0x5000));
        assert_eq!(b.u32_at(8), Some(1234));
        assert_eq!(b.u32_at(12), Some(1));
        assert_eq!(PageDesc::parse(&b), Ok(d));
        assert!(PageDesc::parse(&b[..23]).is_err());
    }

    #[test]
    fn dump_level_names() {
        assert_eq!(excluded_classes(31), "zero, cache, private cache, user and free pages");
        assert_eq!(excluded_classes(1), "zero pages");
        assert_eq!(excluded_classes(17), "zero and free pages");
        assert_eq!(excluded_classes(0), "no page class");
    }
}
