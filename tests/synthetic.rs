//! Real gdb and the real binary against machines built in the test: no fixtures needed, so
//! these run everywhere. A live RAM file changed under the server, LiME and 5-level images,
//! the command line's `read` and `vtop`, refused files, the demo and the gdb script.

mod common;

use common::*;
use dmastub::mmu::{PageSize, Paging, bits};
use dmastub::testing::page_tables::PageTableBuilder;
use dmastub::testing::{SyntheticFacts, synthetic_machine};
use dmastub::{PhysAddr, VirtAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

fn machine() -> (Vec<u8>, SyntheticFacts) {
    synthetic_machine().expect("build the synthetic machine")
}

/// The synthetic machine as a raw image in `dir`, served through its CR3.
fn serve_machine(dir: &Scratch) -> (Stub, SyntheticFacts) {
    let (bytes, f) = machine();
    let raw = dir.file("m.raw", &bytes);
    let stub = Stub::start(&["--image", raw.to_str().unwrap(), "--cr3", &format!("{:#x}", f.cr3)]);
    (stub, f)
}

/// A gdb `shell` command that writes the u64 `value` at file offset `offset`.
fn poke(file: &Path, offset: u64, value: u64) -> String {
    format!(
        "shell python3 -c \"import struct; f=open('{}','r+b'); f.seek({offset}); f.write(struct.pack('<Q', {value})); f.close()\"",
        file.display()
    )
}

#[test]
fn a_live_ram_file_is_never_served_stale() {
    let (bytes, f) = machine();
    let dir = Scratch::new("live");
    let ram = dir.file("guest.mem", &bytes);
    let stub = Stub::start(&["--live", ram.to_str().unwrap(), "--cr3", &format!("{:#x}", f.cr3)]);
    assert!(stub.banner.contains("live RAM file"), "{}", stub.banner);
    let x = format!("x/gx {:#x}", f.counter_virt);
    let out = gdb(
        stub.port,
        &[
            &x,
            // The data changes: the next read sees it.
            &poke(&ram, f.counter_phys, 0x1111),
            &x,
            // The page table changes (the counter's page now maps the spare page): after an
            // idle moment, the cached translation is gone.
            &poke(&ram, f.counter_pte_phys, f.spare_page_phys | bits::PRESENT | bits::WRITABLE | bits::USER),
            "shell sleep 0.2",
            &x,
            // Back again, and read at once after a monitor command (which ends a burst).
            &poke(
                &ram,
                f.counter_pte_phys,
                (f.counter_phys & !0xfff) | bits::PRESENT | bits::WRITABLE | bits::USER,
            ),
            "monitor cr3",
            &x,
        ],
    );
    let values: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with(&format!("{:#x}:", f.counter_virt)))
        .filter_map(|l| {
            l.split_whitespace().nth(1).and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        })
        .collect();
    assert_eq!(values, vec![f.counter_value, 0x1111, f.spare_value, 0x1111], "{out}");
}

#[test]
fn a_lime_dump_is_served() {
    let (bytes, f) = machine();
    // Two LiME ranges with a hole between them: [0, 4 MiB) and [8 MiB, end).
    let mut lime = Vec::new();
    for (start, end) in [(0u64, 4u64 << 20), (8 << 20, bytes.len() as u64)] {
        lime.extend_from_slice(&0x4C69_4D45u32.to_le_bytes());
        lime.extend_from_slice(&1u32.to_le_bytes());
        lime.extend_from_slice(&start.to_le_bytes());
        lime.extend_from_slice(&(end - 1).to_le_bytes());
        lime.extend_from_slice(&[0; 8]);
        lime.extend_from_slice(&bytes[start as usize..end as usize]);
    }
    let dir = Scratch::new("lime");
    let path = dir.file("machine.lime", &lime);
    let stub = Stub::start(&["--image", path.to_str().unwrap(), "--cr3", &format!("{:#x}", f.cr3)]);
    assert!(stub.banner.contains("LiME dump, 28 MiB RAM in 2 ranges"), "{}", stub.banner);
    let out = gdb(stub.port, &[&format!("x/gx {:#x}", f.counter_virt), "monitor phys", "x/gx 0x500000"]);
    assert_eq!(x_gx(&out, f.counter_virt), Some(f.counter_value), "{out}");
    assert!(out.contains("Cannot access memory at address 0x500000"), "the hole is not RAM\n{out}");
}

#[test]
fn five_level_paging_reaches_beyond_48_bits() {
    let mut b = PageTableBuilder::new(Paging::Level5, 4 << 20);
    let high = 0xff11_2233_4455_6000u64; // canonical only with 57-bit addresses
    b.map(VirtAddr(high), PhysAddr(0x10000), PageSize::Size4K, bits::WRITABLE).unwrap();
    b.write_u64(PhysAddr(0x10010), 0x5_1e7e1).unwrap();
    let cr3 = b.root();
    let dir = Scratch::new("la57");
    let path = dir.file("la57.raw", &b.into_bytes());
    let stub =
        Stub::start(&["--image", path.to_str().unwrap(), "--cr3", &format!("{cr3:#x}"), "--paging", "5"]);
    let out =
        gdb(stub.port, &[&format!("x/gx {:#x}", high + 0x10), &format!("monitor vtop {:#x}", high + 0x10)]);
    assert_eq!(x_gx(&out, high + 0x10), Some(0x5_1e7e1), "{out}");
    assert!(out.contains("PML5") && out.contains("5-level"), "{out}");
    // The same image under 4-level paging: that address is not canonical.
    let stub4 = Stub::start(&["--image", path.to_str().unwrap(), "--cr3", &format!("{cr3:#x}")]);
    let out = gdb(stub4.port, &[&format!("x/gx {:#x}", high + 0x10)]);
    assert!(out.contains("Cannot access memory"), "{out}");
}

#[test]
fn read_and_vtop_work_without_gdb() {
    let (bytes, f) = machine();
    let dir = Scratch::new("cli");
    let raw = dir.file("m.raw", &bytes);
    let raw = raw.to_str().unwrap();
    let cr3 = format!("{:#x}", f.cr3);

    let (ok, out, err) =
        run(&["read", "--image", raw, "--cr3", &cr3, &format!("{:#x}", f.greeting_virt), "16"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(
            "0000000000601000: 48 65 6c 6c 6f 20 66 72  6f 6d 20 64 6d 61 73 74  |Hello from dmast|"
        ),
        "{out}"
    );

    let out = Command::new(BIN)
        .args(["read", "--image", raw, "--phys", "--binary", &format!("{}", f.counter_phys), "8"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, f.counter_value.to_le_bytes(), "--binary writes the bytes as they are");

    let (ok, out, err) = run(&["vtop", "--image", raw, "--cr3", &cr3, &format!("{:#x}", f.counter_virt)]);
    assert!(ok, "{err}");
    for level in
        ["PML4[0]", "PDPT[0]", "PD[3]", "PT[1]", "4 KiB page", &format!("-> phys {:#x}", f.counter_phys)]
    {
        assert!(out.contains(level), "missing {level:?}:\n{out}");
    }

    let (ok, _, err) = run(&["vtop", "--image", raw, "--cr3", &cr3, "0xdead0000000"]);
    assert!(!ok);
    assert!(err.contains("does not translate"), "{err}");

    // A read that runs into an unmapped page prints what it could, then says where it stopped.
    let (ok, out, err) =
        run(&["read", "--image", raw, "--cr3", &cr3, &format!("{:#x}", f.greeting_virt + 0xff0), "32"]);
    assert!(!ok);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("stopped after 0x10 bytes") && err.contains("not present"), "{err}");

    let (ok, _, err) = run(&["read", "--image", raw, "0x1000", "16"]);
    assert!(!ok && err.contains("--phys"), "read needs --phys or --cr3: {err}");
}

#[test]
fn files_that_are_not_memory_images_are_refused_with_the_reason() {
    let dir = Scratch::new("bad");
    let cases: Vec<(PathBuf, &str)> = vec![
        (dir.file("empty.raw", b""), "empty"),
        (dir.file("odd.raw", &[7u8; 1000]), "not a multiple of 4 KiB"),
        (dir.file("dump.zst", &[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]), "zstd"),
        (dir.file("trunc.elf", b"\x7fELF\x02\x01\x01\0"), "ELF"),
        (dir.0.join("missing.raw"), "missing.raw"),
    ];
    for (path, why) in cases {
        let (ok, out, err) = run(&["serve", "--image", path.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
        assert!(!ok, "{} was accepted: {out}", path.display());
        assert!(err.contains(why), "{}: want {why:?} in {err:?}", path.display());
        assert!(err.contains(path.file_name().unwrap().to_str().unwrap()), "names the file: {err}");
    }
}

#[test]
fn the_demo_shows_a_session_against_the_synthetic_machine() {
    let out = Command::new(BIN).arg("demo").output().expect("run dmastub demo");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let (_, f) = machine();
    assert!(text.contains("SYNTHETIC"), "{text}");
    assert!(text.contains(f.greeting), "{text}");
    assert!(text.contains(&format!("{:#018x}", f.counter_value)), "{text}");
    assert!(text.contains(&format!("-> phys {:#x}", f.counter_phys)), "{text}");
    assert!(text.contains("cannot be continued or stepped"), "{text}");
}

#[test]
fn the_gdb_script_helpers_work() {
    let dir = Scratch::new("script");
    let (stub, f) = serve_machine(&dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gdb-scripts/dmastub.gdb");
    let out = gdb(
        stub.port,
        &[
            &format!("source {}", script.display()),
            &format!("vtop {:#x}+0x100", f.greeting_virt),
            &format!("xphys {:#x}", f.counter_phys),
            &format!("x/gx {:#x}", f.counter_virt),
            "p/x $cr3",
            "set-cr3 0x1000",
            "p/x $cr3",
            &format!("set-cr3 {:#x}", f.cr3),
            "monitor cr3",
        ],
    );
    assert!(out.contains(&format!("$1 = {:#x}", f.cr3)), "{out}");
    assert!(out.contains("$2 = 0x1000"), "set-cr3 refreshes gdb's $cr3\n{out}");
    assert!(out.contains(&format!("-> phys {:#x}", f.counter_phys)), "vtop helper\n{out}");
    assert_eq!(x_gx(&out, f.counter_phys), Some(f.counter_value), "xphys helper\n{out}");
    assert_eq!(x_gx(&out, f.counter_virt), Some(f.counter_value), "back in virt mode\n{out}");
    assert!(out.contains("(monitor set-cr3)"), "{out}");
}

#[test]
fn a_second_gdb_while_one_is_attached_is_turned_away_not_left_hanging() {
    let dir = Scratch::new("busy");
    let (stub, f) = serve_machine(&dir);
    let port = stub.port;
    let x = format!("x/gx {:#x}", f.counter_virt);
    let first = {
        let x = x.clone();
        std::thread::spawn(move || gdb(port, &[&x, "shell sleep 3", &x]))
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let start = std::time::Instant::now();
    let second = gdb_with(port, None, &[&x], std::time::Duration::from_secs(30));
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "the second gdb waited\n{second}");
    assert_eq!(x_gx(&second, f.counter_virt), None, "{second}");
    assert!(second.contains("Remote connection closed") || second.contains("Connection reset"), "{second}");
    let first = first.join().unwrap();
    assert_eq!(x_gx(&first, f.counter_virt), Some(f.counter_value), "{first}");
    let third = gdb(port, &[&x]);
    assert_eq!(x_gx(&third, f.counter_virt), Some(f.counter_value), "{third}");
}

/// The library names no flag: the server's advice names the command's own, `--cr3`.
#[test]
fn advice_without_a_cr3_names_the_commands_flag() {
    let dir = Scratch::new("advice");
    let (bytes, _) = machine();
    let raw = dir.file("machine.raw", &bytes);
    let stub = Stub::start(&["--image", raw.to_str().unwrap(), "--no-linux"]);
    let out = gdb(stub.port, &["monitor virt", "monitor cr3"]);
    assert_eq!(
        out.matches("no CR3 is known: give one with 'monitor set-cr3 ADDR' (or start with --cr3)").count(),
        2,
        "{out}"
    );
}
