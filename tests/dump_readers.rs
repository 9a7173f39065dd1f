//! The readers people use open what `dmastub dump` writes: crash 8.0.2 (Debian's `crash`) and
//! drgn (PyPI), with the kernel's DWARF vmlinux, agree with the fixture's truth on the kernel
//! release, the task list and the panic message, for every compression, levels 0 and 31, ELF
//! and kdump, from a file and over the NetTLP emulator.
//!
//! Needs crash, drgn on PATH and `DMASTUB_DWARF_VMLINUX` (`eval "$(tools/setup-full-tests.sh)"`,
//! `apt-get install crash`). Without them the tests skip, saying so, unless
//! `DMASTUB_READERS_REQUIRED=1` (CI), which makes a missing reader a failure.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PANIC: &str = "Kernel panic - not syncing";

/// The DWARF vmlinux, with crash and drgn installed; `None` (after saying why) when missing.
fn readers() -> Option<PathBuf> {
    let required = std::env::var_os("DMASTUB_READERS_REQUIRED").is_some_and(|v| v == "1");
    let crash = Command::new("crash").arg("--version").output().is_ok_and(|o| o.status.success());
    let missing = match (dwarf_vmlinux(), crash, have_drgn()) {
        (Some(v), true, true) => return Some(v),
        (None, _, _) => "DMASTUB_DWARF_VMLINUX (eval \"$(tools/setup-full-tests.sh)\")",
        (_, false, _) => "crash (apt-get install crash)",
        (_, _, false) => "drgn on PATH (eval \"$(tools/setup-full-tests.sh)\")",
    };
    assert!(!required, "DMASTUB_READERS_REQUIRED=1 but {missing} is missing");
    eprintln!("SKIP: {missing} is missing");
    None
}

/// What crash says of `core`: `sys`, `log`, and the task list walked from init_task (crash
/// 8.0.2's `ps` misses most tasks of a 6.1 kernel).
fn crash(core: &Path, vmlinux: &Path) -> String {
    use std::io::Write;
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

fn check(tag: &str, core: &Path, vmlinux: &Path, t: &serde_json::Value) {
    let release = t["kernel"]["release"].as_str().unwrap();
    let want: Vec<&str> =
        t["processes"].as_array().unwrap().iter().map(|p| p["comm"].as_str().unwrap()).collect();

    let out = drgn_command(core, vmlinux, DRGN_PS).output().expect("run drgn");
    let text = String::from_utf8_lossy(&out.stdout);
    let comms: Vec<&str> = text.lines().filter_map(|l| l.splitn(3, ' ').nth(2)).collect();
    assert!(
        out.status.success()
            && want.iter().all(|c| comms.contains(c))
            && comms.len().abs_diff(want.len()) <= 1,
        "{tag}: drgn lists {} tasks, the truth {}:\n{text}{}",
        comms.len(),
        want.len(),
        String::from_utf8_lossy(&out.stderr)
    );

    let said = crash(core, vmlinux);
    // `comm = "init\000\000…"`: the name up to its first escape or quote.
    let listed: Vec<&str> =
        said.lines().filter_map(|l| l.trim().strip_prefix("comm = \"")?.split(['\\', '"']).next()).collect();
    assert!(said.contains(release), "{tag}: crash does not name {release}:\n{said}");
    assert!(said.contains(PANIC), "{tag}: crash shows no panic:\n{said}");
    assert_eq!(
        listed.len(),
        want.len() + 1,
        "{tag}: crash's task list (init_task and the truth's tasks):\n{said}"
    );
    assert!(want.iter().all(|c| listed.contains(c)), "{tag}: crash misses tasks: {listed:?}");
}

fn dump(args: &[&str], out: &Path) {
    let mut full = vec!["dump", "-q"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let (ok, stdout, stderr) = run(&full);
    assert!(ok, "dmastub {}:\n{stdout}{stderr}", full.join(" "));
}

/// Writes each dump, then has both readers check them, two at a time (crash spends half a
/// minute reading the DWARF vmlinux).
fn check_all(name: &str, dumps: &[(&str, Vec<&str>)]) {
    let Some(vmlinux) = readers() else { return };
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let t = truth(&dir, "post-panic");
    let scratch = Scratch::new(name);
    let mut files = Vec::new();
    for (tag, args) in dumps {
        let out = scratch.0.join(tag.replace(' ', "-"));
        dump(args, &out);
        files.push((tag.to_string(), out));
    }
    for pair in files.chunks(2) {
        std::thread::scope(|s| {
            for (tag, path) in pair {
                let (vmlinux, t) = (&vmlinux, &t);
                s.spawn(move || check(tag, path, vmlinux, t));
            }
        });
    }
}

#[test]
fn crash_and_drgn_open_kdump_files_in_every_compression() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let elf = unpacked(&dir, "post-panic.elf.zst");
    let e = elf.to_str().unwrap();
    check_all(
        "readers-kdump",
        &[
            ("kdump d31 zlib", vec!["--image", e, "--compress", "zlib"]),
            ("kdump d31 lzo", vec!["--image", e, "--compress", "lzo"]),
            ("kdump d31 snappy", vec!["--image", e, "--compress", "snappy"]),
            ("kdump d31 zstd", vec!["--image", e, "--compress", "zstd"]),
            ("kdump d31 none", vec!["--image", e, "--compress", "none"]),
            ("kdump d0 zstd", vec!["--image", e, "--compress", "zstd", "--dump-level", "0"]),
        ],
    );
}

#[test]
fn crash_and_drgn_open_elf_dumps_of_a_raw_image() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let r = raw.to_str().unwrap();
    // A raw image carries no notes: VMCOREINFO and the registers come from the kernel in it.
    check_all(
        "readers-elf",
        &[
            ("elf d0 raw", vec!["--image", r, "--format", "elf", "--dump-level", "0"]),
            ("elf d31 raw", vec!["--image", r, "--format", "elf", "--dump-level", "31"]),
            ("kdump d31 raw", vec!["--image", r]),
        ],
    );
}

#[test]
fn crash_and_drgn_open_a_dump_taken_over_the_nettlp_emulator() {
    let Some(dir) = fixture_dir(BASE_FIXTURE) else { return };
    if readers().is_none() {
        return;
    }
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let _emu = Emulator::start(raw.to_str().unwrap(), "127.0.42.2");
    let args = vec!["--nettlp", "127.0.42.2", "--nettlp-local", "127.0.42.1"];
    let mut elf = args.clone();
    elf.extend(["--format", "elf"]);
    check_all("readers-nettlp", &[("nettlp kdump d31 zlib", args), ("nettlp elf d31", elf)]);
}
