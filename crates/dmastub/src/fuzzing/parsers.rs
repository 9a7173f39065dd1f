//! The parsers of what the target holds: BTF, kallsyms tables, page tables, and the monitor grammar.

use super::images::{Overlay, mutate, test_images, with_machines};
use super::*;

/// The fixture's own `.BTF`, found in the 6.1 trimmed image by its header.
fn real_btf() -> &'static [u8] {
    static BLOB: OnceLock<Vec<u8>> = OnceLock::new();
    BLOB.get_or_init(|| {
        let image = &test_images()[0];
        let mut mem = Overlay::new(image);
        for (start, bytes) in &image.ranges {
            let magic = [0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
            for at in (0..bytes.len().saturating_sub(24)).step_by(4) {
                if bytes[at..at + 8] != magic {
                    continue;
                }
                let Ok(len) = Btf::blob_len(&bytes[at..at + 24]) else { continue };
                let mut blob = vec![0u8; len];
                if mem.read(PhysAddr(start + at as u64), &mut blob).is_ok()
                    && Btf::parse(&blob, "fixture").is_ok()
                {
                    return blob;
                }
            }
        }
        panic!("fuzzing: no .BTF in {}", image.name);
    })
}

/// Parses the input as BTF (first byte even) or the fixture's real BTF with the input's
/// mutations (odd: 4-byte offset, op, 8-byte value, like [`walkers`]); then asks it for every
/// layout dmastub uses.
pub fn btf(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    let blob: Vec<u8> = if mode & 1 == 0 {
        input.0.to_vec()
    } else {
        let mut blob = real_btf().to_vec();
        let cut = input.u32() as usize;
        if mode & 2 != 0 && cut < blob.len() {
            blob.truncate(cut);
        }
        let mut n = 0;
        while !input.0.is_empty() && n < 64 {
            n += 1;
            let (off, op, value) = (input.u32() as usize, input.u8(), input.u64());
            if blob.is_empty() {
                break;
            }
            let at = off % blob.len();
            let width = (1usize << (op & 3)).min(blob.len() - at);
            let mut cur = [0u8; 8];
            cur[..width].copy_from_slice(&blob[at..at + width]);
            let new = match (op >> 2) & 3 {
                0 => value,
                1 => u64::from_le_bytes(cur) ^ value,
                _ => u64::from_le_bytes(cur).wrapping_add(value),
            };
            blob[at..at + width].copy_from_slice(&new.to_le_bytes()[..width]);
        }
        blob
    };
    let _ = Btf::blob_len(&blob);
    let Ok(b) = Btf::parse(&blob, "fuzz") else { return };
    let _ = b.type_count();
    for ty in ["task_struct", "list_head", "printk_ringbuffer", "orc_entry", "module", "mm_struct"] {
        let _ = b.members(ty);
        let _ = b.size_of(ty);
    }
    let _ = b.member("task_struct", "thread.sp");
    let _ = b.enum_value(None, "PIDTYPE_PID");
    let _ = b.enum_value(Some("pid_type"), "PIDTYPE_TGID");
    if let Ok(tl) = TaskLayout::from_types(&b) {
        let _ = ThreadLayout::from_types(&b, &tl);
    }
    let _ = OrcLayout::from_types(&b);
}

/// kallsyms: the input as kernel memory holding the tables (first byte even), or discovery
/// (which finds the kernel and decodes its kallsyms, BTF and VMCOREINFO) over a fixture image
/// with the input's mutations where a clean discovery read (odd: then as in [`walkers`]).
pub fn kallsyms(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    if mode & 1 == 0 {
        let base = 0xffff_ffff_8200_0000u64;
        let mut flat = crate::testing::FakeMemory::new().with_region(base, input.0.to_vec());
        let len = input.0.len() as u64;
        let samples: Vec<u64> = (0..len.div_ceil(4096)).map(|p| base + p * 4096).collect();
        if let Ok(k) = kallsyms::find(&mut flat, &samples, base..base + len) {
            let _ = k.len();
            let first: Vec<(String, u64)> = k.iter().take(16).map(|(n, a)| (n.to_string(), a)).collect();
            for (_, a) in first {
                let _ = k.lookup_sized(a.wrapping_add(1));
            }
        }
        return;
    }
    with_machines(|ms| {
        let m = &ms[usize::from(mode >> 1) % ms.len()];
        let mut o = Overlay::new(m.image);
        mutate(&mut o, &m.discover_spots, &mut input);
        let mut space = AddressSpace::new(Box::new(o), MmuConfig::default());
        if let Ok(k) = discover(&mut space, Hints::default()) {
            let _ = render::kernel_report(&k, Hint::describe);
            let _ = render::kernel_summary(&k, Hint::describe);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Page walks over random tables.

/// The input as physical memory holding page tables (after a header: paging depth, physical
/// width, CR3). Walks the addresses the memory's own words name, checking that the direct walk,
/// the traced walk and the cached [`AddressSpace`] agree, and that a translated read returns
/// the bytes at the physical address.
pub fn page_walk(data: &[u8]) {
    let mut input = Input(data);
    let (flags, phys_bits, cr3) = (input.u8(), input.u8(), input.u64());
    let paging = if flags & 1 == 0 { Paging::Level4 } else { Paging::Level5 };
    let config = MmuConfig { paging, phys_bits };
    let mut ram = input.0.to_vec();
    ram.resize(ram.len().next_multiple_of(4096).max(4096), 0);
    let words: Vec<u64> =
        ram.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
    let mut virts: Vec<u64> = words.iter().copied().filter(|w| *w != 0).take(24).collect();
    virts.extend([0, 0xffff_ffff_8100_0000, 0xff11_0000_0000_0000, 0x7fff_ffff_f000, u64::MAX]);
    let mut direct_mem = BufferMem::new("fuzz", ram.clone());
    let mut space = AddressSpace::new(Box::new(BufferMem::new("fuzz", ram.clone())), config);
    for &v in &virts {
        let virt = VirtAddr(v);
        let direct = walk(&mut DirectReader::new(&mut direct_mem), config, cr3, virt, None);
        let traced = walk_trace(&mut DirectReader::new(&mut direct_mem), config, cr3, virt);
        assert_eq!(direct, traced.result, "walk and walk_trace disagree on {v:#x}");
        let cached = space.translate_in(cr3, virt);
        assert_eq!(direct, cached, "the cached walk disagrees on {v:#x}");
        let _ = space.vtop_in(cr3, virt);
        let mut buf = [0u8; 24];
        let read = space.read_virt_in(cr3, virt, &mut buf);
        if let (Ok(t), Ok(())) = (&direct, &read) {
            // The first byte is at the translated address, whatever the rest spans.
            let p = usize::try_from(t.phys.0).ok();
            assert_eq!(p.and_then(|p| ram.get(p)), Some(&buf[0]), "read of {v:#x} at {:#x}", t.phys.0);
        }
        if read.is_ok() {
            // Every byte of a successful read is the byte its own page translates to.
            for (i, b) in buf.iter().enumerate() {
                let vi = VirtAddr(v.wrapping_add(i as u64));
                let t = walk(&mut DirectReader::new(&mut direct_mem), config, cr3, vi, None);
                let at = t.ok().and_then(|t| usize::try_from(t.phys.0).ok()).and_then(|p| ram.get(p));
                assert_eq!(at, Some(b), "byte {i} of a read at {v:#x}");
            }
        }
    }
    let mut a = [0u8; 16];
    let mut b = [0u8; 4100];
    let mut many: Vec<(VirtAddr, &mut [u8])> =
        vec![(VirtAddr(virts[0]), &mut a), (VirtAddr(virts[0]), &mut b)];
    let _ = space.read_virt_many_in(cr3, &mut many);
}

// ---------------------------------------------------------------------------------------------
// The monitor grammar and commands.

thread_local! {
    static MONITOR: RefCell<Option<crate::gdb::DmaTarget>> = const { RefCell::new(None) };
}

/// Each line of the input (up to 8) as a `monitor` command: parsed, and run against a target
/// over the 6.1 trimmed image with its kernel found.
pub fn monitor(data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let _ = crate::gdb::monitor::parse_number(&text);
    MONITOR.with(|t| {
        let mut t = t.borrow_mut();
        let target = t.get_or_insert_with(|| {
            let image = &test_images()[0];
            let mut space = AddressSpace::new(Box::new(Overlay::new(image)), MmuConfig::default());
            let kernel = discover(&mut space, Hints::default()).expect("fuzzing: discovery on the 6.1 image");
            crate::gdb::DmaTarget::new(space, false).with_linux(Linux::new(kernel))
        });
        // Each input starts from the kernel's page tables in virtual mode.
        if let Some(cr3) = target.linux().map(|l| l.kernel.cr3.value) {
            target.set_cr3(cr3, "fuzz");
        }
        let _ = target.run_command(crate::gdb::monitor::Command::Virt);
        for line in text.lines().take(8) {
            if let Ok(cmd) = crate::gdb::monitor::parse(line) {
                let _ = target.run_command(cmd);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// NetTLP: datagram parsing, and the client's reassembly of completions from a hostile adapter.
