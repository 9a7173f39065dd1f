//! The caches: backend reads per page, freshness on static and volatile sources, writes.

use super::*;

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
    let mut s = Rooted::new(AddressSpace::new(Box::new(probe), MmuConfig::new(Paging::Level4)), cr3);
    let mut buf = vec![0u8; 64 * 1024];

    let mut dump = |s: &mut Rooted| {
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
fn remappable(volatile: bool) -> (Rooted, u64, PhysAddr) {
    let mut b = PageTableBuilder::new(Paging::Level4, 2 * MIB as usize);
    let v = 0x5555_0000_0000u64;
    b.map(VirtAddr(v), PhysAddr(0x1000), PageSize::Size4K, W).unwrap();
    b.write_bytes(PhysAddr(0x1000), b"old page").unwrap();
    b.write_bytes(PhysAddr(0x2000), b"new page").unwrap();
    let pte = b.entry_addr(VirtAddr(v), Level::Pt).unwrap();
    let cr3 = b.root();
    let (probe, _) = Probe::new(b.into_mem("live").writable(), volatile);
    let s = Rooted::new(AddressSpace::new(Box::new(probe), MmuConfig::default()), cr3);
    (s, v, pte)
}

fn read8(s: &mut Rooted, v: u64) -> [u8; 8] {
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
    s.write_phys(pte, &(0x2000 | bits::PRESENT | W).to_le_bytes()).unwrap();
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
            let mut s =
                Rooted::new(AddressSpace::new(Box::new(BufferMem::new("junk", bytes.clone())), cfg), 0);
            let mut buf = vec![0u8; 0x3000];
            let mut translated = 0;
            for i in 0..2000 {
                s.cr3 = if i % 8 == 0 { rnd() } else { rnd() & 0x3_ffff };
                // Mostly canonical addresses, so walks get past the check.
                let shift = 64 - u32::from(paging.va_bits());
                let v = if i % 8 == 0 { rnd() } else { (((rnd() << shift) as i64) >> shift) as u64 };
                translated += usize::from(s.translate(VirtAddr(v)).is_ok());
                let _ = s.read_virt(VirtAddr(v), &mut buf[..(v as usize & 0x1fff) + 1]);
                let _ = s.vtop(VirtAddr(v)).to_string();
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
