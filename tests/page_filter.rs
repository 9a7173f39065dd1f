//! The page filter against makedumpfile on the same memory: the 6.1 fixture's ELF core
//! classified at level 31 from its own struct page array (BTF layout, VMCOREINFO numbers),
//! compared page by page with `post-panic.kdump-d31-zlib`, which Debian's makedumpfile 1.7.2
//! wrote with `-d 31 -c` from that core and the DWARF vmlinux.

mod common;

use common::*;
use dmastub::linux::{DumpLevel, PageClass, PageLayout, PageSet, classify};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::{self, OpenOptions};
use dmastub::{Hints, VirtAddr, discover};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

const FIXTURE: &str = "linux-6.1-kaslr";

/// What a kdump-compressed file says of each pfn: a minimal reader of its header, bitmap2
/// and page descriptors. To be replaced by `dmastub::phys::kdump` once the kdump reader
/// (branch `kdump-reader`) is merged.
struct KdumpPages {
    max_mapnr: u64,
    /// bitmap2: the pages the dump holds (zero pages included: they point at one shared page).
    dumped: Vec<u8>,
    /// The dumped pfns whose descriptor points at the shared zero page.
    zero: Vec<u64>,
}

impl KdumpPages {
    fn read(path: &Path) -> Self {
        let f = std::fs::read(path).expect("read the kdump file");
        assert_eq!(&f[..8], b"KDUMP   ", "{}: not a kdump-compressed file", path.display());
        let i32_at = |o: usize| i32::from_le_bytes(f[o..o + 4].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(f[o..o + 4].try_into().unwrap());
        let block = i32_at(428) as usize;
        let sub_hdr = i32_at(432) as usize;
        let bitmap_blocks = u32_at(436) as usize;
        let max_mapnr = u64::from(u32_at(440));
        let bitmaps = (1 + sub_hdr) * block;
        let half = bitmap_blocks * block / 2;
        let dumped = f[bitmaps + half..bitmaps + 2 * half].to_vec();
        // Page descriptors follow the bitmaps, one per dumped pfn in order: offset (i64),
        // size (u32), flags (u32), page_flags (u64). The zero pages share one offset.
        let descs = bitmaps + 2 * half;
        let mut offsets = Vec::new();
        for pfn in 0..max_mapnr {
            if dumped[(pfn / 8) as usize] & (1 << (pfn % 8)) != 0 {
                let o = descs + offsets.len() * 24;
                offsets.push((pfn, i64::from_le_bytes(f[o..o + 8].try_into().unwrap())));
            }
        }
        let mut uses: HashMap<i64, usize> = HashMap::new();
        for (_, o) in &offsets {
            *uses.entry(*o).or_default() += 1;
        }
        let zero = offsets.iter().filter(|(_, o)| uses[o] > 1).map(|(p, _)| *p).collect();
        Self { max_mapnr, dumped, zero }
    }

    fn dumped(&self, pfn: u64) -> bool {
        pfn < self.max_mapnr && self.dumped[(pfn / 8) as usize] & (1 << (pfn % 8)) != 0
    }
}

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
    let set = classify(&kernel, &mut space, DumpLevel::ALL, &mut |done, total| {
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
    let mdf = KdumpPages::read(&dir.join("post-panic.kdump-d31-zlib"));
    let mut run = classify_fixture(&dir);
    let set = &run.set;
    println!(
        "classified {} pfns in {:.3} s: {} kept; {}",
        set.max_pfn,
        run.secs,
        set.kept_count(),
        set.counts
    );
    println!(
        "mem_map read: {} bytes in {} reads, {} ranges {:x?}",
        set.mem_map_bytes, run.reads, set.mem_map_ranges.len(), set.mem_map_ranges
    );
    for n in &set.notes {
        println!("note: {n}");
    }
    let zero: std::collections::BTreeSet<u64> = mdf.zero.iter().copied().collect();
    let max = set.max_pfn.max(mdf.max_mapnr);
    let (mut both, mut only_mdf, mut only_us) = (0u64, Vec::new(), Vec::new());
    for pfn in 0..max {
        match (run.set.is_kept(pfn), mdf.dumped(pfn)) {
            (true, true) => both += 1,
            (false, true) => only_mdf.push(pfn),
            (true, false) => only_us.push(pfn),
            _ => {}
        }
    }
    println!(
        "makedumpfile dumps {} pages ({} zero); both keep {both}; only makedumpfile {}; only dmastub {}",
        (0..mdf.max_mapnr).filter(|&p| mdf.dumped(p)).count(),
        zero.len(),
        only_mdf.len(),
        only_us.len()
    );
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for &pfn in only_mdf.iter().chain(&only_us) {
        let side = if run.set.is_kept(pfn) { "dmastub keeps" } else { "makedumpfile keeps" };
        let c = class_of(&mut run, pfn).map_or("unreadable".to_string(), |(c, n, _)| format!("{c}/{n}"));
        *by.entry(format!("{side}: {c} zero={}", zero.contains(&pfn))).or_default() += 1;
    }
    for (k, v) in &by {
        println!("{v:8} {k}");
    }
    for &pfn in only_mdf.iter().chain(&only_us).take(20) {
        if let Some((c, n, page)) = class_of(&mut run, pfn) {
            println!("pfn {pfn:#x}: {c}/{n} {:02x?}", &page);
        }
    }
}
