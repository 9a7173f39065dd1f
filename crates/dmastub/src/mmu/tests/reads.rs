//! Reads: pages mapped apart, partial reads, RAM ranges, wraps, and objects read together.

use super::*;

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

    // Physical reads: one running off the end of RAM returns what is inside.
    let end = 2 * MIB;
    let mut buf = vec![0u8; 0x100];
    assert_eq!(s.read_phys_partial(PhysAddr(end - 0x10), &mut buf), Ok(0x10));
    assert!(matches!(
        s.read_phys_partial(PhysAddr(end), &mut buf),
        Err(MemError::Phys(PhysError::NotRam { .. }))
    ));
    assert!(matches!(s.read_phys_partial(PhysAddr(u64::MAX - 3), &mut buf), Err(MemError::Phys(_))));
    assert!(s.read_phys(PhysAddr(end - 0x10), &mut buf).is_err());
}

#[test]
fn phys_reads_span_adjacent_ram_ranges() {
    let mut m = BufferMem::new("t", vec![1; 0x1000]);
    m.add_range(PhysAddr(0x1000), vec![2; 0x1000]);
    m.add_range(PhysAddr(0x3000), vec![3; 0x1000]);
    let mut s = AddressSpace::new(Box::new(m), MmuConfig::default());
    let mut buf = vec![0u8; 0x3000];
    assert_eq!(s.read_phys_partial(PhysAddr(0x800), &mut buf), Ok(0x1800));
    assert_eq!(buf[0x7ff], 1);
    assert_eq!(buf[0x800], 2);
    assert!(s.read_phys_partial(PhysAddr(0x2000), &mut buf).is_err());
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

/// A device that died: a batch whose page tables are not cached costs one failed read (the
/// tables' prefetch), not one more per address, and every object says the device failed.
#[test]
fn a_dead_device_fails_a_whole_batch_after_one_read() {
    let mut b = PageTableBuilder::new(Paging::Level4, 4 * MIB as usize);
    let v = 0x7f00_0000_0000u64;
    for i in 0..3u64 {
        b.map(VirtAddr(v + (i << 30)), PhysAddr(0x10_000 + i * 0x1000), PageSize::Size4K, W | U).unwrap();
    }
    let root = b.root();
    let (mut probe, reads) = Probe::new(b.into_mem("dead"), false);
    probe.dead = true;
    let mut s = AddressSpace::new(Box::new(probe), MmuConfig::new(Paging::Level4));
    let mut bufs = [[0u8; 8]; 3];
    let mut list: Vec<(VirtAddr, &mut [u8])> =
        bufs.iter_mut().enumerate().map(|(i, b)| (VirtAddr(v + ((i as u64) << 30)), &mut b[..])).collect();
    let results = s.read_virt_many_in(root, &mut list);
    assert!(results.iter().all(|r| r.as_ref().is_err_and(MemError::is_device_failure)), "{results:?}");
    assert_eq!(reads.load(Ordering::Relaxed), 1, "the walks asked the dead device again");
    let text = results[2].as_ref().unwrap_err().to_string();
    assert!(text.contains("not sent, since") && text.contains("no completion"), "{text}");
}
