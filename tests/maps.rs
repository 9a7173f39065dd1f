//! `monitor maps PID` and `dmastub maps PID`: a process's memory map read from the kernel's
//! maple tree, checked through real gdb against what the guest's own `/proc/PID/maps` printed
//! (the `timekeeper-maps` section of each fixture's `truth-serial.log`), on every fixture and
//! image (raw and ELF, before and after the panic); the command line against the monitor; and
//! the errors a user can cause.

mod common;

use common::*;
use dmastub::linux::{Hints, Linux, discover};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::{self, OpenOptions};
use std::path::Path;

/// The images each fixture may have (those present are checked).
const IMAGES: &[&str] = &["post-panic.raw.zst", "post-panic.elf.zst", "pre-panic.raw.zst"];

/// The lines of section `name` (`--- name` up to the next `--- `) of the guest's report.
fn section(dir: &Path, name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("truth-serial.log")).ok()?;
    let mut out = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(s) = line.strip_prefix("--- ") {
            if out.is_some() {
                break;
            }
            if s.trim() == name {
                out = Some(Vec::new());
            }
            continue;
        }
        if let Some(v) = out.as_mut() {
            v.push(line.to_string());
        }
    }
    out
}

/// Lines without their trailing blanks (a serial console and gdb may drop or keep them).
fn lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim_end().to_string()).collect()
}

/// The text gdb printed between two `echo`ed markers.
fn between(out: &str, from: &str, to: &str) -> String {
    let start = out.find(from).map(|i| i + from.len()).unwrap_or_else(|| panic!("no {from} in:\n{out}"));
    let end = out[start..].find(to).map(|i| start + i).unwrap_or_else(|| panic!("no {to} in:\n{out}"));
    out[start..end].trim_start_matches('\n').to_string()
}

#[test]
fn monitor_maps_equals_the_guests_proc_maps_on_every_fixture_and_image() {
    let mut checked = 0;
    for dir in fixture_dirs() {
        let (Some(truth), Some(pid)) = (section(&dir, "timekeeper-maps"), section(&dir, "timekeeper-pid"))
        else {
            eprintln!("SKIP {}: no timekeeper-maps in truth-serial.log", dir.display());
            continue;
        };
        let pid = pid.first().map(|p| p.trim().to_string()).expect("a pid");
        let truth: Vec<String> =
            truth.iter().map(|l| l.trim_end().to_string()).filter(|l| !l.is_empty()).collect();
        assert!(truth.len() >= 5, "{}: the truth has {} lines", dir.display(), truth.len());
        for image in IMAGES {
            if !dir.join(image).exists() {
                continue;
            }
            let path = unpacked(&dir, image);
            let path = path.to_str().unwrap();
            let stub = Stub::start(&["--image", path]);
            let out = gdb(
                stub.port,
                &[
                    "echo <<MAPS\\n",
                    &format!("monitor maps {pid}"),
                    "echo MAPS>>\\n",
                    "echo <<KTHREAD\\n",
                    "monitor maps 2",
                    "echo KTHREAD>>\\n",
                    "echo <<NOPID\\n",
                    "monitor maps 99999",
                    "echo NOPID>>\\n",
                    "echo <<NOARG\\n",
                    "monitor maps",
                    "echo NOARG>>\\n",
                ],
            );
            let monitor = between(&out, "<<MAPS", "MAPS>>");
            assert_eq!(lines(&monitor), truth, "{} {image}: monitor maps {pid}", dir.display());
            let (ok, cli, err) = run(&["maps", &pid, "--image", path]);
            assert!(ok, "dmastub maps failed: {err}");
            assert_eq!(lines(&cli), lines(&monitor), "{} {image}: CLI and monitor differ", dir.display());
            // Each line exactly as /proc prints it, trailing blank of an unnamed VMA included.
            for line in cli.lines() {
                let fields = line.split_whitespace().count();
                assert!(fields == 5 && line.ends_with(' ') || fields == 6, "{line:?}");
            }
            let kthread = between(&out, "<<KTHREAD", "KTHREAD>>");
            assert!(
                kthread.contains("pid 2 (kthreadd) is a kernel thread: it has no memory map"),
                "monitor maps 2 said: {kthread}"
            );
            let nopid = between(&out, "<<NOPID", "NOPID>>");
            assert!(nopid.contains("no task with pid 99999"), "monitor maps 99999 said: {nopid}");
            let noarg = between(&out, "<<NOARG", "NOARG>>");
            assert!(noarg.contains("'maps' needs a PID"), "monitor maps said: {noarg}");
            let (ok, _, err) = run(&["maps", "2", "--image", path]);
            assert!(!ok && err.contains("is a kernel thread: it has no memory map"), "{err}");
            let (ok, _, err) = run(&["maps", "99999", "--image", path]);
            assert!(!ok && err.contains("no task with pid 99999"), "{err}");
            checked += 1;
        }
    }
    if checked == 0 {
        eprintln!("SKIP: no fixture images");
    }
}

/// The data behind the text: the mm fields a core file needs agree with the VMAs, and the
/// saved auxv is the one the kernel gave the program.
#[test]
fn mm_fields_and_auxv_agree_with_the_vmas() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let truth = truth(&dir, "post-panic");
    let pid = truth["timekeeper"]["pid"].as_i64().expect("timekeeper pid") as i32;
    let image = unpacked(&dir, "post-panic.raw.zst");
    let mem = phys::open_file(&image, &OpenOptions::default()).expect("open the image");
    let mut space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
    let linux = Linux::new(discover(&mut space, Hints::default()).expect("discover"));
    let m = linux.maps(&mut space, pid).expect("maps");
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    assert_eq!(m.comm, "timekeeper");
    assert_eq!(m.cr3, hex(&truth["timekeeper"]["cr3"]));
    let find = |a: u64| m.vmas.iter().find(|v| v.start <= a && a < v.end);
    let heap = m.vmas.iter().find(|v| v.name.as_deref() == Some("[heap]")).expect("a heap");
    assert!(heap.start <= m.mm.brk && heap.end >= m.mm.start_brk);
    let stack = find(m.mm.start_stack).expect("start_stack in a VMA");
    assert_eq!(stack.name.as_deref(), Some("[stack]"));
    // The global and the stack variable the fixture recorded lie in the right VMAs.
    let global = find(hex(&truth["timekeeper"]["global_virt"])).expect("global in a VMA");
    assert_eq!(global.file.as_ref().map(|f| f.path.as_str()), Some("/bin/timekeeper"));
    assert!(global.flags & dmastub::linux::mm::VM_WRITE != 0);
    assert_eq!(
        find(hex(&truth["timekeeper"]["stack_virt"])).and_then(|v| v.name.clone()).as_deref(),
        Some("[stack]")
    );
    assert!(m.mm.start_code < m.mm.end_code && find(m.mm.start_code).is_some_and(|v| v.flags & 4 != 0));
    assert!(m.mm.arg_start < m.mm.arg_end && m.mm.arg_end <= m.mm.env_start && m.mm.env_start < m.mm.env_end);
    assert!(stack.start <= m.mm.arg_start && m.mm.env_end <= stack.end);
    // auxv: ends with AT_NULL, has AT_PAGESZ 4096, AT_ENTRY in the code, AT_SYSINFO_EHDR at [vdso].
    let auxv: std::collections::HashMap<u64, u64> = m.mm.saved_auxv.iter().copied().collect();
    assert_eq!(m.mm.saved_auxv.last(), Some(&(0, 0)));
    assert_eq!(auxv.get(&6), Some(&4096));
    assert!(auxv.get(&9).is_some_and(|&e| m.mm.start_code <= e && e < m.mm.end_code));
    let vdso = m.vmas.iter().find(|v| v.name.as_deref() == Some("[vdso]")).expect("vdso");
    assert_eq!(auxv.get(&33), Some(&vdso.start));
    // VMAs sorted and not overlapping.
    assert!(m.vmas.windows(2).all(|w| w[0].end <= w[1].start));
}
