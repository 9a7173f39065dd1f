//! kdump-compressed files built here, with the module's own structures and codecs: every
//! compression, raw and zero pages, excluded and never-captured pages, bad descriptors, cut and
//! corrupted headers, and the flattened form with records out of order and overlapping.

use super::header::*;
use super::store::{self, build_flattened};
use super::*;
use crate::addr::PhysAddr;
use crate::phys::{Exclusion, OpenOptions, PhysError, PhysMem, SourceKind, open_file};
use std::path::PathBuf;

const BS: usize = 4096;

/// What a dumped pfn holds.
#[derive(Clone)]
pub(crate) enum Content {
    /// A page, compressed with this codec (stored raw when it does not shrink).
    Page(Vec<u8>, Compression),
    /// makedumpfile's shared zero page.
    Zero,
    /// This descriptor as it stands (offset relative to the start of the page data when
    /// `relative`), for bad ones.
    Desc(PageDesc, bool),
}

/// A kdump file to build.
pub(crate) struct Dump {
    pub header: DiskDumpHeader,
    pub sub: SubHeader,
    /// pfns of RAM (bitmap1).
    pub valid: Vec<u64>,
    /// Dumped pfns, ascending (bitmap2), with what they hold.
    pub pages: Vec<(u64, Content)>,
    /// ELF notes for offset_note/size_note.
    pub notes: Vec<u8>,
    /// VMCOREINFO text for offset_vmcoreinfo/size_vmcoreinfo.
    pub vmcoreinfo: Vec<u8>,
    /// Bytes of each bitmap (default: enough for max_mapnr, rounded to a block).
    pub bitmap_bytes: Option<usize>,
}

impl Dump {
    pub(crate) fn new(max_mapnr: u64) -> Self {
        Dump {
            header: DiskDumpHeader { status: DUMP_DH_COMPRESSED_ZLIB, ..DiskDumpHeader::default() },
            sub: SubHeader { dump_level: 31, max_mapnr_64: max_mapnr, ..SubHeader::default() },
            valid: Vec::new(),
            pages: Vec::new(),
            notes: Vec::new(),
            vmcoreinfo: Vec::new(),
            bitmap_bytes: None,
        }
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut header = self.header.clone();
        let mut sub = self.sub.clone();
        header.max_mapnr = sub.max_mapnr_64.min(u64::from(u32::MAX)) as u32;
        let area = SUB_HEADER_SIZE + self.notes.len() + self.vmcoreinfo.len();
        header.sub_hdr_size = area.div_ceil(BS) as u32;
        if !self.notes.is_empty() {
            (sub.offset_note, sub.size_note) = ((BS + SUB_HEADER_SIZE) as u64, self.notes.len() as u64);
        }
        if !self.vmcoreinfo.is_empty() {
            sub.offset_vmcoreinfo = (BS + SUB_HEADER_SIZE + self.notes.len()) as u64;
            sub.size_vmcoreinfo = self.vmcoreinfo.len() as u64;
        }
        let half = self.bitmap_bytes.unwrap_or((sub.max_mapnr_64 as usize).div_ceil(8).div_ceil(BS) * BS);
        header.bitmap_blocks = (2 * half / BS) as u32;
        let mut f = header.to_bytes();
        f.resize(BS, 0);
        f.extend_from_slice(&sub.to_bytes());
        f.extend_from_slice(&self.notes);
        f.extend_from_slice(&self.vmcoreinfo);
        f.resize((1 + header.sub_hdr_size as usize) * BS, 0);
        let mut bitmap = vec![0u8; 2 * half];
        for &pfn in &self.valid {
            bitmap[(pfn / 8) as usize] |= 1 << (pfn % 8);
        }
        for (pfn, _) in &self.pages {
            bitmap[half + (pfn / 8) as usize] |= 1 << (pfn % 8);
        }
        f.extend_from_slice(&bitmap);
        let data_at = (f.len() + self.pages.len() * PAGE_DESC_SIZE) as u64;
        let zero = self.pages.iter().any(|(_, c)| matches!(c, Content::Zero));
        let mut data = if zero { vec![0u8; BS] } else { Vec::new() };
        let mut out = Vec::new();
        for (_, c) in &self.pages {
            let d = match c {
                Content::Zero => PageDesc { offset: data_at, size: BS as u32, flags: 0, page_flags: 0 },
                Content::Page(page, comp) => {
                    let offset = data_at + data.len() as u64;
                    if comp.compress(page, &mut out) {
                        data.extend_from_slice(&out);
                        PageDesc { offset, size: out.len() as u32, flags: comp.flag(), page_flags: 0 }
                    } else {
                        data.extend_from_slice(page);
                        PageDesc { offset, size: BS as u32, flags: 0, page_flags: 0 }
                    }
                }
                Content::Desc(d, relative) => {
                    PageDesc { offset: if *relative { data_at + d.offset } else { d.offset }, ..*d }
                }
            };
            d.write_to(&mut f);
        }
        f.extend_from_slice(&data);
        f
    }
}

/// A page that compresses, different for each pfn.
pub(crate) fn page(pfn: u64) -> Vec<u8> {
    let mut p = vec![0u8; BS];
    for (i, b) in p.iter_mut().enumerate() {
        *b = if i % 64 < 16 { (pfn as u8).wrapping_mul(7) ^ (i / 64) as u8 } else { (i % 7) as u8 };
    }
    p[..8].copy_from_slice(&pfn.to_le_bytes());
    p
}

/// A page that does not compress.
fn noise(seed: u64) -> Vec<u8> {
    let mut rng = crate::testing::XorShift::new(seed | 1);
    (0..BS).map(|_| rng.below(256) as u8).collect()
}

struct Files(PathBuf);

impl Files {
    fn new() -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dmastub-kdump-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files(dir)
    }

    fn open(&self, name: &str, bytes: &[u8]) -> Result<Box<dyn PhysMem>, String> {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        open_file(&path, &OpenOptions::default()).map_err(|e| e.to_string())
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// pfns 0..64 RAM; 2..40 dumped with every codec in turn, 20 raw noise, 30 the zero page;
/// 40..64 excluded.
fn sample() -> (Dump, Vec<Option<Vec<u8>>>) {
    let mut d = Dump::new(64);
    d.valid = (0..64).collect();
    let mut want = vec![None; 64];
    for pfn in 2..40u64 {
        let c = if pfn == 30 {
            Content::Zero
        } else if pfn == 20 {
            Content::Page(noise(pfn), Compression::Zstd)
        } else {
            Content::Page(page(pfn), Compression::ALL[pfn as usize % 5])
        };
        want[pfn as usize] = Some(match &c {
            Content::Page(p, _) => p.clone(),
            _ => vec![0u8; BS],
        });
        d.pages.push((pfn, c));
    }
    (d, want)
}

fn check_all(m: &mut dyn PhysMem, want: &[Option<Vec<u8>>]) {
    let mut buf = vec![0u8; BS];
    for (pfn, w) in want.iter().enumerate() {
        let r = m.read(PhysAddr(pfn as u64 * BS as u64), &mut buf);
        match w {
            Some(w) => assert!(r.is_ok() && &buf == w, "pfn {pfn}: {r:?}"),
            None => assert!(r.is_err(), "pfn {pfn} read"),
        }
    }
}

#[test]
fn every_compression_raw_and_zero_pages_read_back() {
    let files = Files::new();
    let (d, want) = sample();
    let mut m = files.open("sample.kdump", &d.bytes()).unwrap();
    assert_eq!(m.kind(), SourceKind::Kdump);
    assert_eq!(m.ram_bytes(), 64 * BS as u64);
    check_all(&mut *m, &want);
    // One read across many pages, unaligned, cold and then cached.
    let wanted: Vec<u8> = (2..40).flat_map(|p| want[p].clone().unwrap()).collect();
    for _ in 0..2 {
        let mut m = files.open("sample2.kdump", &d.bytes()).unwrap();
        let mut big = vec![0u8; wanted.len() - 300];
        m.read(PhysAddr(2 * BS as u64 + 100), &mut big).unwrap();
        assert_eq!(big, wanted[100..wanted.len() - 200]);
        m.read(PhysAddr(2 * BS as u64 + 100), &mut big).unwrap();
        assert_eq!(big, wanted[100..wanted.len() - 200]);
    }
    let desc = m.describe();
    assert!(desc.starts_with("kdump-compressed vmcore (zlib, dump level 31"), "{desc}");
    assert!(desc.contains("256 KiB RAM in 1 range, 152 KiB of it dumped"), "{desc}");
}

#[test]
fn excluded_pages_are_errors_never_zeros() {
    let files = Files::new();
    let (mut d, _) = sample();
    d.valid.retain(|&p| p != 63);
    let mut m = files.open("ex.kdump", &d.bytes()).unwrap();
    let mut buf = [0xaau8; 16];
    let e = m.read(PhysAddr(41 * 4096 + 8), &mut buf).unwrap_err();
    assert_eq!(
        e.to_string(),
        "ex.kdump: physical 0x29008 was excluded by the dump (dump level 31: zero, cache, private cache, user \
         and free pages left out)"
    );
    assert!(!e.is_device_failure());
    assert!(matches!(e, PhysError::Excluded { reason: Exclusion::DumpLevel(31), .. }));
    // A read from a dumped page into an excluded one names the first excluded byte.
    let mut two = vec![0u8; 8192];
    let e = m.read(PhysAddr(39 * 4096), &mut two).unwrap_err();
    assert!(matches!(e, PhysError::Excluded { addr: PhysAddr(0x28000), .. }), "{e:?}");
    // Not RAM at all: pfn 63 (bitmap1 clear) and past max_mapnr.
    let e = m.read(PhysAddr(63 * 4096), &mut buf).unwrap_err();
    assert!(matches!(e, PhysError::NotRam { .. }), "{e:?}");
    assert!(matches!(m.read(PhysAddr(64 * 4096), &mut buf), Err(PhysError::NotRam { .. })));
    assert_eq!(m.ram().len(), 1);
    assert_eq!(m.ram()[0].len, 63 * 4096);

    let k = KdumpMem::open(&files.0.join("ex.kdump")).unwrap();
    assert!(k.valid(41) && !k.dumped(41) && k.dumped(39) && !k.valid(63) && !k.valid(64));
    assert_eq!((k.dump_level(), k.max_pfn(), k.dumped_pages()), (31, 64, 38));
}

#[test]
fn incomplete_dumps_open_and_say_what_was_not_captured() {
    let files = Files::new();
    let (mut d, want) = sample();
    d.header.status |= DUMP_DH_COMPRESSED_INCOMPLETE;
    // pfn 35 on: descriptors never written.
    for (pfn, c) in d.pages.iter_mut() {
        if *pfn >= 35 {
            *c = Content::Desc(PageDesc::default(), false);
        }
    }
    let bytes = d.bytes();
    let mut m = files.open("inc.kdump", &bytes).unwrap();
    assert!(m.describe().contains("incomplete dump"), "{}", m.describe());
    let mut buf = vec![0u8; BS];
    m.read(PhysAddr(34 * 4096), &mut buf).unwrap();
    assert_eq!(Some(&buf), want[34].as_ref());
    let e = m.read(PhysAddr(36 * 4096), &mut buf).unwrap_err();
    assert_eq!(
        e.to_string(),
        "inc.kdump: physical 0x24000 was not captured: the dump was stopped before this page"
    );
    assert!(!e.is_device_failure());
    // Cut inside the descriptor table: it still opens; the missing descriptors are not captured.
    let k = KdumpMem::open(&files.0.join("inc.kdump")).unwrap();
    let cut_at = (k.header().sub_hdr_size as usize + 1 + k.header().bitmap_blocks as usize) * BS
        + 10 * PAGE_DESC_SIZE
        + 5;
    let mut m = files.open("inc-cut.kdump", &bytes[..cut_at]).unwrap();
    let e = m.read(PhysAddr(20 * 4096), &mut buf).unwrap_err();
    assert!(matches!(e, PhysError::Excluded { reason: Exclusion::NotCaptured, .. }), "{e:?}");
    // The same cut without the flag is refused at open.
    let mut complete = bytes[..cut_at].to_vec();
    complete[424] &= !(DUMP_DH_COMPRESSED_INCOMPLETE as u8);
    let e = files.open("cut.kdump", &complete).err().unwrap();
    assert!(
        e.contains("page descriptors at offset 0x4000 (0x390 bytes) runs past the end of the file"),
        "{e}"
    );
}

#[test]
fn bad_descriptors_are_device_errors_naming_pfn_and_offset() {
    let files = Files::new();
    let cases: [(PageDesc, &str); 6] = [
        (
            PageDesc { offset: 0, size: 5000, flags: 1, page_flags: 0 },
            "size 0x1388 is larger than a page (0x1000)",
        ),
        (PageDesc { offset: 0x10, size: 0, flags: 0, page_flags: 0 }, "size 0"),
        (PageDesc { offset: 1 << 40, size: 100, flags: 1, page_flags: 0 }, "lies outside the page data"),
        (
            PageDesc { offset: 0, size: 100, flags: 0x40, page_flags: 0 },
            "page flags 0x40 name no known compression",
        ),
        (PageDesc { offset: 0, size: 100, flags: 0, page_flags: 0 }, "an uncompressed page of 0x64 bytes"),
        (
            PageDesc { offset: 0, size: 100, flags: DUMP_DH_COMPRESSED_ZSTD, page_flags: 0 },
            "(100 bytes, zstd): zstd",
        ),
    ];
    for (i, (desc, want)) in cases.into_iter().enumerate() {
        let mut d = Dump::new(16);
        d.valid = (0..16).collect();
        d.pages = vec![
            (3, Content::Page(page(3), Compression::Lzo)),
            (5, Content::Desc(desc, desc.offset < 1 << 40)),
        ];
        let mut bytes = d.bytes();
        bytes.extend_from_slice(&[0x5a; 200]); // data for the bad descriptor to point at
        let mut m = files.open(&format!("bad{i}.kdump"), &bytes).unwrap();
        let mut buf = vec![0u8; 64];
        m.read(PhysAddr(3 * 4096), &mut buf).unwrap();
        let e = m.read(PhysAddr(5 * 4096 + 4), &mut buf).unwrap_err();
        let s = e.to_string();
        assert!(e.is_device_failure(), "{s}");
        assert!(s.contains("pfn 0x5") && s.contains("offset 0x"), "{s}");
        assert!(s.contains(want), "case {i}: {s}");
    }
}

#[test]
fn notes_and_vmcoreinfo_become_core_notes() {
    let files = Files::new();
    let (mut d, _) = sample();
    let note = crate::phys::elf::build::note("CORE", 1, &[7; 336]);
    d.notes = note.clone();
    d.vmcoreinfo = b"OSRELEASE=6.1.0\nPAGESIZE=4096\n".to_vec();
    let m = files.open("notes.kdump", &d.bytes()).unwrap();
    let notes = m.core_notes();
    assert_eq!(notes.len(), 2);
    assert_eq!((notes[0].name.as_str(), notes[0].n_type, notes[0].desc.len()), ("CORE", 1, 336));
    assert_eq!(notes[1].name, "VMCOREINFO");
    assert_eq!(notes[1].desc, d.vmcoreinfo);
    // With a VMCOREINFO note among the notes, the sub-header's copy is not added again.
    d.notes = [note, crate::phys::elf::build::note("VMCOREINFO", 0, b"OSRELEASE=x\n")].concat();
    let m = files.open("notes2.kdump", &d.bytes()).unwrap();
    assert_eq!(m.core_notes().len(), 2);
    assert_eq!(m.core_notes()[1].desc, b"OSRELEASE=x\n");
    // A malformed note is an open error naming its offset.
    let mut bad = d.bytes();
    bad[BS + SUB_HEADER_SIZE + 4..BS + SUB_HEADER_SIZE + 8].copy_from_slice(&0x10000u32.to_le_bytes());
    let e = files.open("notes3.kdump", &bad).err().unwrap();
    assert!(e.contains("ELF notes at offset 0x1068: malformed note at offset 0x1068"), "{e}");
}

#[test]
fn qemu_bitmaps_shorter_than_max_mapnr_and_garbage_phys_base() {
    let files = Files::new();
    let mut d = Dump::new(1 << 20);
    d.sub.phys_base = 0xdead_beef_0000_0000;
    d.bitmap_bytes = Some(BS); // 32768 pfns, not 2^20
    d.valid = (0..100).chain(1000..1010).collect();
    d.pages = vec![
        (5, Content::Page(page(5), Compression::Snappy)),
        (1005, Content::Page(page(1005), Compression::Zstd)),
    ];
    let mut m = files.open("qemu.kdump", &d.bytes()).unwrap();
    assert_eq!(m.ram().len(), 2);
    let mut buf = vec![0u8; BS];
    m.read(PhysAddr(1005 * 4096), &mut buf).unwrap();
    assert_eq!(buf, page(1005));
    let k = KdumpMem::open(&files.0.join("qemu.kdump")).unwrap();
    assert_eq!(k.max_pfn(), 32768);
    assert_eq!(k.sub_header().phys_base, 0xdead_beef_0000_0000);
    assert_eq!(k.compression(), Compression::Zlib);
}

#[test]
fn cut_and_corrupt_headers_are_errors_at_each_stage() {
    let files = Files::new();
    let (d, _) = sample();
    let good = d.bytes();
    let cases: [(usize, &str); 5] = [
        (300, "disk_dump_header at offset 0x0 (0x1d0 bytes) runs past the end of the file (0x12c bytes)"),
        (
            5000,
            "sub-header area at offset 0x1000 (0x1000 bytes) runs past the end of the file (0x1388 bytes)",
        ),
        (2 * BS + 100, "bitmaps at offset 0x2000 (0x2000 bytes) runs past the end"),
        (4 * BS + 100, "page descriptors at offset 0x4000 (0x390 bytes) runs past the end"),
        (4 * BS, "page descriptors at offset 0x4000"),
    ];
    for (cut, want) in cases {
        let e = files.open("cut.kdump", &good[..cut]).err().unwrap();
        assert!(e.contains(want), "cut at {cut}: {e}");
    }
    let field = |at: usize, v: u32| {
        let mut b = good.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        files.open("field.kdump", &b).err().unwrap()
    };
    assert!(field(428, 3000).contains("block_size 0xbb8 at offset 0x1ac is not a power of two"));
    assert!(field(432, 0).contains("sub_hdr_size 0x0"));
    assert!(field(436, 0).contains("bitmap_blocks 0x0"));
    assert!(field(436, 1 << 30).contains("bitmaps at offset 0x2000"));
    assert!(field(8, 0).contains("header_version 0x0"));
    let mut b = good.clone();
    b[BS + 96..BS + 104].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(files.open("mapnr.kdump", &b).err().unwrap().contains("max_mapnr 0xffffffffffffffff"));
    let mut b = good.clone();
    b[2 * BS..3 * BS].fill(0);
    assert!(files.open("noram.kdump", &b).err().unwrap().contains("marks no page as RAM"));
    let mut b = good.clone();
    b[BS + 56..BS + 64].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(files.open("notes.kdump", &b).err().unwrap().contains("size_note 0x10000000000"));
}

#[test]
fn never_panics_on_corrupt_files() {
    let files = Files::new();
    let (mut d, _) = sample();
    d.pages.truncate(6);
    d.vmcoreinfo = b"OSRELEASE=1\n".to_vec();
    let good = d.bytes();
    let path = files.0.join("fuzz.kdump");
    let mut rng = crate::testing::XorShift::new(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; 2 * BS];
    let hot: Vec<usize> = (0..DISK_DUMP_HEADER_SIZE)
        .step_by(4)
        .chain((BS..BS + SUB_HEADER_SIZE).step_by(4))
        .chain(4 * BS..good.len())
        .collect();
    for round in 0..1500 {
        let mut b = good.clone();
        for _ in 0..1 + round % 4 {
            let i = hot[rng.below(hot.len() as u64) as usize];
            b[i] = [0, 1, 0x7f, 0x80, 0xff, rng.below(256) as u8][rng.below(6) as usize];
        }
        if round % 5 == 0 {
            b.truncate(rng.below(good.len() as u64) as usize + 1);
        }
        std::fs::write(&path, &b).unwrap();
        if let Ok(mut m) = open_file(&path, &OpenOptions::default()) {
            let _ = m.describe();
            for pfn in 0..12u64 {
                let _ = m.read(PhysAddr(pfn * 4096 + 100), &mut buf);
            }
        }
    }
}

/// The kdump file `bytes` as a flattened stream: cut into records of varied sizes, written in
/// a shuffled order, with stale records for the same places written first.
pub(crate) fn flatten(bytes: &[u8], seed: u64) -> Vec<u8> {
    let mut rng = crate::testing::XorShift::new(seed | 1);
    let mut pieces = Vec::new();
    let mut off = 0usize;
    while off < bytes.len() {
        let n = (1 + rng.below(3 * BS as u64) as usize).min(bytes.len() - off);
        pieces.push((off as u64, &bytes[off..off + n]));
        off += n;
    }
    for i in (1..pieces.len()).rev() {
        pieces.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Stale bytes over some places, overwritten by the real records that come after them.
    let junk = vec![0xeeu8; 3 * BS];
    let mut records: Vec<(u64, &[u8])> = Vec::new();
    for (k, p) in pieces.iter().enumerate() {
        if k % 3 == 0 {
            let start = p.0.saturating_sub(100);
            let len = (p.1.len() + 200).min(junk.len()).min(bytes.len() - start as usize);
            records.push((start, &junk[..len]));
        }
    }
    records.extend(pieces.iter().copied());
    build_flattened(&records)
}

#[test]
fn flattened_files_read_like_the_file_they_describe() {
    let files = Files::new();
    let (d, want) = sample();
    let bytes = d.bytes();
    for seed in [1, 2, 3] {
        let flat = flatten(&bytes, seed);
        let mut m = files.open("x.flat", &flat).unwrap();
        assert!(m.describe().contains("kdump-compressed vmcore, flattened (zlib"), "{}", m.describe());
        check_all(&mut *m, &want);
    }
    // The index is the file, exactly.
    let path = files.0.join("y.flat");
    std::fs::write(&path, flatten(&bytes, 9)).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let size = file.metadata().unwrap().len();
    let s = store::Store::flattened(file, size).unwrap();
    let mut back = vec![0u8; bytes.len()];
    s.pread(0, &mut back).unwrap();
    assert_eq!(back, bytes);
    let ext = s.extents().unwrap();
    assert!(ext.windows(2).all(|w| w[0].start + w[0].len <= w[1].start));

    // A hole, a cut stream, a bad record and a bad header.
    let holey = build_flattened(&[(0, &bytes[..BS]), (2 * BS as u64, &bytes[2 * BS..])]);
    let e = files.open("hole.flat", &holey).err().unwrap();
    assert!(e.contains("kdump_sub_header at offset 0x1000"), "{e}");
    let flat = flatten(&bytes, 4);
    let e = files.open("cut.flat", &flat[..flat.len() - 16]).err().unwrap();
    assert!(e.contains("flattened: no end marker"), "{e}");
    let mut neg = build_flattened(&[(0, &bytes[..100])]);
    neg[4096..4104].copy_from_slice(&(-5i64).to_be_bytes());
    let e = files.open("neg.flat", &neg).err().unwrap();
    assert!(
        e.contains("flattened: record at offset 0x1000 (for offset -5, 100 bytes): a negative offset"),
        "{e}"
    );
    let mut long = build_flattened(&[(0, &bytes[..100])]);
    long[4104..4112].copy_from_slice(&(1i64 << 40).to_be_bytes());
    let e = files.open("long.flat", &long).err().unwrap();
    assert!(e.contains("its bytes run past the end of the file"), "{e}");
    let mut ty = build_flattened(&[(0, &bytes[..100])]);
    ty[23] = 7;
    let e = files.open("type.flat", &ty).err().unwrap();
    assert!(e.contains("type 7 is not a flattened dump"), "{e}");
}

#[test]
fn writes_are_refused_at_open() {
    let files = Files::new();
    let (d, _) = sample();
    let path = files.0.join("w.kdump");
    std::fs::write(&path, d.bytes()).unwrap();
    let opts = OpenOptions { write: crate::phys::WriteMode::CopyOnWrite, ..OpenOptions::default() };
    let e = open_file(&path, &opts).err().unwrap().to_string();
    assert!(e.contains("a Kdump file cannot be written"), "{e}");
    let e = crate::phys::FileMem::open(&path, &OpenOptions::default()).err().unwrap().to_string();
    assert!(e.contains("open it with open_file"), "{e}");
}
