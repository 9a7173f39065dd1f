//! crash opens a dump of a live machine (issue 15): the demo's guest, booted with the fixture
//! kernel (Debian's 6.1.0-56, whose DWARF vmlinux the full suite has), is dumped while it runs
//! by `dmastub dump --live` (kdump-compressed at the defaults, -d 31 zlib, and `--format elf`),
//! and crash 8.0.2 opens each file with that vmlinux: `sys` and `log` name the guest's release,
//! and the task list walked from `init_task` holds the guest's processes as its own `ps` reports
//! them just before the dump.
//!
//! A file of its own rather than a second guest in `tests/live.rs`: that suite boots the
//! distribution's current kernel (the demo's), which no DWARF vmlinux here describes; this one
//! needs the fixture kernel, so a guest of its own, and the full suite's files besides
//! (`eval "$(tools/setup-full-tests.sh)"`: `DMASTUB_DWARF_VMLINUX`, `DMASTUB_FIXTURE_KERNEL`).
//! Test binaries run one after the other, so the two guests never share the two cores.
//!
//! Skips with "SKIP: ..." where QEMU, crash, the DWARF vmlinux or the fixture kernel is
//! missing; under `CI` or `DMASTUB_LIVE_REQUIRED=1` a missing QEMU fails, under
//! `DMASTUB_READERS_REQUIRED=1` a missing crash, vmlinux or kernel image fails.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{BIN, Scratch, dwarf_vmlinux, live_required};
use dmastub_testkit::vm::{self, GuestOptions, GuestProcess, GuestReport, LiveVm};

/// As `tests/dump_readers.rs`: a missing reader is a failure, not a skip.
fn readers_required() -> bool {
    std::env::var_os("DMASTUB_READERS_REQUIRED").is_some_and(|v| v == "1")
}

/// The kernel version string of a bzImage (its setup header's `kernel_version`), up to the
/// first space: the release it boots as.
fn bzimage_release(image: &Path) -> Result<String, String> {
    let data = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    if data.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return Err(format!("{} is not a bzImage (no HdrS)", image.display()));
    }
    let at = u16::from_le_bytes([data[0x20e], data[0x20f]]) as usize + 0x200;
    let text = data.get(at..).unwrap_or_default();
    let text = &text[..text.iter().position(|&b| b == 0 || b == b' ').unwrap_or(text.len())];
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// Whether the vmlinux holds the banner of `release`.
fn vmlinux_is(vmlinux: &Path, release: &str) -> Result<bool, String> {
    let file = std::fs::File::open(vmlinux).map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    // SAFETY: a read-only map of a file nobody changes while the test runs.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    let banner = format!("Linux version {release} (");
    Ok(map.windows(banner.len()).any(|w| w == banner.as_bytes()))
}

/// The DWARF vmlinux and the fixture kernel's bzImage, both of the same release, with crash
/// installed; `None` (after saying why) where one is missing and that is allowed.
fn readers() -> Option<(PathBuf, PathBuf)> {
    let crash = Command::new("crash").arg("--version").output().is_ok_and(|o| o.status.success());
    let kernel = std::env::var_os("DMASTUB_FIXTURE_KERNEL").map(PathBuf::from).filter(|p| p.is_file());
    let missing = match (crash, dwarf_vmlinux(), kernel) {
        (true, Some(v), Some(k)) => {
            // Both come from the setup script; a pair of different kernels is a set-up error.
            let release = bzimage_release(&k).unwrap_or_else(|e| panic!("DMASTUB_FIXTURE_KERNEL: {e}"));
            let same = vmlinux_is(&v, &release).unwrap_or_else(|e| panic!("DMASTUB_DWARF_VMLINUX: {e}"));
            assert!(
                same,
                "DMASTUB_DWARF_VMLINUX ({}) is not the build of DMASTUB_FIXTURE_KERNEL ({}, {release})",
                v.display(),
                k.display()
            );
            return Some((v, k));
        }
        (false, _, _) => "crash (apt-get install crash)",
        (_, None, _) => "DMASTUB_DWARF_VMLINUX (eval \"$(tools/setup-full-tests.sh)\")",
        (_, _, None) => "DMASTUB_FIXTURE_KERNEL (eval \"$(tools/setup-full-tests.sh)\")",
    };
    assert!(!readers_required(), "DMASTUB_READERS_REQUIRED=1 but {missing} is missing");
    eprintln!("SKIP: crash on a live dump: {missing} is missing");
    None
}

/// Whether QEMU (and what the guest is built with) is here; `false` (after saying so) only where
/// a skip is allowed. Asked before the readers, so that a missing QEMU fails under
/// `DMASTUB_LIVE_REQUIRED=1` whatever else is missing.
fn qemu_here() -> bool {
    let missing = vm::missing_packages();
    if !missing.is_empty() {
        assert!(
            !live_required(),
            "the live suite must run here, but these packages are missing: {missing:?}"
        );
        eprintln!(
            "SKIP: crash on a live dump: missing {missing:?} (apt-get install qemu-system-x86 gcc libc6-dev)"
        );
        return false;
    }
    true
}

fn boot(kernel: &Path) -> Option<LiveVm> {
    let opts = GuestOptions {
        kernel: Some(kernel.to_path_buf()),
        cache: vm::guest::default_cache_dir(),
        ..Default::default()
    };
    common::boot_live_guest("live-dump", &opts)
}

/// `dmastub dump --live RAM -q [extra] -o out`, timed.
fn dump(ram: &Path, extra: &[&str], out: &Path) {
    let started = Instant::now();
    let res = Command::new(BIN)
        .args(["dump", "--live"])
        .arg(ram)
        .arg("-q")
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run dmastub dump");
    assert!(
        res.status.success(),
        "dmastub dump --live {extra:?}: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    eprintln!(
        "live-dump: dmastub dump --live {}: {} bytes in {:.1} s",
        if extra.is_empty() { "(defaults: kdump, -d 31, zlib)".to_string() } else { extra.join(" ") },
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
}

/// What crash says of `core`: `sys`, `log`, and the task list walked from init_task (crash
/// 8.0.2's `ps` misses most tasks of a 6.1 kernel), stdout and stderr together.
fn crash(core: &Path, vmlinux: &Path) -> String {
    let mut child = Command::new("crash")
        .arg("-s")
        .arg(vmlinux)
        .arg(core)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run crash");
    let cmds = "sys\nlog\nlist task_struct.tasks -h init_task -s task_struct.comm\nquit\n";
    child.stdin.take().unwrap().write_all(cmds.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The guest's processes that outlast its report: init, kthreadd and the kernel threads, the
/// ticker and the sleepers (the report's own pipeline is gone by the time of the dump).
fn lasting(truth: &GuestReport) -> Vec<&GuestProcess> {
    truth
        .ps
        .iter()
        .filter(|p| p.pid <= 2 || p.ppid == 2 || ["ticker", "sleep"].contains(&p.comm.as_str()))
        .collect()
}

/// crash on `core`: it names the guest's release (`sys`'s RELEASE and the boot banner in
/// `log`), and its task list holds the guest's processes.
fn check_crash(tag: &str, core: &Path, vmlinux: &Path, truth: &GuestReport) {
    let started = Instant::now();
    let said = crash(core, vmlinux);
    eprintln!("live-dump: {tag}: crash done in {:.1} s", started.elapsed().as_secs_f64());
    // A running kernel's dump may draw warnings (no panic task, CPUs caught mid-work): shown,
    // not failed on, as long as crash opens the file and the checks below pass.
    for l in said.lines().filter(|l| l.contains("WARNING") || l.starts_with("crash:")) {
        eprintln!("live-dump: {tag}: crash says: {l}");
    }
    for l in said.lines().filter(|l| {
        ["RELEASE:", "PANIC:", "CPUS:", "TASKS:", "DUMPFILE:"].iter().any(|k| l.trim_start().starts_with(k))
    }) {
        eprintln!("live-dump: {tag}: sys: {}", l.trim());
    }
    let release_line = said.lines().find_map(|l| l.trim().strip_prefix("RELEASE:")).map(str::trim);
    assert_eq!(release_line, Some(truth.release.as_str()), "{tag}: crash's sys:\n{said}");
    assert!(
        said.contains(&format!("Linux version {} (", truth.release)),
        "{tag}: crash's log has no boot banner of {}:\n{said}",
        truth.release
    );
    // `comm = "init\000\000…"`: the name up to its first escape or quote.
    let listed: BTreeSet<&str> =
        said.lines().filter_map(|l| l.trim().strip_prefix("comm = \"")?.split(['\\', '"']).next()).collect();
    for comm in ["swapper/0", "init", "kthreadd", "ticker", "sleep"] {
        assert!(listed.contains(comm), "{tag}: crash's task list lacks {comm}: {listed:?}\n{said}");
    }
    let lasting = lasting(truth);
    let mut missing = Vec::new();
    for p in &lasting {
        // procps and busybox show a kworker's current work after its comm ("-events").
        let found = listed.contains(p.comm.as_str())
            || (p.comm.starts_with("kworker")
                && listed.iter().any(|c| p.comm.strip_prefix(c).is_some_and(|rest| rest.starts_with('-'))));
        if !found {
            // Short-lived kernel workers may come and go between the report and the dump.
            assert!(
                p.comm.starts_with("kworker"),
                "{tag}: {p:?} is not in crash's task list: {listed:?}\n{said}"
            );
            missing.push(p.comm.as_str());
        }
    }
    assert!(
        missing.len() * 10 <= lasting.len(),
        "{tag}: {} of the guest's {} lasting processes missing from crash's task list: {missing:?}\n{said}",
        missing.len(),
        lasting.len()
    );
    eprintln!(
        "live-dump: {tag}: crash names {} and lists {} distinct comms; {} of the guest's {} lasting processes found",
        truth.release,
        listed.len(),
        lasting.len() - missing.len(),
        lasting.len()
    );
}

#[test]
fn crash_opens_a_dump_of_the_live_guest() {
    if !qemu_here() {
        return;
    }
    let Some((vmlinux, kernel)) = readers() else { return };
    let Some(mut vm) = boot(&kernel) else { return };
    let ram = vm.ram_path().to_path_buf();
    let scratch = Scratch::new("live-dump");
    let kdump = scratch.0.join("live.kdump");
    let elf = scratch.0.join("live.elf");

    // What the guest said of itself when it was ready: its lasting processes are all there
    // still. (Asking again over its control port is slow under TCG on a busy machine: a CI run
    // saw no answer within the port's 60 s.)
    let truth = vm.report.clone();
    assert!(
        vmlinux_is(&vmlinux, &truth.release).unwrap(),
        "the guest runs {}, which {} is not",
        truth.release,
        vmlinux.display()
    );
    assert!(truth.ps.iter().any(|p| p.pid == truth.ticker_pid), "the guest's ps lacks its ticker");
    dump(&ram, &[], &kdump);
    let truth_elf = vm.report.clone();
    dump(&ram, &["--format", "elf"], &elf);
    let status = vm.qmp("query-status", None).expect("QMP query-status");
    assert!(status.contains("\"running\""), "the guest is not running after the dumps: {status}");

    // The guest is no longer needed: crash reads the files alone, two at once (it spends most
    // of its time reading the DWARF vmlinux).
    drop(vm);
    std::thread::scope(|s| {
        s.spawn(|| check_crash("kdump -d 31 zlib", &kdump, &vmlinux, &truth));
        s.spawn(|| check_crash("ELF", &elf, &vmlinux, &truth_elf));
    });
}
