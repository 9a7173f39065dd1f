//! Tests of the walk, the caches and `AddressSpace` on page tables built by the builder.

use super::walk::DirectReader;
use super::*;
use crate::phys::buffer::BufferMem;
use crate::phys::{PhysMem, RamRange, SourceKind};
use crate::testing::page_tables::PageTableBuilder;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const W: u64 = bits::WRITABLE;
const U: u64 = bits::USER;
const NX: u64 = bits::NX;
const MIB: u64 = 1 << 20;

/// A source that counts backend reads and can pretend to be live.
struct Probe {
    inner: BufferMem,
    volatile: bool,
    reads: Arc<AtomicU64>,
}

impl Probe {
    fn new(inner: BufferMem, volatile: bool) -> (Self, Arc<AtomicU64>) {
        let reads = Arc::new(AtomicU64::new(0));
        (Self { inner, volatile, reads: reads.clone() }, reads)
    }
}

impl PhysMem for Probe {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Buffer
    }
    fn ram(&self) -> &[RamRange] {
        self.inner.ram()
    }
    fn is_volatile(&self) -> bool {
        self.volatile
    }
    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(addr, buf)
    }
    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), PhysError> {
        self.inner.write(addr, data)
    }
}

fn walk_mem(
    mem: &mut BufferMem,
    config: MmuConfig,
    cr3: u64,
    virt: u64,
) -> Result<Translation, TranslateError> {
    walk(&mut DirectReader::new(mem), config, cr3, VirtAddr(virt), None)
}

fn space(b: PageTableBuilder) -> AddressSpace {
    let paging = b.paging();
    let cr3 = b.root();
    let mut s = AddressSpace::new(Box::new(b.into_mem("test")), MmuConfig::new(paging));
    s.set_cr3(cr3);
    s.set_mode(Mode::Virt).unwrap();
    s
}

/// Memory whose every byte says where it is: the byte at phys `p` is `p` mixed down to 8 bits.
fn pattern(p: u64) -> u8 {
    (p ^ (p >> 8) ^ (p >> 16) ^ (p >> 24)) as u8
}

fn fill_pattern(b: &mut PageTableBuilder, start: u64, len: u64) {
    let data: Vec<u8> = (start..start + len).map(pattern).collect();
    b.write_bytes(PhysAddr(start), &data).unwrap();
}

#[test]
fn canonical_addresses() {
    use Paging::*;
    assert!(Level4.is_canonical(VirtAddr(0x0000_7fff_ffff_ffff)));
    assert!(Level4.is_canonical(VirtAddr(0xffff_8000_0000_0000)));
    assert!(!Level4.is_canonical(VirtAddr(0x0000_8000_0000_0000)));
    assert!(!Level4.is_canonical(VirtAddr(0xffff_7fff_ffff_ffff)));
    assert!(!Level4.is_canonical(VirtAddr(0x0001_0000_0000_0000)));
    assert!(Level5.is_canonical(VirtAddr(0x0001_0000_0000_0000)));
    assert!(Level5.is_canonical(VirtAddr(0xff11_0000_0000_0000)));
    assert!(!Level5.is_canonical(VirtAddr(0x0100_0000_0000_0000)));
    assert!(!Level5.is_canonical(VirtAddr(0xfeff_ffff_ffff_ffff)));
    assert_eq!(format!("{} {} {}", Level::Pml5, Level::Pd, PageSize::Size2M), "PML5 PD 2 MiB");
}

#[test]
fn each_page_size_with_offsets_4_level() {
    let mut b = PageTableBuilder::new(Paging::Level4, 8 * MIB as usize);
    b.map(VirtAddr(0x40_1000), PhysAddr(0x3000), PageSize::Size4K, W | U).unwrap();
    b.map(VirtAddr(0xffff_8880_0020_0000), PhysAddr(0x40_0000), PageSize::Size2M, W | NX).unwrap();
    b.map(VirtAddr(0xffff_8900_4000_0000), PhysAddr(0xc000_0000), PageSize::Size1G, 0).unwrap();
    let cfg = MmuConfig::new(Paging::Level4);
    let cr3 = b.root();
    let mut m = b.into_mem("t");

    let t = walk_mem(&mut m, cfg, cr3, 0x40_1abc).unwrap();
    assert_eq!((t.phys, t.page_phys, t.page_size), (PhysAddr(0x3abc), PhysAddr(0x3000), PageSize::Size4K));
    assert!(t.writable && t.user && !t.nx);

    let t = walk_mem(&mut m, cfg, cr3, 0xffff_8880_003f_fff8).unwrap();
    assert_eq!(
        (t.phys, t.page_phys, t.page_size),
        (PhysAddr(0x5f_fff8), PhysAddr(0x40_0000), PageSize::Size2M)
    );
    assert!(t.writable && !t.user && t.nx);
    assert_eq!(t.bytes_to_page_end(), 8);

    // The 1 GiB page lies outside this RAM: translating needs only the tables.
    let t = walk_mem(&mut m, cfg, cr3, 0xffff_8900_7654_3210).unwrap();
    assert_eq!((t.phys, t.page_size), (PhysAddr(0xf654_3210), PageSize::Size1G));
    assert!(!t.writable && !t.user && !t.nx);
}

#[test]
fn each_page_size_5_level_and_beyond_the_4_level_range() {
    let mut b = PageTableBuilder::new(Paging::Level5, 8 * MIB as usize);
    // Valid only with 5-level paging: above 2^47 in the lower half, and the 5-level direct map.
    b.map(VirtAddr(0x0001_2345_6789_a000), PhysAddr(0x5000), PageSize::Size4K, W).unwrap();
    b.map(VirtAddr(0xff11_0000_0060_0000), PhysAddr(0x20_0000), PageSize::Size2M, W).unwrap();
    b.map(VirtAddr(0x00ff_ffff_c000_0000), PhysAddr(0x1_0000_0000), PageSize::Size1G, W).unwrap();
    let cr3 = b.root();
    let mut m = b.into_mem("t");
    let cfg = MmuConfig::new(Paging::Level5);
    assert_eq!(walk_mem(&mut m, cfg, cr3, 0x0001_2345_6789_a123).unwrap().phys, PhysAddr(0x5123));
    assert_eq!(walk_mem(&mut m, cfg, cr3, 0xff11_0000_0070_0001).unwrap().phys, PhysAddr(0x30_0001));
    let t = walk_mem(&mut m, cfg, cr3, 0x00ff_ffff_ffff_ffff).unwrap();
    assert_eq!((t.phys, t.page_size), (PhysAddr(0x1_3fff_ffff), PageSize::Size1G));

    // The same tables read as 4-level: the address is not even canonical.
    let cfg4 = MmuConfig::new(Paging::Level4);
    assert_eq!(
        walk_mem(&mut m, cfg4, cr3, 0x0001_2345_6789_a123),
        Err(TranslateError::NotCanonical { virt: VirtAddr(0x0001_2345_6789_a123), paging: Paging::Level4 })
    );
    // Non-canonical in 5-level too.
    let e = walk_mem(&mut m, cfg, cr3, 0x0100_0000_0000_0000).unwrap_err();
    assert!(matches!(e, TranslateError::NotCanonical { paging: Paging::Level5, .. }));
    assert!(e.to_string().contains("bits 63..56"), "{e}");
}

#[test]
fn not_present_at_each_level_names_level_index_and_entry() {
    for paging in [Paging::Level4, Paging::Level5] {
        for &level in paging.table_levels() {
            let virt = if paging == Paging::Level5 { 0xff12_3456_789a_b000 } else { 0xffff_8123_4567_8000 };
            let mut b = PageTableBuilder::new(paging, 4 * MIB as usize);
            b.map(VirtAddr(virt), PhysAddr(0x1000), PageSize::Size4K, W).unwrap();
            // Clear P, keep other bits: a swapped-out or PROT_NONE entry keeps junk.
            let at = b.entry_addr(VirtAddr(virt), level).unwrap();
            let old = b.read_u64(at).unwrap();
            b.set_entry(VirtAddr(virt), level, old & !bits::PRESENT).unwrap();
            let cr3 = b.root();
            let mut m = b.into_mem("t");
            let e = walk_mem(&mut m, MmuConfig::new(paging), cr3, virt + 0x10).unwrap_err();
            let index = level.index(VirtAddr(virt));
            assert_eq!(
                e,
                TranslateError::NotPresent {
                    virt: VirtAddr(virt + 0x10),
                    level,
                    index,
                    entry_addr: at,
                    entry: old & !bits::PRESENT
                }
            );
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!(
                    "page-table entry at phys {at} ({level} index {index}) for virt {:#x} is not present",
                    virt + 0x10
                )),
                "{msg}"
            );
        }
    }
}

#[test]
fn cr3_flag_bits_are_masked() {
    let mut b = PageTableBuilder::new(Paging::Level4, 4 * MIB as usize);
    b.map(VirtAddr(0x1000), PhysAddr(0x7000), PageSize::Size4K, W).unwrap();
    let root = b.root();
    let mut m = b.into_mem("t");
    let cfg = MmuConfig::new(Paging::Level4);
    for cr3 in [
        root | 0x18,                // PWT | PCD
        root | 0x5,                 // PCID 5
        root | 0xfff,               // every low bit
        root | 1 << 63 | 0x123,     // no-flush with a PCID
        root | 0b11 << 61,          // LAM_U57 / LAM_U48
        root | 0b111 << 61 | 0xfff, // all of them
    ] {
        assert_eq!(walk_mem(&mut m, cfg, cr3, 0x1234).unwrap().phys, PhysAddr(0x7234), "cr3 {cr3:#x}");
    }
}

#[test]
fn nx_protection_keys_software_and_sme_bits_are_not_address_bits() {
    const C_BIT: u64 = 1 << 47; // AMD SME encryption bit on a 46-bit machine
    let junk = C_BIT | bits::SOFTWARE_HIGH | bits::PROTECTION_KEY;
    let mut b = PageTableBuilder::new(Paging::Level4, 8 * MIB as usize);
    b.set_phys_bits(46);
    b.set_table_flags(bits::PRESENT | W | U | C_BIT | (0x55 << 52));
    b.map(VirtAddr(0x1000), PhysAddr(0x7000), PageSize::Size4K, W | NX | junk).unwrap();
    // Large pages: PAT (bit 12) and the high junk set too.
    b.map(VirtAddr(0x4000_0000), PhysAddr(0x40_0000), PageSize::Size2M, NX | junk | bits::PAT_LARGE).unwrap();
    b.map(VirtAddr(0x80_0000_0000), PhysAddr(0x4000_0000), PageSize::Size1G, junk | bits::PAT_LARGE).unwrap();
    let cr3 = b.root() | C_BIT; // SME also sets the C-bit in CR3
    let mut m = b.into_mem("t");
    let cfg = MmuConfig { paging: Paging::Level4, phys_bits: 46 };

    let t = walk_mem(&mut m, cfg, cr3, 0x1008).unwrap();
    assert_eq!((t.phys, t.nx, t.writable), (PhysAddr(0x7008), true, true));
    let t = walk_mem(&mut m, cfg, cr3, 0x4012_3456).unwrap();
    assert_eq!((t.phys, t.page_phys, t.nx), (PhysAddr(0x52_3456), PhysAddr(0x40_0000), true));
    let t = walk_mem(&mut m, cfg, cr3, 0x80_0000_1000).unwrap();
    assert_eq!((t.phys, t.page_size, t.nx), (PhysAddr(0x4000_1000), PageSize::Size1G, false));

    // With the full 52-bit width the C-bit is an address bit: the root is then outside RAM.
    let e = walk_mem(&mut m, MmuConfig::new(Paging::Level4), cr3, 0x1008).unwrap_err();
    assert!(
        matches!(e, TranslateError::TableUnreadable { level: Level::Pml4, table, .. } if table.0 & C_BIT != 0)
    );
}

#[test]
fn self_referencing_tables_terminate() {
    let mut b = PageTableBuilder::new(Paging::Level4, 4 * MIB as usize);
    b.map(VirtAddr(0x20_0000), PhysAddr(0x9000), PageSize::Size4K, W).unwrap();
    let root = b.root();
    // The classic recursive slot, 510, and a root whose entry 0 points at itself.
    b.set_entry(VirtAddr(0xffff_ff00_0000_0000), Level::Pml4, root | bits::PRESENT | W).unwrap();
    let cr3 = b.root();
    let pt = b.entry_addr(VirtAddr(0x20_0000), Level::Pt).unwrap().0 & !0xfff;
    let pdpt = b.read_u64(PhysAddr(root)).unwrap() & 0x000f_ffff_ffff_f000;
    let mut m = b.into_mem("t");
    let cfg = MmuConfig::new(Paging::Level4);

    let recursive = |i4: u64, i3: u64, i2: u64, i1: u64| {
        0xffff_0000_0000_0000 | i4 << 39 | i3 << 30 | i2 << 21 | i1 << 12
    };
    // 510/510/510/510 maps the PML4 itself; 510/510/510/0 the PDPT behind PML4[0];
    // 510/0/0/1 the PT that maps 0x200000.
    let t = walk_mem(&mut m, cfg, cr3, recursive(510, 510, 510, 510) + 0xff0).unwrap();
    assert_eq!(t.phys, PhysAddr(root + 0xff0));
    assert_eq!(walk_mem(&mut m, cfg, cr3, recursive(510, 510, 510, 0)).unwrap().phys, PhysAddr(pdpt));
    assert_eq!(walk_mem(&mut m, cfg, cr3, recursive(510, 0, 0, 1)).unwrap().phys, PhysAddr(pt));

    // A trace through the loop has exactly four steps.
    let tr = walk_trace(&mut DirectReader::new(&mut m), cfg, cr3, VirtAddr(recursive(510, 510, 510, 510)));
    assert_eq!(tr.steps.len(), 4);
    assert!(tr.steps.iter().all(|s| s.entry_addr == PhysAddr(root + 510 * 8)));

    // Through an AddressSpace: reading the recursive mapping returns the PML4's own bytes.
    let mut s = AddressSpace::new(Box::new(m), cfg);
    s.set_cr3(cr3);
    let mut e = [0u8; 8];
    s.read_virt(VirtAddr(recursive(510, 510, 510, 510) + 510 * 8), &mut e).unwrap();
    assert_eq!(u64::from_le_bytes(e), root | bits::PRESENT | W);
}

#[test]
fn a_table_outside_ram_is_named() {
    let mut b = PageTableBuilder::new(Paging::Level4, 4 * MIB as usize);
    b.set_entry(VirtAddr(0x1000), Level::Pml4, 0x40_0000_0000 | bits::PRESENT | W).unwrap();
    b.map(VirtAddr(0x80_0000_0000), PhysAddr(0x1000), PageSize::Size4K, W).unwrap();
    let s_pd = b.entry_addr(VirtAddr(0x80_0000_0000), Level::Pd).unwrap();
    b.write_u64(s_pd, 0x7fff_f000 | bits::PRESENT | W).unwrap();
    let mut s = space(b);

    let e = s.translate(VirtAddr(0x1000)).unwrap_err();
    match &e {
        TranslateError::TableUnreadable { level, table, virt, .. } => {
            assert_eq!((*level, *table, *virt), (Level::Pdpt, PhysAddr(0x40_0000_0000), VirtAddr(0x1000)));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().starts_with("cannot read the PDPT table at phys 0x4000000000 for virt 0x1000"),
        "{e}"
    );
    let e = s.translate(VirtAddr(0x80_0000_0000)).unwrap_err();
    assert!(matches!(
        e,
        TranslateError::TableUnreadable { level: Level::Pt, table: PhysAddr(0x7fff_f000), .. }
    ));
    // vtop shows the entry that led there.
    let tr = s.vtop(VirtAddr(0x1000));
    assert_eq!(tr.steps.len(), 1);
    assert!(tr.to_string().contains("cannot read the PDPT table"), "{tr}");
}

#[test]
fn vtop_trace_reads_fresh_and_prints_every_level() {
    let mut b = PageTableBuilder::new(Paging::Level4, 8 * MIB as usize);
    b.map(VirtAddr(0xffff_ffff_8100_0000), PhysAddr(0x20_0000), PageSize::Size2M, W | bits::GLOBAL).unwrap();
    let mut s = space(b);
    let t = s.translate(VirtAddr(0xffff_ffff_8100_0042)).unwrap();
    assert_eq!(t.phys, PhysAddr(0x20_0042));
    let tr = s.vtop(VirtAddr(0xffff_ffff_8100_0042));
    let text = tr.to_string();
    assert_eq!(tr.steps.len(), 3);
    assert_eq!(tr.steps[2].flags(), "P W PS G");
    assert_eq!(tr.steps[0].flags(), "P W U A");
    assert!(text.contains("PML4[511]"), "{text}");
    assert!(text.contains("PDPT[510]"), "{text}");
    assert!(text.contains("PD[8]"), "{text}");
    assert!(text.contains("2 MiB page at phys 0x200000, writable, kernel, executable"), "{text}");
    assert!(text.ends_with("virt 0xffffffff81000042 -> phys 0x200042"), "{text}");
    assert_eq!(text.lines().count(), 6, "{text}");
    let tr = s.vtop(VirtAddr(0xffff_ffff_8120_0000)).to_string();
    assert!(tr.contains("PD[9]     entry at phys 0x0000007fd048 = 0x0000000000000000  not present"), "{tr}");

    let mut no_cr3 = AddressSpace::new(Box::new(BufferMem::new("x", vec![0; 4096])), MmuConfig::default());
    let tr = no_cr3.vtop(VirtAddr(0x1000));
    assert_eq!(tr.result, Err(TranslateError::NoCr3));
    assert!(tr.to_string().contains("no page-table root"), "{tr}");
}

#[test]
fn no_cr3_means_no_virtual_mode() {
    let mut s = AddressSpace::new(Box::new(BufferMem::new("x", vec![1; 8192])), MmuConfig::default());
    assert_eq!(s.mode(), Mode::Phys);
    assert_eq!(s.set_mode(Mode::Virt), Err(TranslateError::NoCr3));
    assert_eq!(s.translate(VirtAddr(0)), Err(TranslateError::NoCr3));
    let mut buf = [0u8; 4];
    assert_eq!(s.read_virt(VirtAddr(0), &mut buf), Err(MemError::Translate(TranslateError::NoCr3)));
    assert_eq!(s.read(0, &mut buf), Ok(4));
    s.set_cr3(0x1000);
    assert_eq!(s.mode(), Mode::Phys, "setting CR3 leaves the mode alone");
    s.set_mode(Mode::Virt).unwrap();
    assert_eq!(s.cr3(), Some(0x1000));
}

#[test]
fn reads_cross_pages_mapped_apart() {
    let mut b = PageTableBuilder::new(Paging::Level4, 4 * MIB as usize);
    // Three virtual pages on physical pages in reverse order, then one contiguous pair.
    let v = 0x7f00_0000_0000u64;
    for (i, p) in [0x30_000u64, 0x20_000, 0x10_000].into_iter().enumerate() {
        b.map(VirtAddr(v + i as u64 * 0x1000), PhysAddr(p), PageSize::Size4K, W | U).unwrap();
    }
    b.map(VirtAddr(v + 0x3000), PhysAddr(0x40_000), PageSize::Size4K, W).unwrap();
    b.map(VirtAddr(v + 0x4000), PhysAddr(0x41_000), PageSize::Size4K, W).unwrap();
    fill_pattern(&mut b, 0x10_000, 0x40_000);
    let mut s = space(b);

    let mut buf = vec![0u8; 0x2010];
    s.reset_stats();
    assert_eq!(s.read(v + 0xff8, &mut buf), Ok(0x2010));
    let expect: Vec<u8> = (0x30_ff8..0x31_000)
        .chain(0x20_000..0x21_000)
        .chain(0x10_000..0x11_000)
        .chain(0x40_000..0x40_008)
        .map(pattern)
        .collect();
    assert!(buf == expect, "bytes differ");
    assert_eq!(s.stats().data_reads, 4);

    // Contiguous physical pages are one backend read.
    s.reset_stats();
    let mut buf = vec![0u8; 0x1800];
    s.read_virt(VirtAddr(v + 0x3400), &mut buf).unwrap();
    assert!(buf == (0x40_400..0x41_c00).map(pattern).collect::<Vec<_>>(), "bytes differ");
    assert_eq!(s.stats().data_reads, 1);
}

#[test]
fn partial_reads_stop_at_the_first_bad_byte() {
    let mut b = PageTableBuilder::new(Paging::Level4, 2 * MIB as usize);
    let v = 0x40_0000u64;
    b.map(VirtAddr(v), PhysAddr(0x1000), PageSize::Size4K, W).unwrap();
    b.map(VirtAddr(v + 0x1000), PhysAddr(0x2000), PageSize::Size4K, W).unwrap();
    // v + 0x2000 is unmapped; v + 0x3000 maps outside RAM.
    b.map(VirtAddr(v + 0x3000), PhysAddr(0x4000_0000), PageSize::Size4K, W).unwrap();
    fill_pattern(&mut b, 0x1000, 0x2000);
    let mut s = space(b);

    let mut buf = vec![0u8; 0x3000];
    assert_eq!(s.read(v + 0x800, &mut buf), Ok(0x1800));
    assert_eq!(&buf[..0x1800], &(0x1800..0x3000).map(pattern).collect::<Vec<_>>()[..]);
    match s.read(v + 0x2000, &mut buf) {
        Err(MemError::Translate(TranslateError::NotPresent { level: Level::Pt, virt, .. })) => {
            assert_eq!(virt, VirtAddr(v + 0x2000))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(s.read_virt(VirtAddr(v + 0x800), &mut buf), Err(MemError::Translate(_))));
    // A page that maps outside RAM: the physical error, naming the physical address.
    let e = s.read(v + 0x3010, &mut buf).unwrap_err();
    assert!(matches!(&e, MemError::Phys(PhysError::NotRam { addr: PhysAddr(0x4000_0010), .. })), "{e:?}");
    assert!(e.to_string().contains("0x40000010"), "{e}");
    assert_eq!(s.read(v, &mut []), Ok(0));

    // Physical mode: a read running off the end of RAM returns what is inside.
    s.set_mode(Mode::Phys).unwrap();
    let end = 2 * MIB;
    let mut buf = vec![0u8; 0x100];
    assert_eq!(s.read(end - 0x10, &mut buf), Ok(0x10));
    assert!(matches!(s.read(end, &mut buf), Err(MemError::Phys(PhysError::NotRam { .. }))));
    assert!(matches!(s.read(u64::MAX - 3, &mut buf), Err(MemError::Phys(_))));
    assert!(s.read_phys(PhysAddr(end - 0x10), &mut buf).is_err());
}

#[test]
fn phys_reads_span_adjacent_ram_ranges() {
    let mut m = BufferMem::new("t", vec![1; 0x1000]);
    m.add_range(PhysAddr(0x1000), vec![2; 0x1000]);
    m.add_range(PhysAddr(0x3000), vec![3; 0x1000]);
    let mut s = AddressSpace::new(Box::new(m), MmuConfig::default());
    let mut buf = vec![0u8; 0x3000];
    assert_eq!(s.read(0x800, &mut buf), Ok(0x1800));
    assert_eq!(buf[0x7ff], 1);
    assert_eq!(buf[0x800], 2);
    assert!(s.read(0x2000, &mut buf).is_err());
}

#[test]
fn wrap_and_canonical_hole_stop_the_read() {
    let mut b = PageTableBuilder::new(Paging::Level4, 2 * MIB as usize);
    b.map(VirtAddr(0xffff_ffff_ffff_f000), PhysAddr(0x1000), PageSize::Size4K, W).unwrap();
    b.map(VirtAddr(0), PhysAddr(0x2000), PageSize::Size4K, W).unwrap();
    b.map(VirtAddr(0x7fff_ffff_f000), PhysAddr(0x3000), PageSize::Size4K, W).unwrap();
    let mut s = space(b);
    let mut buf = vec![0u8; 0x2000];
    assert_eq!(s.read(0xffff_ffff_ffff_f800, &mut buf), Ok(0x800), "does not wrap to virt 0");
    assert_eq!(
        s.read_virt(VirtAddr(0xffff_ffff_ffff_f800), &mut buf),
        Err(MemError::Translate(TranslateError::Wraps { virt: VirtAddr(0xffff_ffff_ffff_f800) }))
    );
    assert_eq!(s.read(0x7fff_ffff_ff00, &mut buf), Ok(0x100), "stops at the hole");
    let e = s.read(0x8000_0000_0000, &mut buf).unwrap_err();
    assert!(matches!(e, MemError::Translate(TranslateError::NotCanonical { .. })), "{e:?}");
}

/// 64 MiB mapped by 4 KiB pages, each on a physical page far from its neighbours.
fn scattered_64m() -> (PageTableBuilder, u64) {
    let mut b = PageTableBuilder::new(Paging::Level4, (72 * MIB) as usize);
    let v = 0xffff_c900_0000_0000u64;
    b.map_scattered(VirtAddr(v), PhysAddr(0), 64 * MIB, W | NX).unwrap();
    (b, v)
}

#[test]
fn cache_64m_of_4k_pages_costs_one_read_per_page() {
    let (b, v) = scattered_64m();
    let pages = 64 * MIB / 4096;
    let cr3 = b.root();
    let (probe, reads) = Probe::new(b.into_mem("t"), false);
    let mut s = AddressSpace::new(Box::new(probe), MmuConfig::new(Paging::Level4));
    s.set_cr3(cr3);
    s.set_mode(Mode::Virt).unwrap();
    let mut buf = vec![0u8; 64 * 1024];

    let mut dump = |s: &mut AddressSpace| {
        for chunk in 0..(64 * MIB / buf.len() as u64) {
            let a = v + chunk * buf.len() as u64;
            assert_eq!(s.read(a, &mut buf), Ok(buf.len()));
        }
    };
    dump(&mut s); // cold
    let cold = reads.load(Ordering::Relaxed);
    let st = s.stats();
    assert_eq!(st.backend_reads(), cold, "stats count every backend read");
    assert_eq!(st.data_reads, pages);
    assert!(st.table_reads <= 64 / 2 + 3, "one read per table page: {st}");
    assert!(cold as f64 / pages as f64 <= 1.01, "cold: {cold} reads for {pages} pages");

    s.reset_stats();
    dump(&mut s); // warm: tables and translations cached
    let warm = reads.load(Ordering::Relaxed) - cold;
    // The translation cache reaches 32 MiB of 4 KiB pages; the rest re-walk in cached tables.
    assert_eq!(s.stats().table_reads, 0);
    assert!(warm as f64 / pages as f64 <= 1.01, "warm: {warm} reads for {pages} pages");

    // After a flush the cost returns to the cold one, not more.
    s.flush();
    s.reset_stats();
    dump(&mut s);
    assert_eq!(s.stats().table_reads, st.table_reads);
}

#[test]
fn cache_gdb_sized_requests_and_large_pages() {
    // Contiguous 4 KiB mapping read the way gdb reads: 9 KiB requests, unaligned.
    let mut b = PageTableBuilder::new(Paging::Level4, (72 * MIB) as usize);
    let v = 0xffff_c900_0000_0000u64;
    b.map_range(VirtAddr(v), PhysAddr(0), 64 * MIB, PageSize::Size4K, W).unwrap();
    let mut s = space(b);
    let mut buf = vec![0u8; 9 * 1024];
    let mut a = v;
    let mut requests = 0u64;
    while a < v + 64 * MIB {
        let n = s.read(a, &mut buf).unwrap();
        a += n as u64;
        requests += 1;
    }
    let st = s.stats();
    assert_eq!(st.data_reads, requests, "contiguous pages merge: one read per request");
    assert!(st.table_reads <= 35, "{st}");

    // 2 MiB pages: a 64 MiB dump in 1 MiB requests is one read per request and 3 table reads.
    let mut b = PageTableBuilder::new(Paging::Level4, (72 * MIB) as usize);
    for i in 0..32u64 {
        let p = ((i * 7) % 32) * 2 * MIB; // scattered 2 MiB pages
        b.map(VirtAddr(v + i * 2 * MIB), PhysAddr(p), PageSize::Size2M, W).unwrap();
    }
    let mut s = space(b);
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..64u64 {
        assert_eq!(s.read(v + i * MIB, &mut buf), Ok(buf.len()));
    }
    let st = s.stats();
    assert_eq!(st.data_reads, 64);
    assert_eq!(st.table_reads, 3, "{st}");
    assert_eq!(st.walks, 32, "one walk per 2 MiB page: {st}");

    // A 2 MiB translation serves every 4 KiB page in it.
    s.reset_stats();
    s.flush();
    for i in 0..512u64 {
        s.translate(VirtAddr(v + i * 4096 + 7)).unwrap();
    }
    assert_eq!(s.stats().walks, 1);
    assert_eq!(s.stats().translation_hits, 511);
}

/// A two-page mapping whose PT entry the test can retarget from outside the `AddressSpace`.
fn remappable(volatile: bool) -> (AddressSpace, u64, PhysAddr) {
    let mut b = PageTableBuilder::new(Paging::Level4, 2 * MIB as usize);
    let v = 0x5555_0000_0000u64;
    b.map(VirtAddr(v), PhysAddr(0x1000), PageSize::Size4K, W).unwrap();
    b.write_bytes(PhysAddr(0x1000), b"old page").unwrap();
    b.write_bytes(PhysAddr(0x2000), b"new page").unwrap();
    let pte = b.entry_addr(VirtAddr(v), Level::Pt).unwrap();
    let cr3 = b.root();
    let (probe, _) = Probe::new(b.into_mem("live").writable(), volatile);
    let mut s = AddressSpace::new(Box::new(probe), MmuConfig::default());
    s.set_cr3(cr3);
    s.set_mode(Mode::Virt).unwrap();
    (s, v, pte)
}

fn read8(s: &mut AddressSpace, v: u64) -> [u8; 8] {
    let mut b = [0u8; 8];
    assert_eq!(s.read(v, &mut b), Ok(8));
    b
}

#[test]
fn static_source_keeps_its_cache_until_flush() {
    let (mut s, v, pte) = remappable(false);
    assert_eq!(&read8(&mut s, v), b"old page");
    // The target changes its tables behind our back (mem_mut bypasses the caches).
    s.mem_mut().write(pte, &(0x2000 | bits::PRESENT | W).to_le_bytes()).unwrap();
    std::thread::sleep(IDLE_FLUSH + std::time::Duration::from_millis(20));
    assert_eq!(&read8(&mut s, v), b"old page", "a dump does not change: cache kept across gaps");
    assert!(s.vtop(VirtAddr(v)).to_string().contains("-> phys 0x2000"), "vtop reads fresh");
    s.flush();
    assert_eq!(&read8(&mut s, v), b"new page");
}

#[test]
fn volatile_source_drops_caches_at_flush_and_after_idle_gap() {
    let (mut s, v, pte) = remappable(true);
    assert_eq!(&read8(&mut s, v), b"old page");
    s.mem_mut().write(pte, &(0x2000 | bits::PRESENT | W).to_le_bytes()).unwrap();
    s.flush();
    assert_eq!(&read8(&mut s, v), b"new page", "after flush");

    s.mem_mut().write(pte, &(0x1000 | bits::PRESENT | W).to_le_bytes()).unwrap();
    std::thread::sleep(IDLE_FLUSH + std::time::Duration::from_millis(20));
    assert_eq!(&read8(&mut s, v), b"old page", "after an idle gap");
    assert!(s.stats().flushes >= 2);

    // Within a burst the caches do work on a volatile source.
    s.reset_stats();
    for _ in 0..100 {
        read8(&mut s, v);
    }
    assert!(s.stats().walks < 100, "{}", s.stats());
}

#[test]
fn writes_go_through_the_source_and_invalidate() {
    let (mut s, v, pte) = remappable(false);
    s.write(v + 4, b"NEW!").unwrap();
    assert_eq!(&read8(&mut s, v), b"old NEW!");
    // Writing a page-table entry through the space takes effect at once.
    s.set_mode(Mode::Phys).unwrap();
    s.write(pte.0, &(0x2000 | bits::PRESENT | W).to_le_bytes()).unwrap();
    s.set_mode(Mode::Virt).unwrap();
    assert_eq!(&read8(&mut s, v), b"new page");
    // A write that crosses into an unmapped page writes nothing.
    assert!(s.write(v + 0xffc, b"12345678").is_err());
    let mut tail = [0u8; 4];
    s.read_phys(PhysAddr(0x2ffc), &mut tail).unwrap();
    assert_eq!(tail, [0; 4]);

    // A read-only source refuses, naming itself.
    let mut b = PageTableBuilder::new(Paging::Level4, MIB as usize);
    b.map(VirtAddr(0), PhysAddr(0), PageSize::Size4K, W).unwrap();
    let mut ro = space(b);
    let e = ro.write(0, b"x").unwrap_err();
    assert!(matches!(e, MemError::Phys(PhysError::ReadOnly { .. })), "{e:?}");
}

#[test]
fn translate_in_other_roots_and_paging_switch() {
    let mut b = PageTableBuilder::new(Paging::Level4, 4 * MIB as usize);
    b.map(VirtAddr(0x1000), PhysAddr(0x5000), PageSize::Size4K, W).unwrap();
    let root_a = b.root();
    // A second hierarchy in the same memory.
    let root_b = b.alloc_page().unwrap();
    let pdpt = b.alloc_page().unwrap();
    let pd = b.alloc_page().unwrap();
    let pt = b.alloc_page().unwrap();
    b.write_u64(root_b, pdpt.0 | 3).unwrap();
    b.write_u64(pdpt, pd.0 | 3).unwrap();
    b.write_u64(pd, pt.0 | 3).unwrap();
    b.write_u64(PhysAddr(pt.0 + 8), 0x6000 | 3).unwrap();
    let mut s = space(b);
    assert_eq!(s.translate(VirtAddr(0x1010)).unwrap().phys, PhysAddr(0x5010));
    assert_eq!(s.translate_in(root_b.0 | 0x7, VirtAddr(0x1010)).unwrap().phys, PhysAddr(0x6010));
    assert_eq!(s.translate(VirtAddr(0x1010)).unwrap().phys, PhysAddr(0x5010), "keyed by root");
    assert_eq!(s.cr3(), Some(root_a));
    let before = s.stats().flushes;
    s.set_paging(Paging::Level5);
    assert_eq!(s.paging(), Paging::Level5);
    assert_eq!(s.stats().flushes, before + 1);
}

#[test]
fn garbage_tables_never_panic() {
    // Random bytes as RAM, with present bits forced on so walks go deep; addresses point
    // everywhere, in and out of RAM, through themselves and through large pages.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut bytes = vec![0u8; 256 * 1024];
    for chunk in bytes.chunks_mut(8) {
        let e = (rnd() & 0xfff8_0000_0003_ffff) | 1; // mostly inside the 256 KiB
        chunk.copy_from_slice(&e.to_le_bytes());
    }
    for paging in [Paging::Level4, Paging::Level5] {
        for phys_bits in [52, 46, 12, 0, 255] {
            let cfg = MmuConfig { paging, phys_bits };
            let mut s = AddressSpace::new(Box::new(BufferMem::new("junk", bytes.clone())), cfg);
            let mut buf = vec![0u8; 0x3000];
            let mut translated = 0;
            for i in 0..2000 {
                s.set_cr3(if i % 8 == 0 { rnd() } else { rnd() & 0x3_ffff });
                // Mostly canonical addresses, so walks get past the check.
                let shift = 64 - u32::from(paging.va_bits());
                let v = if i % 8 == 0 { rnd() } else { (((rnd() << shift) as i64) >> shift) as u64 };
                translated += usize::from(s.translate(VirtAddr(v)).is_ok());
                let _ = s.read_virt(VirtAddr(v), &mut buf[..(v as usize & 0x1fff) + 1]);
                let _ = s.vtop(VirtAddr(v)).to_string();
                s.set_mode(Mode::Virt).unwrap();
                let _ = s.read(v, &mut buf);
            }
            assert!(translated > 100, "walks reached the leaves: {translated}");
        }
    }
}

#[test]
fn scattered_mappings_keep_no_neighbours_together() {
    for pages in [5u64, 7, 100, 16384] {
        let mut b = PageTableBuilder::new(Paging::Level4, ((pages + 64) * 4096) as usize);
        let v = 0x7f00_0000_0000u64;
        b.map_scattered(VirtAddr(v), PhysAddr(0), pages * 4096, W).unwrap();
        let mut s = space(b);
        let phys: Vec<u64> =
            (0..pages).map(|i| s.translate(VirtAddr(v + i * 4096)).unwrap().phys.0 / 4096).collect();
        let mut sorted = phys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..pages).collect::<Vec<_>>(), "{pages} pages: a permutation");
        assert!(phys.windows(2).all(|w| w[0].abs_diff(w[1]) != 1), "{pages} pages: neighbours kept together");
    }
}

#[test]
fn objects_read_together_get_their_own_results() {
    let mut mem = BufferMem::empty("parts");
    let bytes = |start: u64, len: u64| (start..start + len).map(pattern).collect::<Vec<u8>>();
    // Two abutting ranges, a hole, another range.
    mem.add_range(PhysAddr(0x1000), bytes(0x1000, 0x2000));
    mem.add_range(PhysAddr(0x3000), bytes(0x3000, 0x2000));
    mem.add_range(PhysAddr(0x8000), bytes(0x8000, 0x1000));
    let (probe, reads) = Probe::new(mem, false);
    let mut s = AddressSpace::new(Box::new(probe), MmuConfig::new(Paging::Level4));
    let (mut a, mut b, mut c) = (vec![0u8; 0x1000], vec![0u8; 16], vec![0u8; 16]);
    let mut objects =
        [(PhysAddr(0x2800), &mut a[..]), (PhysAddr(0x6000), &mut b[..]), (PhysAddr(0x8000), &mut c[..])];
    let results = s.read_phys_many(&mut objects);
    assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok(), "{results:?}");
    assert_eq!(a, bytes(0x2800, 0x1000), "the object across two ranges");
    assert_eq!(c, bytes(0x8000, 16), "the object after the hole");
    // Four pieces (the first cut at the range end), the hole's asked once.
    assert_eq!(reads.load(Ordering::Relaxed), 4);
}

#[test]
fn a_failing_device_fails_every_object_left_at_once() {
    struct Dead(Vec<RamRange>, u64);
    impl PhysMem for Dead {
        fn name(&self) -> &str {
            "dead"
        }
        fn kind(&self) -> SourceKind {
            SourceKind::NetTlp
        }
        fn ram(&self) -> &[RamRange] {
            &self.0
        }
        fn read(&mut self, addr: PhysAddr, _: &mut [u8]) -> Result<(), PhysError> {
            self.1 += 1;
            Err(PhysError::device(addr, "dead", "timed out"))
        }
    }
    let dead = Dead(vec![RamRange { start: PhysAddr(0), len: 1 << 30 }], 0);
    let mut s = AddressSpace::new(Box::new(dead), MmuConfig::new(Paging::Level4));
    let mut bufs = vec![[0u8; 8]; 50];
    let mut objects: Vec<(PhysAddr, &mut [u8])> =
        bufs.iter_mut().enumerate().map(|(i, b)| (PhysAddr(i as u64 * 4096), &mut b[..])).collect();
    let results = s.read_phys_many(&mut objects);
    assert!(results.iter().all(|r| r.as_ref().is_err_and(|e| e.to_string().contains("timed out"))));
    assert_eq!(s.stats().data_reads, 1, "asked once, not once per object");
}
