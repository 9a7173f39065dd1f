//! Real gdb against real Linux memory images (the fixtures): the timekeeper's values read
//! through its CR3, physical mode, errors, resume, reconnect.

mod common;

use common::*;
use std::time::{Duration, Instant};

const FIXTURE: &str = "linux-6.1-kaslr";

/// (snapshot, image file) for every image the issue names: raw before and after the panic, and
/// the post-panic ELF core.
const IMAGES: &[(&str, &str)] = &[
    ("pre-panic", "pre-panic.raw.zst"),
    ("post-panic", "post-panic.raw.zst"),
    ("post-panic", "post-panic.elf.zst"),
];

#[test]
fn timekeeper_values_read_through_its_cr3_on_every_image() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    for (snapshot, file) in IMAGES {
        let image = unpacked(&dir, file);
        let t = truth(&dir, snapshot);
        let tk = &t["timekeeper"];
        let (global, stack, cr3) = (hex(&tk["global_virt"]), hex(&tk["stack_virt"]), hex(&tk["cr3"]));
        let stub = Stub::start(&["--image", image.to_str().unwrap(), "--cr3", &format!("{cr3:#x}")]);
        let out = gdb(
            stub.port,
            &[&format!("x/gx {global:#x}"), &format!("x/gx {stack:#x}"), &format!("x/s {:#x}", global - 16)],
        );
        let want_global = tk["global_value_in_memory"].as_u64().unwrap();
        let want_stack = tk["stack_value_in_memory"].as_u64().unwrap();
        assert_eq!(x_gx(&out, global), Some(want_global), "{file}: global\n{out}");
        assert_eq!(x_gx(&out, stack), Some(want_stack), "{file}: stack\n{out}");
        assert!(out.contains("\"TIMEKEEPER-GLOB\""), "{file}: magic string\n{out}");
    }
}

#[test]
fn phys_mode_reads_the_image_bytes() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let elf = unpacked(&dir, "post-panic.elf.zst");
    let file = std::fs::read(&raw).unwrap();
    let t = truth(&dir, "post-panic");
    let gp = hex(&t["timekeeper"]["global_phys"]);
    let text = hex(&t["kaslr"]["text_phys"]);
    for image in [&raw, &elf] {
        let stub = Stub::start(&["--image", image.to_str().unwrap(), "--cr3", "0x1a20000"]);
        let dump =
            std::env::temp_dir().join(format!("dmastub-test-physdump-{}-{}", std::process::id(), stub.port));
        let out = gdb(
            stub.port,
            &[
                "monitor phys",
                "x/32xb 0x1000",
                &format!("x/16xb {gp:#x}"),
                &format!("dump binary memory {} {text:#x} {:#x}", dump.display(), text + (1 << 20)),
            ],
        );
        assert_eq!(x_bytes(&out, 0x1000, 32), file[0x1000..0x1020], "{}\n{out}", image.display());
        assert_eq!(x_bytes(&out, gp, 16), file[gp as usize..gp as usize + 16], "{out}");
        let dumped = std::fs::read(&dump).unwrap_or_default();
        let _ = std::fs::remove_file(&dump);
        assert!(
            dumped == file[text as usize..text as usize + (1 << 20)],
            "1 MiB phys dump differs from the file\n{out}"
        );
    }
}

#[test]
fn unmapped_and_non_ram_addresses_are_errors_not_zeros() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let elf = unpacked(&dir, "post-panic.elf.zst");
    let stub = Stub::start(&["--image", elf.to_str().unwrap(), "--cr3", "0x1a20000"]);
    let out = gdb(
        stub.port,
        &["x/gx 0xdead0000000", "x/gx 0x800000000000", "monitor phys", "x/gx 0x20000000", "x/gx 0xfffc0000"],
    );
    assert!(out.contains("Cannot access memory at address 0xdead0000000"), "{out}");
    assert!(out.contains("Cannot access memory at address 0x800000000000"), "non-canonical\n{out}");
    // Past the end of RAM (256 MiB) in phys mode, while the BIOS ROM segment of the core reads.
    assert!(out.contains("Cannot access memory at address 0x20000000"), "{out}");
    assert!(x_gx(&out, 0xfffc0000).is_some(), "the ELF core's ROM segment\n{out}");
}

#[test]
fn continue_and_step_return_at_once_with_a_message() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let stub = Stub::start(&["--image", raw.to_str().unwrap(), "--cr3", "0x1a20000"]);
    let start = Instant::now();
    let out = gdb_with(stub.port, None, &["continue", "stepi", "x/gx 0x4a50f0"], Duration::from_secs(60));
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(out.matches("cannot be continued or stepped").count(), 2, "{out}");
    let t = truth(&dir, "post-panic");
    assert_eq!(
        x_gx(&out, 0x4a50f0),
        t["timekeeper"]["global_value_in_memory"].as_u64(),
        "session still works\n{out}"
    );
}

#[test]
fn a_second_session_works_after_detach_and_after_a_dropped_connection() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let raw = unpacked(&dir, "pre-panic.raw.zst");
    let t = truth(&dir, "pre-panic");
    let tk = &t["timekeeper"];
    let (g, cr3) = (hex(&tk["global_virt"]), hex(&tk["cr3"]));
    let want = tk["global_value_in_memory"].as_u64();
    let stub = Stub::start(&["--image", raw.to_str().unwrap(), "--cr3", &format!("{cr3:#x}")]);
    let out1 = gdb(stub.port, &[&format!("x/gx {g:#x}"), "detach"]);
    assert_eq!(x_gx(&out1, g), want, "{out1}");
    // gdb in batch mode without detach just closes the socket: a dropped connection.
    let out2 = gdb(stub.port, &[&format!("x/gx {g:#x}")]);
    assert_eq!(x_gx(&out2, g), want, "{out2}");
    let out3 = gdb(stub.port, &[&format!("x/gx {g:#x}"), "kill"]);
    assert_eq!(x_gx(&out3, g), want, "{out3}");
    let out4 = gdb(stub.port, &[&format!("x/gx {g:#x}")]);
    assert_eq!(x_gx(&out4, g), want, "after kill\n{out4}");
}

#[test]
fn monitor_commands_steer_the_session() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let t = truth(&dir, "post-panic");
    let tk = &t["timekeeper"];
    let (g, gp, cr3) = (hex(&tk["global_virt"]), hex(&tk["global_phys"]), hex(&tk["cr3"]));
    let kernel_cr3 = hex(&t["paging"]["kernel_cr3"]);
    let want = tk["global_value_in_memory"].as_u64();
    // Started without a CR3: physical mode until one is set.
    let stub = Stub::start(&["--image", raw.to_str().unwrap(), "--no-linux"]);
    assert!(stub.banner.contains("raw image, 256 MiB RAM in 1 range"), "{}", stub.banner);
    assert!(stub.banner.contains("read-only"), "{}", stub.banner);
    let out = gdb(
        stub.port,
        &[
            "monitor help",
            "monitor cr3",
            "monitor virt",
            &format!("x/gx {gp:#x}"),
            &format!("monitor set-cr3 {cr3}"),
            "monitor virt",
            &format!("x/gx {g:#x}"),
            &format!("monitor vtop {g:#x}"),
            "monitor frobnicate",
            "monitor set-cr3 banana",
            "monitor cr3",
            &format!("monitor set-cr3 {:#x}", kernel_cr3 | 0x18),
            "monitor cr3",
            &format!("monitor vtop {g:#x}"),
            "monitor flush",
            "monitor stats",
            &format!("x/gx {:#x}", hex(&t["init_task"]["virt"])),
        ],
    );
    for want_text in [
        "vtop ADDR",
        "no CR3 is known",
        "active CR3 = 0x1a20000 (memory packets still address physical memory",
        "memory packets now address virtual memory through CR3 0x1a20000",
        "unknown command 'frobnicate'; 'monitor help' lists the commands",
        "'banana' is not a number",
        "CR3 0x1a20000 (monitor set-cr3), 4-level paging, memory packets in virt mode",
        "PML4",
        "PT",
        "dropped cached page-table pages and translations",
    ] {
        assert!(out.contains(want_text), "missing {want_text:?} in\n{out}");
    }
    assert_eq!(x_gx(&out, gp), want, "phys read before any CR3\n{out}");
    assert_eq!(x_gx(&out, g), want, "{out}");
    assert!(out.contains(&format!("{gp:#x}")), "vtop names the physical address\n{out}");
    // Under the kernel's CR3 (with flag bits), the user address is not mapped; the kernel's is.
    assert!(out.contains("not present"), "vtop under the kernel CR3\n{out}");
    assert!(x_gx(&out, hex(&t["init_task"]["virt"])).is_some(), "{out}");
}

#[test]
fn cr3_is_a_register_gdb_can_read_and_set() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let t = truth(&dir, "post-panic");
    let tk = &t["timekeeper"];
    let (g, cr3) = (hex(&tk["global_virt"]), hex(&tk["cr3"]));
    let kernel_cr3 = hex(&t["paging"]["kernel_cr3"]);
    let stub = Stub::start(&["--image", raw.to_str().unwrap(), "--cr3", &format!("{kernel_cr3:#x}")]);
    let out = gdb(
        stub.port,
        &[
            "p/x $cr3",
            "info registers rax",
            &format!("x/gx {g:#x}"),
            &format!("set $cr3 = {cr3:#x}"),
            "monitor cr3",
            &format!("x/gx {g:#x}"),
            "set $rax = 1",
        ],
    );
    assert!(out.contains(&format!("= {kernel_cr3:#x}")), "p/x $cr3\n{out}");
    assert!(out.contains("<unavailable>"), "rax is not known\n{out}");
    assert!(
        out.contains("Cannot access memory at address 0x4a50f0"),
        "user address under the kernel CR3\n{out}"
    );
    assert!(out.contains(&format!("CR3 {cr3:#x} (set $cr3)")), "{out}");
    assert_eq!(x_gx(&out, g), tk["global_value_in_memory"].as_u64(), "{out}");
    assert!(out.contains("Could not write register \"rax\""), "only cr3 can be written\n{out}");
}

#[test]
fn writes_are_refused_unless_allowed_and_never_reach_a_dump_file_by_default() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let elf = unpacked(&dir, "post-panic.elf.zst");
    let t = truth(&dir, "post-panic");
    let tk = &t["timekeeper"];
    let (g, gp, cr3) = (hex(&tk["global_virt"]), hex(&tk["global_phys"]), hex(&tk["cr3"]));
    let before = std::fs::read(&elf).unwrap();
    {
        let stub = Stub::start(&["--image", elf.to_str().unwrap(), "--cr3", &format!("{cr3:#x}")]);
        let out =
            gdb(stub.port, &[&format!("set {{unsigned long}}{g:#x} = 0x1234"), &format!("x/gx {g:#x}")]);
        assert!(out.contains(&format!("Cannot access memory at address {g:#x}")), "{out}");
        assert_eq!(x_gx(&out, g), tk["global_value_in_memory"].as_u64(), "{out}");
    }
    {
        let stub =
            Stub::start(&["--image", elf.to_str().unwrap(), "--cr3", &format!("{cr3:#x}"), "--allow-write"]);
        assert!(stub.banner.contains("the file is untouched"), "{}", stub.banner);
        let out = gdb(
            stub.port,
            &[
                &format!("set {{unsigned long}}{g:#x} = 0x1234"),
                &format!("x/gx {g:#x}"),
                "monitor phys",
                &format!("x/gx {gp:#x}"),
            ],
        );
        assert_eq!(x_gx(&out, g), Some(0x1234), "{out}");
        assert_eq!(x_gx(&out, gp), Some(0x1234), "{out}");
    }
    assert!(std::fs::read(&elf).unwrap() == before, "the dump file changed");
}

/// The QEMU ELF core of the 6.1 guest holds the same bytes as its raw image, in the two ranges
/// QEMU dumps, with the kernel's VMCOREINFO note and the vCPUs' NT_PRSTATUS notes.
#[test]
fn the_elf_core_and_the_raw_image_hold_the_same_memory() {
    use dmastub::PhysAddr;
    use dmastub::phys::{OpenOptions, PhysError, RamRange, SourceKind, open_file};
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let mut elf = open_file(&unpacked(&dir, "post-panic.elf.zst"), &OpenOptions::default()).unwrap();
    let mut raw = open_file(&unpacked(&dir, "post-panic.raw.zst"), &OpenOptions::default()).unwrap();
    assert_eq!(elf.kind(), SourceKind::ElfCore);
    assert_eq!(raw.kind(), SourceKind::RawImage);
    assert_eq!(
        elf.ram(),
        &[
            RamRange { start: PhysAddr(0), len: 0x1000_0000 },
            RamRange { start: PhysAddr(0xfffc_0000), len: 0x4_0000 },
        ]
    );
    assert_eq!(raw.ram(), &elf.ram()[..1]);
    let vmcoreinfo = elf.core_notes().iter().find(|n| n.name == "VMCOREINFO").expect("VMCOREINFO note");
    let text = String::from_utf8_lossy(&vmcoreinfo.desc);
    assert!(text.contains("OSRELEASE=6.1.0-56-amd64"), "{text}");
    assert!(elf.core_notes().iter().filter(|n| n.name == "CORE" && n.n_type == 1).count() >= 1);
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut rng = dmastub::testing::XorShift::new(0x9e37_79b9_7f4a_7c15);
    let pages = 0x1000_0000 / 4096;
    for i in 0..400u64 {
        let seed = rng.next_u64();
        // The first and last pages, and the rest spread at random.
        let page = match i {
            0 => 0,
            1 => pages - 1,
            _ => seed % pages,
        };
        elf.read(PhysAddr(page * 4096), &mut a).unwrap();
        raw.read(PhysAddr(page * 4096), &mut b).unwrap();
        assert!(a == b, "page {:#x} differs between the ELF core and the raw image", page * 4096);
    }
    elf.read(PhysAddr(0xffff_f000), &mut a).unwrap();
    assert!(matches!(raw.read(PhysAddr(0x1000_0000), &mut b), Err(PhysError::NotRam { .. })));
    assert!(matches!(elf.read(PhysAddr(0x1000_0000), &mut b), Err(PhysError::NotRam { .. })));
}
