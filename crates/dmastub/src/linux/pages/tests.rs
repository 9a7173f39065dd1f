//! The decision on a synthetic struct page array: real page tables map a vmemmap onto RAM
//! built in a test, with the 6.1 layout ([`PageLayout::linux_6_1`]).

use super::walk::classify_batched;
use super::*;
use crate::addr::{PhysAddr, VirtAddr};
use crate::mmu::{MmuConfig, PageSize, Paging, bits};
use crate::phys::PhysMem;
use crate::phys::buffer::BufferMem;
use crate::testing::PageTableBuilder;

const VMEMMAP: u64 = layout::DEFAULT_VMEMMAP_BASE;
/// 8 MiB of RAM: 2048 pfns; their struct pages (128 KiB) at 4 MiB.
const RAM: usize = 8 << 20;
const PFNS: u64 = (RAM as u64) / 4096;
const MEM_MAP: u64 = 4 << 20;

const LRU: u64 = 1 << 4;
const PRIVATE: u64 = 1 << 13;
const SWAPCACHE: u64 = 1 << 10;
const SWAPBACKED: u64 = 1 << 19;
const SLAB: u64 = 1 << 9;
const HWPOISON: u64 = 1 << 23;
const HEAD: u64 = 1 << 16;
const BUDDY: i32 = -129;
const OFFLINE: i32 = -257;

/// A machine whose vmemmap maps the struct pages of all its RAM.
struct Machine {
    b: PageTableBuilder,
    layout: PageLayout,
}

impl Machine {
    fn new() -> Self {
        let mut b = PageTableBuilder::new(Paging::Level4, RAM);
        let len = PFNS * 64;
        b.map_range(VirtAddr(VMEMMAP), PhysAddr(MEM_MAP), len, PageSize::Size4K, bits::WRITABLE)
            .expect("map the vmemmap");
        // Every struct page starts with _mapcount -1, as the kernel initialises it.
        for pfn in 0..PFNS {
            b.write_bytes(PhysAddr(MEM_MAP + pfn * 64 + 48), &(-1i32).to_le_bytes()).unwrap();
        }
        Self { b, layout: PageLayout::linux_6_1(VMEMMAP) }
    }

    fn at(pfn: u64, off: u64) -> PhysAddr {
        PhysAddr(MEM_MAP + pfn * 64 + off)
    }

    fn flags(&mut self, pfn: u64, flags: u64) -> &mut Self {
        self.b.write_u64(Self::at(pfn, 0), flags).unwrap();
        self
    }

    fn mapping(&mut self, pfn: u64, mapping: u64) -> &mut Self {
        self.b.write_u64(Self::at(pfn, 24), mapping).unwrap();
        self
    }

    fn private(&mut self, pfn: u64, private: u64) -> &mut Self {
        self.b.write_u64(Self::at(pfn, 40), private).unwrap();
        self
    }

    fn mapcount(&mut self, pfn: u64, v: i32) -> &mut Self {
        self.b.write_bytes(Self::at(pfn, 48), &v.to_le_bytes()).unwrap();
        self
    }

    /// A compound page of `order` headed at `head`: tails point at the head, the first tail
    /// holds the order and the destructor id.
    fn compound(&mut self, head: u64, order: u8, dtor: u8, head_flags: u64, mapping: u64) -> &mut Self {
        self.flags(head, head_flags | HEAD).mapping(head, mapping);
        let head_addr = VMEMMAP + head * 64;
        for t in head + 1..head + (1 << order) {
            self.b.write_u64(Self::at(t, 8), head_addr | 1).unwrap();
        }
        self.b.write_bytes(Self::at(head + 1, 16), &[dtor, order]).unwrap();
        self
    }

    fn classify(self, level: u8) -> PageSet {
        self.classify_in(level, 1 << 14)
    }

    fn classify_in(self, level: u8, per_batch: u64) -> PageSet {
        let root = self.b.root();
        let mem = self.b.into_mem("synthetic mem_map");
        let ram = mem.ram().to_vec();
        let mut space = AddressSpace::new(Box::new(mem), MmuConfig::new(Paging::Level4));
        let mut last = (0, 0);
        let set = classify_batched(
            &self.layout,
            &mut space,
            root,
            &ram,
            DumpLevel(level),
            &mut |d, t| last = (d, t),
            per_batch,
        )
        .expect("classify");
        assert_eq!(last, (PFNS, PFNS), "progress ends at every RAM pfn");
        set
    }
}

fn excluded(set: &PageSet) -> Vec<u64> {
    (0..set.max_pfn).filter(|&p| !set.is_kept(p)).collect()
}

#[test]
fn levels_parse_and_describe() {
    assert_eq!("31".parse::<DumpLevel>(), Ok(DumpLevel(31)));
    assert_eq!("0x1f".parse::<DumpLevel>(), Ok(DumpLevel(31)));
    assert!("32".parse::<DumpLevel>().is_err());
    assert!("-1".parse::<DumpLevel>().is_err());
    assert_eq!(DumpLevel(31).describe(), "zero, cache, private cache, user and free pages");
    assert_eq!(DumpLevel(0).describe(), "no pages");
    assert_eq!(DumpLevel(16).describe(), "free pages");
    assert_eq!(DumpLevel(17).describe(), "zero and free pages");
    assert!(DumpLevel(1).excludes_zero() && !DumpLevel(2).excludes_zero());
    assert!(DumpLevel(2).excludes(PageClass::Cache) && !DumpLevel(2).excludes(PageClass::CachePrivate));
    assert!(DumpLevel(4).excludes(PageClass::Cache) && DumpLevel(4).excludes(PageClass::CachePrivate));
    assert!(DumpLevel(0).excludes(PageClass::HwPoison) && !DumpLevel(31).excludes(PageClass::Kept));
}

#[test]
fn all_ram_keeps_whole_pages_of_every_range() {
    let ram = [
        RamRange { start: PhysAddr(0), len: 0x3000 },
        RamRange { start: PhysAddr(0x10800), len: 0x2000 }, // pfn 0x10 starts outside RAM
    ];
    let set = PageSet::all_ram(&ram);
    assert_eq!(set.max_pfn, 0x13);
    let kept: Vec<u64> = (0..0x20).filter(|&p| set.is_kept(p)).collect();
    assert_eq!(kept, [0, 1, 2, 0x11, 0x12]);
    assert_eq!(set.kept_count(), 5);
    assert_eq!(set.kept_runs().collect::<Vec<_>>(), [(0, 3), (0x11, 0x13)]);
    assert_eq!(set.counts.get(PageClass::Kept), 5);
}

#[test]
fn cache_pages_by_level() {
    let build = || {
        let mut m = Machine::new();
        m.flags(10, LRU).mapping(10, 0xffff_8880_0000_1000); // file cache
        m.flags(11, LRU | PRIVATE).mapping(11, 0xffff_8880_0000_1000); // with buffers
        m.flags(12, SWAPCACHE); // PG_swapcache alone is another flag sharing the bit
        m.flags(13, SWAPCACHE | SWAPBACKED); // in the swap cache
        m.flags(14, LRU | SWAPBACKED).mapping(14, 0xffff_8880_0000_2001); // anon on the LRU
        m
    };
    assert_eq!(excluded(&build().classify(2)), [10, 13]);
    let s = build().classify(4);
    assert_eq!(excluded(&s), [10, 11, 13]);
    assert_eq!((s.counts.get(PageClass::Cache), s.counts.get(PageClass::CachePrivate)), (2, 1));
    // Anonymous pages are never cache: user at level 8.
    assert_eq!(excluded(&build().classify(8)), [14]);
    assert_eq!(excluded(&build().classify(31)), [10, 11, 13, 14]);
    assert_eq!(build().classify(0).kept_count(), PFNS);
}

#[test]
fn anonymous_pages_are_user_but_slab_pages_never_are() {
    let mut m = Machine::new();
    m.mapping(20, 0xffff_8880_0000_3001); // anon
    m.mapping(21, 0xffff_8880_0000_3003); // KSM (anon | movable)
    m.flags(22, SLAB).mapping(22, 0xffff_8880_0000_3001); // slab data in the mapping word
    m.flags(23, SLAB | LRU).mapping(23, 0xffff_8880_0000_3001);
    let s = m.classify(8);
    assert_eq!(excluded(&s), [20, 21]);
    assert_eq!(s.counts.get(PageClass::User), 2);
}

#[test]
fn buddy_blocks_by_order() {
    let mut m = Machine::new();
    m.mapcount(64, BUDDY).private(64, 3); // pfns 64..72
    m.mapcount(1024, BUDDY).private(1024, 10); // 1024..2048
    m.mapcount(80, BUDDY).private(80, 11); // order past MAX_ORDER: kept
    m.mapcount(81, BUDDY).flags(81, SLAB).private(81, 0); // a slab is never a buddy
    let s = m.classify(16);
    let ex = excluded(&s);
    assert_eq!(ex.len(), 8 + 1024);
    assert!((64..72).all(|p| !s.is_kept(p)) && s.is_kept(72) && s.is_kept(80) && s.is_kept(81));
    assert!((1024..2048).all(|p| !s.is_kept(p)));
    assert_eq!(s.counts.get(PageClass::Free), 1032);
    assert_eq!(s.counts.get(PageClass::Kept), PFNS - 1032);
    // Free pages stay at levels without bit 16.
    let mut m = Machine::new();
    m.mapcount(64, BUDDY).private(64, 3);
    assert!(excluded(&m.classify(15)).is_empty());
}

#[test]
fn compound_pages_are_decided_by_their_head() {
    let mut m = Machine::new();
    // A THP: anonymous, order 9 at pfn 512.
    m.compound(512, 9, 3, 0, 0xffff_8880_0000_4001);
    // A hugetlbfs page (HUGETLB_PAGE_DTOR 2), order 2 at 32, mapped by a file.
    m.compound(32, 2, 2, 0, 0xffff_8880_0000_5000);
    // A kernel compound page (COMPOUND_PAGE_DTOR 1): kept, tails too.
    m.compound(40, 2, 1, 0, 0);
    let s = m.classify(8);
    assert!((512..1024).all(|p| !s.is_kept(p)) && s.is_kept(1024) && s.is_kept(511));
    assert!((32..36).all(|p| !s.is_kept(p)));
    assert!((40..44).all(|p| s.is_kept(p)));
    assert_eq!(s.counts.get(PageClass::User), 512 + 4);
    // At level 2 (cache only) the THP's tails stay: their head decides, and keeps.
    let mut m = Machine::new();
    m.compound(512, 9, 3, 0, 0xffff_8880_0000_4001);
    assert!(excluded(&m.classify(2)).is_empty());
}

#[test]
fn compound_order_the_pfn_is_not_aligned_to_is_ignored() {
    let mut m = Machine::new();
    // Head at odd pfn 101 claiming order 2: only the head is decided.
    m.compound(101, 2, 3, 0, 0xffff_8880_0000_4001);
    let s = m.classify(8);
    assert_eq!(excluded(&s), [101]);
    // A hugetlb head with a bad order is still hugetlb (makedumpfile keeps the dtor).
    let mut m = Machine::new();
    m.compound(201, 3, 2, 0, 0);
    assert_eq!(excluded(&m.classify(8)), [201]);
    // An order of 64 or more is ignored too.
    let mut m = Machine::new();
    m.compound(256, 1, 2, 0, 0);
    m.b.write_bytes(Machine::at(257, 17), &[70]).unwrap();
    assert_eq!(excluded(&m.classify(8)), [256]);
}

#[test]
fn compound_heads_across_batches_read_their_first_tail() {
    // Batches of 17 struct pages (a struct page size that does not divide 1 MiB gives such
    // batches): [34, 51) ends with the head of an order-1 THP at 50, its order in the next
    // batch's first page.
    let mut m = Machine::new();
    m.compound(50, 1, 3, 0, 0xffff_8880_0000_4001);
    m.compound(64, 5, 2, 0, 0); // hugetlb, over three batches
    m.mapcount(128, BUDDY).private(128, 6); // a free block over four batches
    let s = m.classify_in(31, 17);
    assert_eq!(excluded(&s), [50, 51].into_iter().chain(64..96).chain(128..192).collect::<Vec<_>>());
    assert_eq!(s.counts.get(PageClass::User), 34);
    assert_eq!(s.counts.get(PageClass::Free), 64);
    // What a decided block covers past its batch is not read: 51, [68, 96) and [136, 192).
    // Every batch but the last and the four skipped ([68, 85), [136, 153), [153, 170),
    // [170, 187)) reads one look-ahead struct page.
    let look_ahead = PFNS.div_ceil(17) - 1 - 4;
    assert_eq!(s.mem_map_bytes, (PFNS - 1 - 28 - 56 + look_ahead) * 64);
}

#[test]
fn hwpoison_and_offline_pages_go_at_every_level() {
    let mut m = Machine::new();
    m.flags(300, HWPOISON);
    m.mapcount(301, OFFLINE);
    m.mapcount(302, OFFLINE).flags(302, SLAB); // a slab is never offline
    let s = m.classify(1);
    assert_eq!(excluded(&s), [300, 301]);
    assert_eq!((s.counts.get(PageClass::HwPoison), s.counts.get(PageClass::Offline)), (1, 1));
}

#[test]
fn unmapped_struct_pages_are_not_kernel_memory() {
    let mut m = Machine::new();
    // Unmap the vmemmap page holding the struct pages of pfns 64..128: the kernel has none.
    m.b.set_entry(VirtAddr(VMEMMAP + 64 * 64), crate::mmu::Level::Pt, 0).unwrap();
    m.mapcount(128, BUDDY).private(128, 6);
    let s = m.classify(31);
    assert_eq!(excluded(&s), (64..192).collect::<Vec<_>>());
    assert_eq!((s.counts.no_struct_page, s.counts.unreadable), (64, 0));
    assert_eq!(s.counts.get(PageClass::Kept), PFNS - 128);
    assert_eq!(s.managed_end, PFNS, "RAM above the hole still has struct pages");
}

#[test]
fn unreadable_struct_pages_keep_their_pages() {
    let mut m = Machine::new();
    // Map the vmemmap page of pfns 64..128 to an address outside RAM: the struct pages exist
    // but cannot be read, so nothing is known of their pages, which are kept.
    m.b.set_entry(VirtAddr(VMEMMAP + 64 * 64), crate::mmu::Level::Pt, 0x7f_0000_0000 | 1).unwrap();
    m.mapcount(64, BUDDY).private(64, 6);
    m.mapcount(128, BUDDY).private(128, 6);
    let s = m.classify(31);
    assert_eq!(excluded(&s), (128..192).collect::<Vec<_>>());
    assert_eq!((s.counts.unreadable, s.counts.no_struct_page), (64, 0));
    assert_eq!(s.counts.get(PageClass::Kept), PFNS - 64);
}

#[test]
fn reads_the_array_in_few_large_requests_and_reports_them() {
    let m = Machine::new();
    let root = m.b.root();
    let layout = m.layout.clone();
    let mem = m.b.into_mem("synthetic mem_map");
    let ram = mem.ram().to_vec();
    let mut space = AddressSpace::new(Box::new(mem), MmuConfig::new(Paging::Level4));
    let s = classify_with(&layout, &mut space, root, &ram, DumpLevel(31), &mut |_, _| {}).unwrap();
    assert_eq!(s.mem_map_bytes, PFNS * 64);
    assert_eq!(s.mem_map_ranges, [(MEM_MAP, PFNS * 64)]);
    // One batch, physically contiguous: one data read (page-table pages aside).
    assert_eq!(space.stats().data_reads, 1);
    assert_eq!(s.kept_count(), PFNS);
}

#[test]
fn holes_in_ram_are_never_kept_and_never_read() {
    let m = Machine::new();
    let root = m.b.root();
    let layout = m.layout.clone();
    let bytes = m.b.into_bytes();
    // RAM: [0, 1 MiB) and [2 MiB, 8 MiB): the struct pages of the hole are not read.
    let mut mem = BufferMem::empty("holey");
    mem.add_range(PhysAddr(0), bytes[..1 << 20].to_vec());
    mem.add_range(PhysAddr(2 << 20), bytes[2 << 20..].to_vec());
    let ram = mem.ram().to_vec();
    let mut space = AddressSpace::new(Box::new(mem), MmuConfig::new(Paging::Level4));
    let mut last = (0, 0);
    let s = classify_with(&layout, &mut space, root, &ram, DumpLevel(31), &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(last, (PFNS - 256, PFNS - 256));
    assert!((256..512).all(|p| !s.is_kept(p)));
    assert_eq!(s.kept_count(), PFNS - 256);
    assert_eq!(s.mem_map_bytes, (PFNS - 256) * 64);
    assert!(!s.is_kept(PFNS) && !s.is_kept(u64::MAX));
}

#[test]
fn layout_from_vmcoreinfo_alone_and_what_it_lacks() {
    let text = b"OFFSET(page.flags)=0\nOFFSET(page._mapcount)=48\nOFFSET(page.compound_dtor)=16\n\
        OFFSET(page.compound_order)=17\nOFFSET(page.compound_head)=8\nOFFSET(page.mapping)=24\n\
        OFFSET(page.private)=40\nSIZE(page)=64\nLENGTH(zone.free_area)=11\n\
        NUMBER(PG_lru)=4\nNUMBER(PG_private)=13\nNUMBER(PG_swapcache)=10\nNUMBER(PG_swapbacked)=19\n\
        NUMBER(PG_slab)=9\nNUMBER(PG_hwpoison)=23\nNUMBER(PG_head_mask)=65536\n\
        NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\nNUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257\n\
        NUMBER(HUGETLB_PAGE_DTOR)=2\n";
    let v = crate::linux::VmcoreInfo::parse(text);
    let mut l = PageLayout::resolve(None, Some(&v), None, VMEMMAP).expect("layout");
    l.notes = PageLayout::linux_6_1(VMEMMAP).notes;
    assert_eq!(l, PageLayout::linux_6_1(VMEMMAP));
    let text = String::from_utf8_lossy(text).replace("NUMBER(PG_lru)=4\n", "");
    let e = PageLayout::resolve(None, Some(&crate::linux::VmcoreInfo::parse(text.as_bytes())), None, VMEMMAP)
        .unwrap_err();
    assert!(e.to_string().contains("NUMBER(PG_lru)"), "{e}");
    let text = text.replace("OFFSET(page._mapcount)=48\n", "");
    let e = PageLayout::resolve(None, Some(&crate::linux::VmcoreInfo::parse(text.as_bytes())), None, VMEMMAP)
        .unwrap_err();
    assert!(e.to_string().contains("page._mapcount"), "{e}");
    assert!(matches!(PageLayout::resolve(None, None, None, VMEMMAP), Err(PageFilterError::NoLayout)));
}
