//! vmcores from the producer people use, and dumps stopped halfway.
//!
//! makedumpfile (Debian's 1.7.2) writes the fixture's memory as a kdump-compressed file with zlib
//! (`-c`) and lzo (`-l`) pages at `-d 31`, and as a flattened stream (`-F`); dmastub reads each
//! one: the truth's task list, the panic, the release, and every page it holds equal to the raw
//! image's. makedumpfile and `dmastub dump -d 31` keep the same pages of that memory.
//!
//! `dmastub dump` over the NetTLP emulator, stopped by SIGINT after a second, exits non-zero,
//! says "partial dump", marks the file incomplete (kdump `status & 0x8`, ELF `e_flags & 1`), and
//! the file opens: the pages it got read as the image's, the ones it did not get are errors.
//!
//! Needs makedumpfile and `DMASTUB_DWARF_VMLINUX` (`eval "$(tools/setup-full-tests.sh)"`,
//! `apt-get install makedumpfile`) for the first part; without them it skips, saying so, unless
//! `DMASTUB_READERS_REQUIRED=1`.

mod common;

use common::*;
use dmastub::PhysAddr;
use dmastub::phys::{Exclusion, OpenOptions, PhysError, open_file};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PANIC: &str = "Kernel panic - not syncing";
const PAGE: u64 = 4096;

fn readers_required() -> bool {
    std::env::var_os("DMASTUB_READERS_REQUIRED").is_some_and(|v| v == "1")
}

/// makedumpfile (from PATH, else /usr/sbin or /usr/bin) and the DWARF vmlinux it needs
/// (`-x`); `None` after saying which is missing.
fn makedumpfile() -> Option<(PathBuf, PathBuf)> {
    let on_path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("makedumpfile"))
        .find(|p| p.is_file());
    let missing = match (on_path, dwarf_vmlinux()) {
        (Some(m), Some(v)) => return Some((m, v)),
        (None, _) => "makedumpfile (apt-get install makedumpfile)",
        (_, None) => "DMASTUB_DWARF_VMLINUX (eval \"$(tools/setup-full-tests.sh)\")",
    };
    assert!(!readers_required(), "DMASTUB_READERS_REQUIRED=1 but {missing} is missing");
    eprintln!("SKIP: {missing} is missing");
    None
}

fn dump(args: &[&str], out: &Path) {
    let mut full = vec!["dump", "-q"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let (ok, stdout, stderr) = run(&full);
    assert!(ok, "dmastub {}:\n{stdout}{stderr}", full.join(" "));
}

/// dmastub's ps, dmesg and kernel on `path` agree with the truth.
fn reads_right(tag: &str, path: &Path, t: &serde_json::Value) {
    let p = path.to_str().unwrap();
    let (ok, ps, err) = run(&["ps", "--image", p]);
    assert!(ok, "{tag}: ps: {err}");
    let probs = ps_differences(&parse_ps(&ps), t);
    assert!(probs.is_empty(), "{tag}: ps differs from the truth: {probs:?}\n{ps}");
    let (ok, log, err) = run(&["dmesg", "--image", p]);
    assert!(ok && log.contains(PANIC), "{tag}: dmesg: {err}\n{log}");
    let (ok, k, err) = run(&["kernel", "--image", p]);
    let release = t["kernel"]["release"].as_str().unwrap();
    assert!(ok && k.contains(release), "{tag}: kernel does not name {release}: {err}\n{k}");
}

/// The pages `dumped` holds (their addresses), each checked equal to `raw`'s bytes there. A page
/// may be left out (an `Excluded` error); any other error fails the test.
fn held_pages(tag: &str, dumped: &Path, raw: &[u8]) -> BTreeSet<u64> {
    let mut mem = open_file(dumped, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{tag}: dmastub cannot open {}: {e}", dumped.display()));
    let mut page = vec![0u8; PAGE as usize];
    let mut held = BTreeSet::new();
    let ram: Vec<_> = mem.ram().to_vec();
    for r in ram {
        for addr in (r.start.0..r.end()).step_by(PAGE as usize) {
            match mem.read(PhysAddr(addr), &mut page) {
                Ok(()) => {
                    let want = raw
                        .get(addr as usize..(addr + PAGE) as usize)
                        .unwrap_or_else(|| panic!("{tag}: page {addr:#x} is past the raw image"));
                    assert!(page == want, "{tag}: page {addr:#x} differs from the raw image");
                    held.insert(addr);
                }
                Err(PhysError::Excluded { reason: Exclusion::DumpLevel(31), .. }) => {}
                Err(e) => panic!("{tag}: page {addr:#x}: {e}"),
            }
        }
    }
    held
}

/// Runs makedumpfile with `args`, its stdout to `stdout` when given; its output when it fails.
fn run_makedumpfile(exe: &Path, args: &[&str], stdout: Option<&Path>) {
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null()).stderr(Stdio::piped());
    match stdout {
        Some(p) => cmd.stdout(std::fs::File::create(p).expect("create makedumpfile's output")),
        None => cmd.stdout(Stdio::piped()),
    };
    let out = cmd.output().expect("run makedumpfile");
    assert!(
        out.status.success(),
        "makedumpfile {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn makedumpfile_files_zlib_lzo_and_flattened_read_right() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let Some((makedumpfile, vmlinux)) = makedumpfile() else { return };
    let t = truth(&dir, "post-panic");
    let raw_path = unpacked(&dir, "post-panic.raw.zst");
    let raw = std::fs::read(&raw_path).expect("read the raw image");
    let scratch = Scratch::new("producers-makedumpfile");

    // makedumpfile 1.7.2 reads an ELF input's program headers at offset 64, where /proc/vmcore
    // has them; dmastub's ELF dumps put them there too.
    let input = scratch.0.join("in.elf");
    dump(&["--image", raw_path.to_str().unwrap(), "--format", "elf", "--dump-level", "0"], &input);
    let head = std::fs::read(&input).map(|d| d[..64].to_vec()).unwrap();
    assert_eq!(u64::from_le_bytes(head[32..40].try_into().unwrap()), 64, "e_phoff of dmastub's ELF dump");

    let (x, inp) = (vmlinux.to_str().unwrap(), input.to_str().unwrap());
    let zlib = scratch.0.join("d31.zlib");
    let zlib_notes = scratch.0.join("d31-vmcoreinfo.zlib");
    let lzo = scratch.0.join("d31.lzo");
    let flat = scratch.0.join("d31.flat");
    // With the DWARF vmlinux, as on a distribution (it takes makedumpfile half a minute of CPU to
    // read); the others read the VMCOREINFO note of dmastub's ELF dump, which is all makedumpfile
    // needs from /proc/vmcore too: the same file comes out, byte for byte.
    run_makedumpfile(&makedumpfile, &["-c", "-d", "31", "-x", x, inp, zlib.to_str().unwrap()], None);
    run_makedumpfile(&makedumpfile, &["-c", "-d", "31", inp, zlib_notes.to_str().unwrap()], None);
    assert!(
        std::fs::read(&zlib).unwrap() == std::fs::read(&zlib_notes).unwrap(),
        "makedumpfile -c -d 31 writes another file from dmastub's VMCOREINFO than from the DWARF vmlinux"
    );
    run_makedumpfile(&makedumpfile, &["-l", "-d", "31", inp, lzo.to_str().unwrap()], None);
    run_makedumpfile(&makedumpfile, &["-F", "-c", "-d", "31", inp], Some(&flat));
    assert_eq!(&std::fs::read(&zlib).unwrap()[..8], b"KDUMP   ");
    assert_eq!(&std::fs::read(&flat).unwrap()[..16], b"makedumpfile\0\0\0\0");

    let mut sets = Vec::new();
    for (tag, path) in [("makedumpfile -c", &zlib), ("makedumpfile -l", &lzo), ("makedumpfile -F -c", &flat)]
    {
        reads_right(tag, path, &t);
        let held = held_pages(tag, path, &raw);
        eprintln!("{tag}: {} pages held, each equal to the raw image's", held.len());
        assert!(held.len() > 1000, "{tag}: only {} pages held", held.len());
        sets.push((tag, held));
    }
    for (tag, set) in &sets[1..] {
        assert!(*set == sets[0].1, "{tag} and {} hold different pages", sets[0].0);
    }

    // dmastub's own -d 31 dump of the same memory keeps the pages makedumpfile keeps.
    for (tag, src) in [("dmastub dump of the raw image", &raw_path), ("dmastub dump of in.elf", &input)] {
        let ours = scratch.0.join("ours.kdump");
        dump(&["--image", src.to_str().unwrap(), "--dump-level", "31", "--compress", "zlib"], &ours);
        let held = held_pages(tag, &ours, &raw);
        let theirs = &sets[0].1;
        let only_ours: Vec<String> = held.difference(theirs).take(20).map(|a| format!("{a:#x}")).collect();
        let only_theirs: Vec<String> = theirs.difference(&held).take(20).map(|a| format!("{a:#x}")).collect();
        assert!(
            held == *theirs,
            "{tag}: {} pages against makedumpfile's {}; only in dmastub's ({}): {only_ours:?}; only in \
             makedumpfile's ({}): {only_theirs:?}",
            held.len(),
            theirs.len(),
            held.difference(theirs).count(),
            theirs.difference(&held).count()
        );
        eprintln!("{tag}: the same {} pages as makedumpfile -d 31", held.len());
        std::fs::remove_file(&ours).unwrap();
    }
}

/// Where a dump marks itself incomplete: `disk_dump_header.status & DUMP_DH_COMPRESSED_INCOMPLETE`
/// (0x8, at offset 424) for kdump, `e_flags & 1` (offset 48) for ELF.
fn marked_incomplete(path: &Path, format: &str) -> bool {
    let head = std::fs::read(path).map(|d| d[..512.min(d.len())].to_vec()).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(head[o..o + 4].try_into().unwrap());
    match format {
        "kdump" => {
            assert_eq!(&head[..8], b"KDUMP   ", "{}: not a kdump file", path.display());
            u32_at(424) & 0x8 != 0
        }
        _ => {
            assert_eq!(&head[..4], b"\x7fELF", "{}: not an ELF file", path.display());
            u32_at(48) & 1 != 0
        }
    }
}

/// `dmastub dump` over the emulator, stopped by SIGINT after a second.
fn stopped_dump(
    format: &str,
    raw_path: &Path,
    raw: &[u8],
    e820_pages: &[u64],
    listen: &str,
    local: &str,
    out: &Path,
) {
    let _emu = Emulator::start(raw_path.to_str().unwrap(), listen);
    let child = Command::new(BIN)
        .args(["dump", "--nettlp", listen, "--nettlp-local", local, "--dump-level", "0"])
        .args(["--compress", "zlib", "--format", format, "-o"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dmastub dump");
    let started = Instant::now();
    let mut child = child;
    // Discovery and the page choice come first; stop it once it has written some pages.
    loop {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "{format}: the dump ended before it was stopped; make the test stop it sooner"
        );
        let written = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        if started.elapsed() >= Duration::from_secs(1) && written > 1 << 20 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{format}: nothing written in 60 s");
    }
    // SAFETY: kill(2) on our own child, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{format}: stopped after {:.1} s: {}", started.elapsed().as_secs_f64(), stderr.trim());
    assert!(!output.status.success(), "{format}: a stopped dump exited with success\n{stderr}");
    assert!(stderr.contains("partial dump"), "{format}: stderr does not say 'partial dump':\n{stderr}");
    assert!(marked_incomplete(out, format), "{format}: the file is not marked incomplete");

    // "… is a partial dump holding N of the M pages chosen …"
    let counts: Vec<u64> = stderr
        .split("partial dump holding ")
        .nth(1)
        .map(|rest| rest.split_whitespace().filter_map(|w| w.parse().ok()).take(2).collect())
        .unwrap_or_default();
    let [said_held, chosen] = counts[..] else { panic!("{format}: no page counts in:\n{stderr}") };

    // Every page of the kernel's RAM (what a level-0 dump by DMA chooses): those the dump got come
    // first and read as the image's; the others are errors (an ELF dump has no PT_LOAD for them,
    // a kdump file says they were not captured), never zeros.
    let mut mem = open_file(out, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{format}: the partial dump does not open: {e}"));
    let mut page = vec![0u8; PAGE as usize];
    let (mut held, mut missing, mut first_missing) = (0u64, 0u64, None);
    for &addr in e820_pages {
        match mem.read(PhysAddr(addr), &mut page) {
            Ok(()) => {
                assert!(
                    page[..] == raw[addr as usize..(addr + PAGE) as usize],
                    "{format}: page {addr:#x} of the partial dump differs from the image"
                );
                assert!(first_missing.is_none(), "{format}: page {addr:#x} held after a page not captured");
                held += 1;
            }
            Err(e) => {
                assert!(!e.is_device_failure(), "{format}: page {addr:#x}: {e}");
                // A level-0 dump leaves nothing out: a kdump page it does not hold was not
                // captured, and must say so, not blame the dump level.
                if format == "kdump" {
                    assert!(
                        matches!(e, PhysError::Excluded { reason: Exclusion::NotCaptured, .. }),
                        "{format}: page {addr:#x} past the stop: {e}"
                    );
                }
                first_missing.get_or_insert(addr);
                missing += 1;
            }
        }
    }
    eprintln!(
        "{format}: {held} pages held and equal to the image, {missing} not captured (from {:#x})",
        first_missing.unwrap_or(0)
    );
    assert_eq!(held, said_held, "{format}: pages held against what dmastub dump said");
    assert_eq!(held + missing, chosen, "{format}: pages of the kernel's RAM against the pages chosen");
    assert!(held >= 256 && missing > 0, "{format}: {held} pages held, {missing} missing");
}

/// The pages of the kernel's E820 RAM in `raw`: what a dump by DMA covers.
fn e820_pages(raw: &Path) -> Vec<u64> {
    let mem = open_file(raw, &OpenOptions::default()).unwrap();
    let mut space = dmastub::AddressSpace::new(mem, dmastub::MmuConfig::default());
    let kernel = dmastub::discover(&mut space, Default::default()).unwrap();
    let ram = dmastub::linux::ram_map(&kernel, &mut space).unwrap();
    ram.iter().flat_map(|r| (r.start.0..r.end()).step_by(PAGE as usize)).collect()
}

#[test]
fn a_dump_stopped_by_sigint_is_marked_incomplete_and_reads_what_it_got() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let raw_path = unpacked(&dir, "post-panic.raw.zst");
    let raw = std::fs::read(&raw_path).expect("read the raw image");
    let ram = e820_pages(&raw_path);
    let scratch = Scratch::new("producers-sigint");
    let (elf, kdump) = (scratch.0.join("stopped.elf"), scratch.0.join("stopped.kdump"));
    stopped_dump("elf", &raw_path, &raw, &ram, "127.0.45.4", "127.0.45.3", &elf);
    stopped_dump("kdump", &raw_path, &raw, &ram, "127.0.45.2", "127.0.45.1", &kdump);
}
