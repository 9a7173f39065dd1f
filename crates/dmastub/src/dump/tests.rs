//! The writers over memory built here: what they write reads back through dmastub's own
//! readers, page for page; pages that cannot be read are left out, never zeroed; a stopped dump
//! is a partial file marked as such.

use super::*;
use crate::addr::PhysAddr;
use crate::mmu::MmuConfig;
use crate::phys::{BufferMem, OpenOptions, PhysMem, RamRange, SourceKind, open_file};
use crate::testing::XorShift;
use std::sync::atomic::Ordering;

const PAGES: u64 = 3000;

/// Memory whose listed pages fail to read, as a dump that lacks them or a device that fails.
struct Holey {
    inner: BufferMem,
    missing: Vec<u64>,
    device_fails_from: Option<u64>,
}

impl PhysMem for Holey {
    fn name(&self) -> &str {
        "holey"
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Buffer
    }
    fn ram(&self) -> &[RamRange] {
        self.inner.ram()
    }
    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        let (first, last) = (addr.0 / PAGE, (addr.0 + buf.len() as u64 - 1) / PAGE);
        if let Some(p) = self.missing.iter().find(|p| (first..=last).contains(p)) {
            return Err(PhysError::NotRam {
                addr: PhysAddr(p * PAGE),
                len: PAGE,
                source_name: "holey".into(),
            });
        }
        if self.device_fails_from.is_some_and(|d| last >= d) {
            return Err(PhysError::device(addr, "holey".to_string(), "the link is down".to_string()));
        }
        self.inner.read(addr, buf)
    }
}

/// `PAGES` pages: random bytes, every seventh page all zeros.
fn memory() -> Vec<u8> {
    let mut rng = XorShift::new(0x5eed);
    let mut bytes = vec![0u8; (PAGES * PAGE) as usize];
    for (i, page) in bytes.chunks_mut(PAGE as usize).enumerate() {
        if i % 7 != 0 {
            // Compressible, like real memory: a few distinct words repeated.
            for w in page.chunks_mut(8) {
                w.copy_from_slice(&rng.below(64).to_le_bytes());
            }
        }
    }
    bytes
}

fn space(mem: Box<dyn PhysMem>) -> AddressSpace {
    AddressSpace::new(mem, MmuConfig::default())
}

fn dump(
    space: &mut AddressSpace,
    opts: &DumpOptions,
    path: &std::path::Path,
    stop_after: Option<u64>,
) -> DumpSummary {
    let pages = PageSet::all_ram(space.mem().ram());
    let file = std::fs::File::create(path).unwrap();
    let stop = AtomicBool::new(false);
    let mut on_progress = |p: &Progress| {
        if stop_after.is_some_and(|n| p.pages_done >= n) {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let machine =
        Machine { vmcoreinfo: Some(b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n".to_vec()), ..Machine::default() };
    write_dump(space, &pages, &machine, opts, &file, Control { progress: &mut on_progress, stop: &stop })
        .unwrap()
}

fn opts(format: DumpFormat, compression: Compression) -> DumpOptions {
    DumpOptions { format, compression, level: DumpLevel(1) }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dmastub-dump-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn every_format_and_compression_reads_back_page_for_page() {
    let bytes = memory();
    let cases = [
        (DumpFormat::Elf, Compression::None),
        (DumpFormat::Kdump, Compression::None),
        (DumpFormat::Kdump, Compression::Zlib),
        (DumpFormat::Kdump, Compression::Lzo),
        (DumpFormat::Kdump, Compression::Snappy),
        (DumpFormat::Kdump, Compression::Zstd),
    ];
    for (format, compression) in cases {
        let path = scratch(&format!("all-{format:?}-{}", compression.name()));
        let mut sp = space(Box::new(BufferMem::new("mem", bytes.clone())));
        let s = dump(&mut sp, &opts(format, compression), &path, None);
        assert!(s.complete && s.stopped.is_none(), "{format:?} {compression:?}: {s:?}");
        assert_eq!(s.pages_written, PAGES);
        assert_eq!(s.zero_pages, PAGES.div_ceil(7));
        let mut back = open_file(&path, &OpenOptions::default()).unwrap();
        assert_eq!(back.ram_bytes(), PAGES * PAGE, "{format:?} {compression:?}");
        let vmci = back.core_notes().iter().find(|n| n.name == "VMCOREINFO").map(|n| n.desc.clone());
        assert_eq!(vmci.as_deref(), Some(&b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\n"[..]));
        let mut got = vec![0u8; bytes.len()];
        back.read(PhysAddr(0), &mut got).unwrap();
        assert!(got == bytes, "{format:?} {compression:?}: the dump's memory differs");
        if compression != Compression::None {
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(size < bytes.len() as u64 / 2, "{compression:?} compressed {} to {size}", bytes.len());
        }
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn unreadable_pages_are_left_out_never_zeroed() {
    let bytes = memory();
    let missing = vec![5, 6, 1500, 2999];
    for format in [DumpFormat::Kdump, DumpFormat::Elf] {
        let path = scratch(&format!("holes-{format:?}"));
        let mem = Holey {
            inner: BufferMem::new("mem", bytes.clone()),
            missing: missing.clone(),
            device_fails_from: None,
        };
        let mut sp = space(Box::new(mem));
        let s = dump(&mut sp, &opts(format, Compression::Zstd), &path, None);
        assert!(s.complete, "{format:?}: {s:?}");
        assert_eq!(s.unreadable_pages, missing.len() as u64);
        assert_eq!(s.pages_written, PAGES - missing.len() as u64);
        let mut back = open_file(&path, &OpenOptions::default()).unwrap();
        let mut page = vec![0u8; PAGE as usize];
        for pfn in 0..PAGES {
            let r = back.read(PhysAddr(pfn * PAGE), &mut page);
            if missing.contains(&pfn) {
                assert!(r.is_err(), "{format:?}: page {pfn} was not read, yet the dump gives bytes for it");
            } else {
                r.unwrap_or_else(|e| panic!("{format:?}: page {pfn}: {e}"));
                assert!(
                    page[..] == bytes[(pfn * PAGE) as usize..][..PAGE as usize],
                    "{format:?}: page {pfn}"
                );
            }
        }
        std::fs::remove_file(&path).unwrap();
    }
}

/// A stopped dump and one whose source dies: the pages before are there, the file says it is
/// partial, and the pages after read as errors.
#[test]
fn stopped_dumps_are_partial_and_marked() {
    let bytes = memory();
    for format in [DumpFormat::Kdump, DumpFormat::Elf] {
        for device_dies in [false, true] {
            let path = scratch(&format!("stop-{format:?}-{device_dies}"));
            let mem = Holey {
                inner: BufferMem::new("mem", bytes.clone()),
                missing: Vec::new(),
                device_fails_from: device_dies.then_some(2100),
            };
            let mut sp = space(Box::new(mem));
            let stop_after = (!device_dies).then_some(BATCH_PAGES as u64);
            let s = dump(&mut sp, &opts(format, Compression::Lzo), &path, stop_after);
            assert!(!s.complete, "{format:?}: {s:?}");
            let why = s.stopped.clone().unwrap();
            let written = if device_dies { 2100 } else { BATCH_PAGES as u64 };
            assert_eq!(s.pages_written, written, "{format:?} {why}");
            assert!(
                why.contains(if device_dies { "stopped answering" } else { "stopped by the user" }),
                "{why}"
            );
            let head = std::fs::read(&path).unwrap();
            let marked = match format {
                DumpFormat::Kdump => {
                    let h = crate::phys::kdump::DiskDumpHeader::parse(&head).unwrap();
                    h.status & crate::phys::kdump::header::DUMP_DH_COMPRESSED_INCOMPLETE != 0
                }
                DumpFormat::Elf => u32::from_le_bytes(head[48..52].try_into().unwrap()) & 1 != 0,
            };
            assert!(marked, "{format:?}: a partial dump must say so in its header");
            let mut back = open_file(&path, &OpenOptions::default()).unwrap();
            let mut got = vec![0u8; (written * PAGE) as usize];
            back.read(PhysAddr(0), &mut got).unwrap();
            assert!(got[..] == bytes[..got.len()]);
            let mut page = [0u8; PAGE as usize];
            let past = back.read(PhysAddr(written * PAGE), &mut page).unwrap_err();
            if format == DumpFormat::Kdump {
                // Level 1 could have left a zero page out too: the reader says both.
                assert!(
                    matches!(
                        past,
                        PhysError::Excluded { reason: crate::phys::Exclusion::NotCapturedOrLevel(1), .. }
                    ),
                    "{past}"
                );
            }
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// A source whose headers claim RAM near the top of the physical address space.
struct ClaimsHugeRam([RamRange; 1]);

impl PhysMem for ClaimsHugeRam {
    fn name(&self) -> &str {
        "huge"
    }
    fn kind(&self) -> SourceKind {
        SourceKind::ElfCore
    }
    fn ram(&self) -> &[RamRange] {
        &self.0
    }
    fn read(&mut self, addr: PhysAddr, _buf: &mut [u8]) -> Result<(), PhysError> {
        Err(PhysError::NotRam { addr, len: PAGE, source_name: "huge".into() })
    }
}

#[test]
fn ram_claimed_near_the_top_of_physical_memory_is_refused_before_any_bitmap() {
    let ram = RamRange { start: PhysAddr(1 << 51), len: PAGE };
    let mut sp = space(Box::new(ClaimsHugeRam([ram])));
    let e = dump_ram(&mut sp, None).unwrap_err();
    assert!(matches!(e, DumpError::TooLarge(_)), "{e}");
    let fine = RamRange { start: PhysAddr(0), len: 1 << 30 };
    let mut sp = space(Box::new(ClaimsHugeRam([fine])));
    assert_eq!(dump_ram(&mut sp, None).unwrap().0, vec![fine]);
}
