//! The walk: page sizes, levels, entry bits, loops, unreadable tables and `vtop`'s trace.

use super::*;

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
    let mut s = Rooted::new(AddressSpace::new(Box::new(m), cfg), cr3);
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
    // Without a CR3: see gdb::state's tests (the debugger's state decides the root).
}
