//! The real makedumpfile file of the 6.1 fixture (`makedumpfile -d 31 -c` of the ELF core):
//! every page it holds reads as the ELF core does, pages it left out are Excluded errors, the
//! commands find the same kernel, tasks and log, and a flattened copy (records shuffled and
//! overlapping) reads the same; with makedumpfile installed, `makedumpfile -R` of that copy
//! gives back the original file.

mod common;

use common::{BASE_FIXTURE, Scratch, fixture_dir, hex, parse_ps, ps_differences, run, truth, unpacked};
use dmastub::PhysAddr;
use dmastub::phys::kdump::KdumpMem;
use dmastub::phys::{OpenOptions, PhysError, SourceKind, find_range, open_file};
use std::path::{Path, PathBuf};

const KDUMP: &str = "post-panic.kdump-d31-zlib";
const PAGE: usize = 4096;

fn fixture() -> Option<(PathBuf, PathBuf, serde_json::Value)> {
    let dir = fixture_dir(BASE_FIXTURE)?;
    let kdump = dir.join(KDUMP);
    if !kdump.exists() {
        eprintln!("SKIP: {} not found", kdump.display());
        return None;
    }
    let elf = unpacked(&dir, "post-panic.elf.zst");
    Some((kdump, elf, truth(&dir, "post-panic")))
}

/// Every valid pfn: dumped ones read as the ELF core does, the others are Excluded errors.
fn compare_with_elf(kdump: &Path, elf: &Path) -> (u64, u64) {
    let k = KdumpMem::open(kdump).expect("open the kdump file");
    let mut mem = open_file(kdump, &OpenOptions::default()).expect("open_file");
    let mut core = open_file(elf, &OpenOptions::default()).expect("open the ELF core");
    assert_eq!(mem.kind(), SourceKind::Kdump);
    let (mut a, mut b) = (vec![0u8; PAGE], vec![0u8; PAGE]);
    let (mut dumped, mut excluded) = (0, 0);
    for pfn in 0..k.max_pfn() {
        if !k.valid(pfn) {
            continue;
        }
        let addr = PhysAddr(pfn * PAGE as u64);
        core.read(addr, &mut b).unwrap_or_else(|e| panic!("ELF core pfn {pfn:#x}: {e}"));
        match mem.read(addr, &mut a) {
            Ok(()) => {
                assert!(k.dumped(pfn), "pfn {pfn:#x} read but not dumped");
                assert!(a == b, "pfn {pfn:#x}: the kdump file and the ELF core differ");
                dumped += 1;
            }
            Err(e @ PhysError::Excluded { .. }) => {
                assert!(!k.dumped(pfn), "pfn {pfn:#x}: {e}");
                assert!(!e.is_device_failure());
                excluded += 1;
            }
            Err(e) => panic!("pfn {pfn:#x}: {e}"),
        }
    }
    assert_eq!(dumped, k.dumped_pages());
    (dumped, excluded)
}

#[test]
fn every_page_the_kdump_holds_reads_as_the_elf_core() {
    let Some((kdump, elf, _)) = fixture() else { return };
    let k = KdumpMem::open(&kdump).unwrap();
    assert_eq!(k.dump_level(), 31);
    let (dumped, excluded) = compare_with_elf(&kdump, &elf);
    eprintln!("{dumped} pages dumped and equal to the ELF core, {excluded} excluded");
    assert!(dumped > 1000 && excluded > 10_000, "{dumped} dumped, {excluded} excluded");
    // Its RAM is the ELF core's below max_mapnr (the core also holds the 256 KiB BIOS ROM at
    // 0xfffc0000, past the max_mapnr makedumpfile gave the bitmaps).
    let mem = open_file(&kdump, &OpenOptions::default()).unwrap();
    let core = open_file(&elf, &OpenOptions::default()).unwrap();
    assert_eq!(mem.ram_bytes(), 256 << 20);
    for r in mem.ram() {
        assert!(find_range(core.ram(), r.start, r.len).is_some(), "{r} is not RAM in the ELF core");
    }
    let d = mem.describe();
    assert!(d.contains("kdump-compressed vmcore (zlib, dump level 31"), "{d}");
    assert!(mem.core_notes().iter().any(|n| n.name == "VMCOREINFO"), "no VMCOREINFO note");
    assert_eq!(mem.core_notes().iter().filter(|n| n.name == "CORE" && n.n_type == 1).count(), 2);
}

#[test]
fn kernel_ps_and_dmesg_agree_with_the_truth() {
    let Some((kdump, elf, t)) = fixture() else { return };
    let img = kdump.to_str().unwrap();
    let (ok, report, err) = run(&["kernel", "--image", img]);
    assert!(ok, "{err}");
    for (key, want) in [
        ("release", t["kernel"]["release"].as_str().unwrap().to_string()),
        ("kaslr slide", format!("{:#x}", hex(&t["kaslr"]["offset"]))),
        ("kernel cr3", format!("{:#x}", hex(&t["paging"]["kernel_cr3"]))),
        ("init_task", format!("{:#x}", hex(&t["init_task"]["virt"]))),
        ("phys_base", format!("{:#x}", hex(&t["kaslr"]["phys_base"]))),
    ] {
        let line = report.lines().find(|l| l.starts_with(key)).unwrap_or_default();
        assert_eq!(line[key.len()..].split_whitespace().next(), Some(want.as_str()), "{key}:\n{report}");
    }

    let (ok, ps, err) = run(&["ps", "--image", img]);
    assert!(ok, "{err}");
    let probs = ps_differences(&parse_ps(&ps), &t);
    assert!(probs.is_empty(), "ps differs from the truth: {probs:?}\n{ps}");

    let (ok, log, err) = run(&["dmesg", "--image", img]);
    assert!(ok, "{err}");
    let (_, elf_log, _) = run(&["dmesg", "--image", elf.to_str().unwrap()]);
    assert_eq!(log, elf_log, "the kernel log differs from the ELF core's");
    assert!(log.contains("Kernel panic - not syncing: sysrq triggered crash"), "{log}");
}

#[test]
fn a_user_page_left_out_reads_as_excluded() {
    let Some((kdump, _, t)) = fixture() else { return };
    let tk = &t["timekeeper"];
    let (cr3, virt) = (tk["cr3"].as_str().unwrap(), tk["global_virt"].as_str().unwrap());
    let (ok, out, err) = run(&["read", "--image", kdump.to_str().unwrap(), "--cr3", cr3, virt, "8"]);
    assert!(!ok, "read an excluded page: {out}");
    let want = format!("physical {:#x} was excluded by the dump (dump level 31", hex(&tk["global_phys"]));
    assert!(err.contains(&want), "{err}");
}

/// `bytes` as a flattened stream: records of 1 byte to 256 KiB in shuffled order, with stale
/// records for some places written before the real ones.
fn flatten(bytes: &[u8]) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let mut records: Vec<(usize, usize)> = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        let n = (1 + next(256 << 10) as usize).min(bytes.len() - off);
        records.push((off, n));
        off += n;
    }
    for i in (1..records.len()).rev() {
        records.swap(i, next(i as u64 + 1) as usize);
    }
    let mut out = vec![0u8; 4096];
    out[..12].copy_from_slice(b"makedumpfile");
    out[16..24].copy_from_slice(&1i64.to_be_bytes());
    out[24..32].copy_from_slice(&1i64.to_be_bytes());
    let put = |out: &mut Vec<u8>, at: usize, data: &[u8]| {
        out.extend_from_slice(&(at as i64).to_be_bytes());
        out.extend_from_slice(&(data.len() as i64).to_be_bytes());
        out.extend_from_slice(data);
    };
    let stale = vec![0xeeu8; 300 << 10];
    for (k, &(at, n)) in records.iter().enumerate() {
        if k % 4 == 0 {
            let from = at.saturating_sub(1000);
            let len = (n + 2000).min(bytes.len() - from).min(stale.len());
            put(&mut out, from, &stale[..len]);
        }
    }
    for &(at, n) in &records {
        put(&mut out, at, &bytes[at..at + n]);
    }
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes());
    out
}

#[test]
fn a_flattened_copy_reads_the_same() {
    let Some((kdump, elf, _)) = fixture() else { return };
    let original = std::fs::read(&kdump).unwrap();
    let scratch = Scratch::new("kdump-flat");
    let flat = scratch.file("post-panic.flat", &flatten(&original));
    let mem = open_file(&flat, &OpenOptions::default()).unwrap();
    assert!(mem.describe().contains("kdump-compressed vmcore, flattened (zlib"), "{}", mem.describe());
    drop(mem);
    let (dumped, _) = compare_with_elf(&flat, &elf);
    assert_eq!(dumped, KdumpMem::open(&kdump).unwrap().dumped_pages());
    let (ok, ps_flat, err) = run(&["ps", "--image", flat.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (_, ps, _) = run(&["ps", "--image", kdump.to_str().unwrap()]);
    assert_eq!(ps_flat, ps);

    let makedumpfile = ["/usr/sbin/makedumpfile", "/usr/bin/makedumpfile", "/sbin/makedumpfile"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    let Some(makedumpfile) = makedumpfile else {
        eprintln!("SKIP: makedumpfile is not installed: `makedumpfile -R` of the flattened copy not checked");
        return;
    };
    let rebuilt = scratch.0.join("rebuilt.kdump");
    let st = std::process::Command::new(makedumpfile)
        .arg("-R")
        .arg(&rebuilt)
        .stdin(std::fs::File::open(&flat).unwrap())
        .output()
        .expect("run makedumpfile -R");
    assert!(st.status.success(), "makedumpfile -R: {}", String::from_utf8_lossy(&st.stderr));
    assert!(std::fs::read(&rebuilt).unwrap() == original, "makedumpfile -R of the flattened copy differs");
}
