//! The page filter against makedumpfile on the same memory: the 6.1 fixture's ELF core
//! classified at level 31 from its own struct page array (BTF layout, VMCOREINFO numbers),
//! compared page by page with `post-panic.kdump-d31-zlib`, which Debian's makedumpfile 1.7.2
//! wrote with `-d 31 -c` from that core and the DWARF vmlinux.

mod common;

use common::*;
use dmastub::linux::{Btf, DumpLevel, PageClass, PageLayout, PageSet, classify};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::kdump::KdumpMem;
use dmastub::phys::{self, OpenOptions, PhysMem};
use dmastub::{Hints, PhysAddr, VirtAddr, discover};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const FIXTURE: &str = "linux-6.1-kaslr";

struct Run {
    set: PageSet,
    layout: PageLayout,
    space: AddressSpace,
    cr3: u64,
    secs: f64,
    reads: u64,
}

fn classify_fixture(dir: &Path) -> Run {
    let core = unpacked(dir, "post-panic.elf.zst");
    let mem = phys::open_file(&core, &OpenOptions::default()).expect("open the ELF core");
    let mut space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
    let kernel = discover(&mut space, Hints::default()).expect("discover the kernel");
    let layout = PageLayout::for_kernel(&kernel, &mut space).expect("the struct page layout");
    let before = space.stats();
    let t = Instant::now();
    let mut calls = 0u64;
    let ram = space.mem().ram().to_vec();
    let set = classify(&kernel, &mut space, &ram, DumpLevel::ALL, &mut |done, total| {
        assert!(done <= total);
        calls += 1;
    })
    .expect("classify at level 31");
    let secs = t.elapsed().as_secs_f64();
    let reads = space.stats().data_reads - before.data_reads;
    assert!(calls > 0, "progress was never told");
    Run { set, layout, space, cr3: kernel.cr3.value, secs, reads }
}

/// The class of `pfn` as the filter decides it alone (tails as kept), for the report.
fn class_of(run: &mut Run, pfn: u64) -> Option<(PageClass, u64, Vec<u8>)> {
    let size = run.layout.page_size;
    let mut buf = vec![0u8; 2 * size as usize];
    let at = VirtAddr(run.layout.vmemmap + pfn * size);
    run.space.read_virt_in(run.cr3, at, &mut buf).ok()?;
    let (page, next) = buf.split_at(size as usize);
    let (c, n) = run.layout.class_of(DumpLevel::ALL, pfn, page, Some(next));
    Some((c, n, page.to_vec()))
}

#[test]
fn level_31_matches_makedumpfile() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let mut mdf = KdumpMem::open(&dir.join("post-panic.kdump-d31-zlib")).expect("open makedumpfile's file");
    let mut run = classify_fixture(&dir);
    let set = run.set.clone();
    let ram_pfns: u64 = run.space.mem().ram().iter().map(|r| r.len / 4096).sum();
    println!(
        "classified {ram_pfns} RAM pfns (max_pfn {:#x}) in {:.1} ms: {}",
        set.max_pfn,
        run.secs * 1e3,
        set.counts
    );
    println!(
        "mem_map read: {} bytes ({:.4} x the {} bytes of struct page of RAM) in {} data reads; mem_map pages {:x?}",
        set.mem_map_bytes,
        set.mem_map_bytes as f64 / (ram_pfns * run.layout.page_size) as f64,
        ram_pfns * run.layout.page_size,
        run.reads,
        set.mem_map_ranges
    );
    for n in &set.notes {
        println!("note: {n}");
    }
    // makedumpfile keeps zero pages in bitmap2, their descriptors pointing at one shared page.
    let zero: Vec<u64> = {
        let mut page = vec![0u8; 4096];
        let dumped: Vec<u64> = (0..mdf.max_pfn()).filter(|&p| mdf.dumped(p)).collect();
        dumped
            .into_iter()
            .filter(|&p| mdf.read(PhysAddr(p * 4096), &mut page).is_ok() && page.iter().all(|&b| b == 0))
            .collect()
    };
    let (mut both, mut only_mdf, mut only_us) = (0u64, Vec::new(), Vec::new());
    for pfn in 0..set.max_pfn.max(mdf.max_pfn()) {
        match (set.is_kept(pfn), mdf.dumped(pfn)) {
            (true, true) => both += 1,
            (false, true) => only_mdf.push(pfn),
            (true, false) => only_us.push(pfn),
            _ => {}
        }
    }
    let mdf_dumped = (0..mdf.max_pfn()).filter(|&p| mdf.dumped(p)).count() as u64;
    println!(
        "makedumpfile -d 31 dumps {mdf_dumped} pages ({} of them zero pages, kept in bitmap2 with the shared zero page's descriptor), max_mapnr {:#x}",
        zero.len(),
        mdf.max_pfn()
    );
    println!(
        "dmastub keeps {}; both keep {both}; only makedumpfile keeps {}; only dmastub keeps {}",
        set.kept_count(),
        only_mdf.len(),
        only_us.len()
    );
    // Explain every difference, by class.
    let mut unexplained = Vec::new();
    let mut explained: BTreeMap<&str, u64> = BTreeMap::new();
    for &pfn in &only_mdf {
        let class = class_of(&mut run, pfn).map(|(c, n, _)| (c, n));
        unexplained.push(format!("pfn {pfn:#x}: makedumpfile keeps it, dmastub decided {class:?}"));
    }
    for &pfn in &only_us {
        let class = class_of(&mut run, pfn).map(|(c, n, _)| (c, n));
        unexplained.push(format!("pfn {pfn:#x}: dmastub keeps it, makedumpfile does not ({class:?})"));
    }
    // Past the last section the kernel has a struct page for, makedumpfile cuts max_mapnr
    // (get_mem_map's "Adjust max_mapnr"); the vmemmap maps no struct page there, and dmastub
    // leaves those pages out as not memory the kernel manages.
    let rom: Vec<u64> = (0xfffc0..0x100000).collect();
    for &pfn in &rom {
        assert!(!set.is_kept(pfn) && !mdf.dumped(pfn), "pfn {pfn:#x}: the BIOS ROM segment of QEMU's core");
    }
    *explained.entry("past makedumpfile's max_mapnr, no struct page: left out by both").or_default() +=
        set.counts.no_struct_page;
    for (why, n) in &explained {
        println!("explained: {n} pages {why}");
    }
    assert!(
        unexplained.is_empty(),
        "{} unexplained differences:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    // The same page set: the 64 pages of the BIOS ROM segment QEMU's core holds at 0xfffc0000
    // are the only RAM of the core without a struct page, and no struct page is unreadable.
    assert!(only_us.is_empty() && only_mdf.is_empty());
    assert_eq!(set.counts.no_struct_page, rom.len() as u64, "pages with no struct page: the ROM's alone");
    assert_eq!(set.counts.unreadable, 0, "unreadable struct pages");
    assert_eq!(set.kept_count(), mdf_dumped);
    // The comparison means something: every class the fixture has was met, in numbers.
    for c in [PageClass::Cache, PageClass::User, PageClass::Free] {
        assert!(set.counts.get(c) > 0, "no {c} pages decided: {}", set.counts);
    }
    assert!(!zero.is_empty(), "the kdump reader found no zero pages");
    assert_eq!(set.counts.get(PageClass::Kept) + set.counts.excluded() + set.counts.no_struct_page, ram_pfns);
    // Efficiency: the struct pages of RAM once, in a few large reads.
    assert!(set.mem_map_bytes <= ram_pfns * run.layout.page_size * 101 / 100, "{}", set.mem_map_bytes);
    assert!(run.reads <= 16, "{} data reads for the mem_map", run.reads);
    let mm_pages: u64 = set.mem_map_ranges.iter().map(|r| r.1 / 4096).sum();
    assert_eq!(mm_pages, 1024, "4 MiB of struct page for 256 MiB of RAM: {:x?}", set.mem_map_ranges);
    // The array's own pages are kernel memory the filter keeps anyway (memblock-reserved).
    for &(start, len) in &set.mem_map_ranges {
        assert!((start / 4096..(start + len) / 4096).all(|p| set.is_kept(p)), "mem_map page dropped");
    }
}

/// The layout from the kernel's BTF agrees with its VMCOREINFO field by field, and the flag
/// numbers a VMCOREINFO lacks come from the BTF's enums (`enum pageflags`,
/// `enum compound_dtor_id`) with the same values; the array is where the guest's own
/// `vmemmap_base` says (the truth file, recorded inside the guest).
#[test]
fn layout_from_btf_agrees_with_vmcoreinfo() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let core = unpacked(&dir, "post-panic.elf.zst");
    let mem = phys::open_file(&core, &OpenOptions::default()).expect("open the ELF core");
    let mut space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
    let kernel = discover(&mut space, Hints::default()).expect("discover the kernel");
    let full = PageLayout::for_kernel(&kernel, &mut space).expect("the struct page layout");
    let t = truth(&dir, "post-panic");
    assert_eq!(full.vmemmap, hex(&t["kaslr"]["vmemmap_base"]), "vmemmap_base");
    let same = |mut l: PageLayout| {
        l.notes.clone_from(&full.notes);
        l
    };
    let vmci = &kernel.vmcoreinfo.as_ref().expect("the kernel's VMCOREINFO").value;
    let only_vmci = PageLayout::resolve(None, Some(vmci), None, full.vmemmap).expect("VMCOREINFO alone");
    assert_eq!(same(only_vmci), full);
    let btf_path = unpacked(&dir, "vmlinux.btf.zst");
    let btf =
        Btf::parse(&std::fs::read(btf_path).expect("read the BTF"), "vmlinux.btf").expect("parse the BTF");
    let mut stripped = vmci.clone();
    stripped.entries.retain(|k, _| !(k.starts_with("NUMBER(PG_") || k == "NUMBER(HUGETLB_PAGE_DTOR)"));
    assert!(stripped.entries.len() + 8 <= vmci.entries.len());
    let from_enums =
        PageLayout::resolve(Some(&btf), Some(&stripped), Some(&btf), full.vmemmap).expect("BTF enums");
    assert_eq!(same(from_enums), full);
    let e =
        PageLayout::resolve(Some(&btf), Some(&stripped), None, full.vmemmap).expect_err("no PG_lru anywhere");
    assert!(e.to_string().contains("NUMBER(PG_lru)"), "{e}");
}

/// A DMA client that knows the machine's RAM (a NetTLP adapter reaches the whole physical
/// space; the writer is told the RAM some other way).
struct DmaWithRam {
    inner: dmastub::phys::nettlp::NetTlpMem,
    ram: Vec<dmastub::phys::RamRange>,
}

impl dmastub::PhysMem for DmaWithRam {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> dmastub::phys::SourceKind {
        self.inner.kind()
    }
    fn ram(&self) -> &[dmastub::phys::RamRange] {
        &self.ram
    }
    fn is_volatile(&self) -> bool {
        self.inner.is_volatile()
    }
    fn read(&mut self, addr: dmastub::PhysAddr, buf: &mut [u8]) -> Result<(), dmastub::PhysError> {
        self.inner.read(addr, buf)
    }
    fn read_segments(
        &mut self,
        segments: &mut [dmastub::phys::Segment<'_>],
    ) -> Result<(), dmastub::phys::SegmentError> {
        self.inner.read_segments(segments)
    }
    fn traffic(&self) -> Option<String> {
        self.inner.traffic()
    }
    fn reset_traffic(&mut self) {
        self.inner.reset_traffic()
    }
}

/// Over a (loopback, emulated) NetTLP link the array is read in a handful of batches: the
/// same page set as from the file, in few round trips.
#[test]
fn over_dma_the_same_pages_in_few_round_trips() {
    use dmastub::phys::nettlp::{NetTlpConfig, NetTlpMem};
    use dmastub_testkit::emulator::{EmulatorConfig, EmulatorHandle};
    use std::net::Ipv4Addr;
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let file = phys::open_file(&raw, &OpenOptions::default()).expect("open the raw image");
    let ram = file.ram().to_vec();
    let (adapter, local) = (Ipv4Addr::new(127, 0, 41, 2), Ipv4Addr::new(127, 0, 41, 1));
    let _emu = EmulatorHandle::spawn(file, EmulatorConfig { listen: adapter, ..EmulatorConfig::default() })
        .expect("start the emulator");
    let inner = NetTlpMem::connect(NetTlpConfig { adapter, local, ..NetTlpConfig::default() })
        .expect("open the client's sockets");
    let mut space =
        AddressSpace::new(Box::new(DmaWithRam { inner, ram: ram.clone() }), MmuConfig::new(Paging::Level4));
    let kernel = discover(&mut space, Hints::default()).expect("discover the kernel over DMA");
    space.mem_mut().reset_traffic();
    let before = space.stats();
    let t = Instant::now();
    let set = classify(&kernel, &mut space, &ram, DumpLevel::ALL, &mut |_, _| {}).expect("classify over DMA");
    let secs = t.elapsed().as_secs_f64();
    let after = space.stats();
    let traffic = space.mem().traffic().unwrap_or_default();
    println!(
        "over DMA: {:.1} ms, {} bytes of mem_map in {} data reads, {} page-table reads; {traffic}",
        secs * 1e3,
        set.mem_map_bytes,
        after.data_reads - before.data_reads,
        after.table_reads - before.table_reads
    );
    let from_file = classify_fixture(&dir).set;
    // The raw image has no ROM segment: the same decision on every pfn it holds.
    assert_eq!(set.max_pfn, 0x10000);
    assert!((0..set.max_pfn).all(|p| set.is_kept(p) == from_file.is_kept(p)), "DMA and file disagree");
    assert_eq!(set.mem_map_bytes, 0x10000 * 64 + 3 * 64);
    assert!(after.data_reads - before.data_reads <= 8, "{} data reads", after.data_reads - before.data_reads);
}
