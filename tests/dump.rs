//! `dmastub dump` against the real 6.1 images: every format and compression reads back with
//! the truth's task list, panic and release; an ELF dump of every page is the raw image byte for
//! byte; a kdump file at -d 31 is no bigger than makedumpfile's; the same dump over the NetTLP
//! emulator holds the same pages, and reads little more than them. The readers people use
//! (crash, drgn) are in `dump_readers.rs`.

mod common;

use common::*;
use dmastub::PhysAddr;
use dmastub::phys::{OpenOptions, open_file};
use std::path::{Path, PathBuf};

const PANIC: &str = "Kernel panic - not syncing";

fn dump(args: &[&str], out: &Path) -> String {
    let mut full = vec!["dump", "-q"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let (ok, stdout, stderr) = run(&full);
    assert!(ok, "dmastub {}:\n{stdout}{stderr}", full.join(" "));
    stderr
}

/// dmastub's ps, dmesg and kernel on `path` agree with the truth.
fn reads_right(path: &Path, t: &serde_json::Value) {
    let p = path.to_str().unwrap();
    let (ok, ps, err) = run(&["ps", "--image", p]);
    assert!(ok, "ps {p}: {err}");
    let probs = ps_differences(&parse_ps(&ps), t);
    assert!(probs.is_empty(), "ps {p} differs from the truth: {probs:?}\n{ps}");
    let (ok, log, err) = run(&["dmesg", "--image", p]);
    assert!(ok && log.contains(PANIC), "dmesg {p}: {err}\n{log}");
    let (ok, k, err) = run(&["kernel", "--image", p]);
    let release = t["kernel"]["release"].as_str().unwrap();
    assert!(ok && k.contains(release), "kernel {p}: {err}\n{k}");
}

/// Every page `dumped` holds reads the same bytes as `source`; returns how many.
fn same_pages(dumped: &Path, source: &Path) -> u64 {
    let mut d = open_file(dumped, &OpenOptions::default()).unwrap();
    let mut s = open_file(source, &OpenOptions::default()).unwrap();
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut n = 0;
    let ram: Vec<_> = d.ram().to_vec();
    for r in ram {
        for addr in (r.start.0..r.end()).step_by(4096) {
            if d.read(PhysAddr(addr), &mut a).is_err() {
                continue;
            }
            s.read(PhysAddr(addr), &mut b).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
            assert!(a == b, "{}: page {addr:#x} differs from {}", dumped.display(), source.display());
            n += 1;
        }
    }
    n
}

struct Fixture {
    dir: PathBuf,
    scratch: Scratch,
}

fn fixture(name: &str) -> Option<Fixture> {
    let dir = fixture_dir(BASE_FIXTURE)?;
    Some(Fixture { dir, scratch: Scratch::new(name) })
}

#[test]
fn kdump_files_in_every_compression_read_back_right() {
    let Some(fx) = fixture("dump-kdump") else { return };
    let t = truth(&fx.dir, "post-panic");
    let elf = unpacked(&fx.dir, "post-panic.elf.zst");
    let makedumpfile = fx.dir.join("post-panic.kdump-d31-zlib");
    let mut kept = None;
    for comp in ["zlib", "lzo", "snappy", "zstd", "none"] {
        let out = fx.scratch.0.join(format!("d31-{comp}.kdump"));
        dump(&["--image", elf.to_str().unwrap(), "--compress", comp, "--dump-level", "31"], &out);
        reads_right(&out, &t);
        let pages = same_pages(&out, &elf);
        assert!(pages > 1000, "{comp}: only {pages} pages in the dump");
        // Every compression keeps the same pages.
        assert_eq!(*kept.get_or_insert(pages), pages, "{comp}");
        if comp == "zlib" && makedumpfile.exists() {
            let (ours, theirs) =
                (std::fs::metadata(&out).unwrap().len(), std::fs::metadata(&makedumpfile).unwrap().len());
            assert!(ours <= theirs, "dump -d 31 zlib is {ours} bytes, makedumpfile -d 31 -c {theirs}");
        }
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn an_excluded_user_page_reads_as_excluded() {
    let Some(fx) = fixture("dump-excluded") else { return };
    let t = truth(&fx.dir, "post-panic");
    let elf = unpacked(&fx.dir, "post-panic.elf.zst");
    let out = fx.scratch.0.join("d31.kdump");
    dump(&["--image", elf.to_str().unwrap()], &out);
    let tk = &t["timekeeper"];
    let (cr3, global) = (tk["cr3"].as_str().unwrap(), tk["global_virt"].as_str().unwrap());
    let (ok, stdout, stderr) = run(&["read", "--image", out.to_str().unwrap(), "--cr3", cr3, global, "8"]);
    assert!(!ok, "a user page left out at -d 31 read as bytes: {stdout}");
    assert!(stderr.contains("excluded by the dump"), "{stderr}");
    // At level 0 the same page is there, with the value the truth gives.
    let all = fx.scratch.0.join("d0.kdump");
    dump(&["--image", elf.to_str().unwrap(), "--dump-level", "0", "--compress", "zstd"], &all);
    let (ok, stdout, stderr) = run(&["read", "--image", all.to_str().unwrap(), "--cr3", cr3, global, "8"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        same_pages(&all, &elf) * 4096,
        std::fs::metadata(&elf)
            .map(|_| open_file(&elf, &OpenOptions::default()).unwrap().ram_bytes())
            .unwrap()
    );
    let _ = stdout;
}

#[test]
fn an_elf_dump_of_every_page_is_the_raw_image() {
    let Some(fx) = fixture("dump-elf") else { return };
    let t = truth(&fx.dir, "post-panic");
    let raw = unpacked(&fx.dir, "post-panic.raw.zst");
    let out = fx.scratch.0.join("l0.elf");
    dump(&["--image", raw.to_str().unwrap(), "--format", "elf", "--dump-level", "0"], &out);
    let data = std::fs::read(&out).unwrap();
    let image = std::fs::read(&raw).unwrap();
    assert_eq!(&data[..4], b"\x7fELF");
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(data[56..58].try_into().unwrap()) as usize;
    let mut total = 0;
    for i in 0..phnum {
        let p = &data[phoff + 56 * i..][..56];
        if u32::from_le_bytes(p[..4].try_into().unwrap()) != 1 {
            continue;
        }
        let field = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap()) as usize;
        let (off, paddr, filesz, memsz) = (field(8), field(24), field(32), field(40));
        assert_eq!(filesz, memsz, "no PT_LOAD may claim zeros it does not hold");
        assert!(data[off..off + filesz] == image[paddr..paddr + filesz], "PT_LOAD at {paddr:#x} differs");
        total += filesz;
    }
    assert_eq!(total, image.len(), "the PT_LOADs hold every byte of the image");
    reads_right(&out, &t);
    // Zero pages are holes: the file takes less disk than it holds.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&out).unwrap();
    assert!(meta.blocks() * 512 < meta.len(), "zero pages should be holes in the file");
}

/// The NetTLP adapter's bytes, from `dmastub dump`'s report ("… completions (N bytes) …") for
/// the phase that line names.
fn dma_bytes(report: &str, phase: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.contains(phase) && l.contains("NetTLP"))
        .unwrap_or_else(|| panic!("no {phase} traffic in:\n{report}"));
    let at = line.find(" bytes)").unwrap_or_else(|| panic!("{line}"));
    let start = line[..at].rfind('(').unwrap() + 1;
    line[start..at].parse().unwrap()
}

#[test]
fn a_dump_by_dma_holds_the_same_pages_and_reads_little_more() {
    let Some(fx) = fixture("dump-nettlp") else { return };
    let t = truth(&fx.dir, "post-panic");
    let raw = unpacked(&fx.dir, "post-panic.raw.zst");
    let from_file = fx.scratch.0.join("file.kdump");
    dump(&["--image", raw.to_str().unwrap()], &from_file);
    let by_dma = fx.scratch.0.join("dma.kdump");
    let report = {
        let _emu = Emulator::start(raw.to_str().unwrap(), "127.0.43.2");
        dump(&["--nettlp", "127.0.43.2", "--nettlp-local", "127.0.43.1"], &by_dma)
    };
    reads_right(&by_dma, &t);
    let pages = same_pages(&by_dma, &raw);
    // A DMA source cannot tell RAM from holes: the dump covers the kernel's E820 RAM, which
    // leaves out the legacy hole below 1 MiB and the firmware's pages at the top that a raw
    // image of QEMU's RAM holds. Within that RAM, the same pages are kept.
    let e820 = {
        let mem = open_file(&raw, &OpenOptions::default()).unwrap();
        let mut space = dmastub::AddressSpace::new(mem, dmastub::MmuConfig::default());
        let kernel = dmastub::discover(&mut space, Default::default()).unwrap();
        dmastub::linux::ram_map(&kernel, &mut space).unwrap()
    };
    assert!(report.contains("RAM: the kernel's E820 map"), "{report}");
    let mut file_dump = open_file(&from_file, &OpenOptions::default()).unwrap();
    let mut page = vec![0u8; 4096];
    let in_e820 = e820
        .iter()
        .flat_map(|r| (r.start.0..r.end()).step_by(4096))
        .filter(|&a| file_dump.read(PhysAddr(a), &mut page).is_ok())
        .count() as u64;
    assert_eq!(pages, in_e820, "the same memory, the same pages kept within the kernel's RAM\n{report}");
    let (chosen, dumped) = (dma_bytes(&report, "choosing pages"), dma_bytes(&report, "dumping"));
    let mem_map = report
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("mem_map: ").and_then(|r| r.split(' ').next()?.parse::<u64>().ok())
        })
        .unwrap_or_else(|| panic!("no mem_map line in:\n{report}"));
    let need = pages * 4096 + mem_map;
    assert!(
        (chosen + dumped) as f64 <= 1.1 * need as f64,
        "read {} bytes by DMA to choose and dump {pages} pages and {mem_map} bytes of mem_map\n{report}",
        chosen + dumped
    );
}
