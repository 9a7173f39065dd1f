//! `monitor maps` on a running machine: one real Linux guest under QEMU (the live suite's),
//! asked for every process's `/proc/PID/maps` over its control port, then paused and read from
//! its RAM file, through gdb (`serve --live`, `monitor maps PID` for every user process) and
//! the command line (`dmastub maps PID --live`): each must equal what the guest printed.
//!
//! The guest also runs a dynamically linked program (`tools/dynticker.c`, with the host's
//! dynamic linker and libc), whose map (over 16 VMAs) needs a maple tree of more than one node.
//! Attached to it (extended-remote `attach PID`), gdb lists both as shared libraries where the
//! guest mapped them, relocates the position-independent binary, reads its globals and unwinds
//! from the sleep in libc to `main`; and so does `gdb BINARY CORE` on its `dmastub gcore`.
//!
//! Skips with a message where QEMU is missing, unless `CI` or `DMASTUB_LIVE_REQUIRED` is set.

mod common;

use common::{BIN, gdb_with};
use dmastub_testkit::child::DmastubChild;
use dmastub_testkit::vm::{self, GuestOptions, LiveVm};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The dynamic program, built here, and the initramfs files that run it in the guest: the
/// binary and the host's own copies of the libraries it loads, at the host's paths (so that
/// gdb, with `set sysroot /`, reads their symbols from the very same files).
struct Dynamic {
    binary: PathBuf,
    files: Vec<(String, Vec<u8>)>,
}

fn dynamic_program() -> Dynamic {
    let dir = std::env::temp_dir().join(format!("dmastub-live-maps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    let binary = dir.join("dynticker");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/dynticker.c");
    let out =
        Command::new("gcc").args(["-O0", "-g", "-o"]).arg(&binary).arg(&source).output().expect("run gcc");
    assert!(out.status.success(), "gcc dynticker.c: {}", String::from_utf8_lossy(&out.stderr));
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd (libc-bin)");
    assert!(ldd.status.success(), "ldd dynticker: {}", String::from_utf8_lossy(&ldd.stderr));
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
    let libraries: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, p)| p.trim());
            path.split_whitespace().next().filter(|p| p.starts_with('/')).map(str::to_string)
        })
        .collect();
    assert!(
        libraries.len() >= 2,
        "ldd names no dynamic linker and libc: {}",
        String::from_utf8_lossy(&ldd.stdout)
    );
    let mut files = vec![("bin/dynticker".to_string(), std::fs::read(&binary).expect("read dynticker"))];
    for lib in &libraries {
        let data = std::fs::read(lib).unwrap_or_else(|e| panic!("read {lib}: {e}"));
        files.push((lib.trim_start_matches('/').to_string(), data));
    }
    Dynamic { binary, files }
}

fn boot(extra_files: Vec<(String, Vec<u8>)>) -> Option<LiveVm> {
    let opts = GuestOptions { cache: vm::guest::default_cache_dir(), extra_files, ..Default::default() };
    common::boot_live_guest("live maps", &opts)
}

/// The guest's answer to `maps`: each pid's lines (empty for kernel threads).
fn parse_guest(lines: &[String]) -> BTreeMap<i64, Vec<String>> {
    let mut map = BTreeMap::new();
    let mut cur: Option<i64> = None;
    for l in lines {
        if let Some(p) = l.strip_prefix("pid ") {
            cur = p.trim().parse().ok();
            if let Some(pid) = cur {
                map.insert(pid, Vec::new());
            }
            continue;
        }
        if let Some(v) = cur.and_then(|p| map.get_mut(&p)) {
            v.push(l.trim_end().to_string());
        }
    }
    map
}

fn trimmed(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim_end().to_string()).collect()
}

#[test]
fn maps_of_every_user_process_equal_the_guests_proc_maps_and_gdb_attaches_to_a_dynamic_one() {
    let dynamic = dynamic_program();
    let Some(mut vm) = boot(dynamic.files.clone()) else { return };
    // A request written before the guest's loop has opened its port is lost (a tty drops what
    // arrives while nobody has it open): asked again once after the read timeout.
    let answer = match vm.request("maps") {
        Ok(a) => a,
        Err(e) => {
            eprintln!("live maps: asking again: {e}");
            vm.request("maps").expect("the guest's maps")
        }
    };
    // Paused: what the guest printed stays what its memory holds (the reading `cat`s are gone;
    // the processes that stay do not change their maps while idle).
    vm.set_running(false).expect("pause the guest");
    let guest = parse_guest(&answer);
    let users: Vec<(i64, Vec<String>)> =
        guest.iter().filter(|(_, v)| !v.is_empty()).map(|(p, v)| (*p, v.clone())).collect();
    assert!(users.len() >= 3, "the guest listed only {} user processes:\n{answer:?}", users.len());
    let ram = vm.ram_path().display().to_string();
    let stub = DmastubChild::start(
        Path::new(BIN),
        &["serve".into(), "--live".into(), ram.clone(), "--listen".into(), "127.0.0.1:0".into()],
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = stub.port.expect("a port in the banner");
    let mut commands = Vec::new();
    for (pid, _) in &users {
        commands.push(format!("echo <<{pid}\\n"));
        commands.push(format!("monitor maps {pid}"));
        commands.push(format!("echo {pid}>>\\n"));
    }
    let refs: Vec<&str> = commands.iter().map(String::as_str).collect();
    let out = gdb_with(port, None, &refs, Duration::from_secs(600));
    let mut compared = 0;
    let mut differences = Vec::new();
    for (pid, want) in &users {
        let (from, to) = (format!("<<{pid}\n"), format!("{pid}>>"));
        let start = out.find(&from).map(|i| i + from.len()).unwrap_or_else(|| panic!("no {from} in:\n{out}"));
        let end = out[start..].find(&to).map(|i| start + i).unwrap_or_else(|| panic!("no {to} in:\n{out}"));
        let got = trimmed(&out[start..end]);
        // A process that ran the control loop's `cat` may be gone: only those that are not.
        if got.first().is_some_and(|l| l.contains("no task with pid")) {
            eprintln!("pid {pid}: exited before the guest was paused");
            continue;
        }
        if &got != want {
            differences.push(format!(
                "pid {pid}:\n  guest:\n    {}\n  dmastub:\n    {}",
                want.join("\n    "),
                got.join("\n    ")
            ));
        }
        compared += 1;
    }
    assert!(differences.is_empty(), "monitor maps differs from /proc/PID/maps:\n{}", differences.join("\n"));
    assert!(compared >= 3, "only {compared} processes compared");
    // The command line too, for the first and last process; and a kernel thread.
    for (pid, want) in [users.first(), users.last()].into_iter().flatten() {
        let out = std::process::Command::new(BIN)
            .args(["maps", &pid.to_string(), "--live", &ram])
            .output()
            .expect("run dmastub maps");
        assert!(out.status.success(), "dmastub maps {pid}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(&trimmed(&String::from_utf8_lossy(&out.stdout)), want, "dmastub maps {pid}");
    }
    let out = std::process::Command::new(BIN).args(["maps", "2", "--live", &ram]).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a kernel thread: it has no memory map"));
    eprintln!("live maps: {compared} processes equal the guest's /proc/PID/maps");
    // The dynamic program's map (its libraries, a maple tree of more than one node) was compared
    // with the rest; then gdb in its context.
    let (pid, maps) = users
        .iter()
        .find(|(_, lines)| lines.iter().any(|l| l.ends_with("/bin/dynticker")))
        .unwrap_or_else(|| panic!("the guest runs no dynticker:\n{answer:?}"));
    dynamic_process_in_gdb(port, *pid, maps, &dynamic.binary);
    dynamic_process_core(&ram, *pid, &dynamic.binary);
    vm.set_running(true).expect("resume the guest");
    if let Some(dir) = dynamic.binary.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// In the dynamic program's context (`monitor switch`, user registers), gdb with the binary
/// lists its libraries where the guest mapped them, reads its globals through the PIE
/// relocation and unwinds from libc's sleep to `main`.
fn dynamic_process_in_gdb(port: u16, pid: i64, maps: &[String], binary: &Path) {
    // After an attach gdb asks where its file was loaded (qOffsets: the process's load bias)
    // and for the libraries (qXfer:libraries:read: the process's link map): extended-remote's
    // `attach PID`, with the binary loaded first and the threads reporting user registers.
    let file = format!("file {}", binary.display());
    let extended = format!("target extended-remote 127.0.0.1:{port}");
    let attach = format!("attach {pid}");
    let commands = [
        "disconnect",
        "set sysroot /",
        &file,
        &extended,
        "monitor regs user",
        &attach,
        "info sharedlibrary",
        "bt",
        "p dyn_pid",
        "p/x dyn_magic",
    ];
    let out = gdb_with(port, None, &commands, Duration::from_secs(300));
    // Each library gdb lists: loaded with symbols, where the guest mapped that very file.
    let mapped = |path: &str, at: u64| {
        maps.iter().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let range = f.first().and_then(|r| r.split_once('-'));
            let (Some((lo, hi)), Some(last)) = (range, f.last()) else { return false };
            let (lo, hi) =
                (u64::from_str_radix(lo, 16).unwrap_or(0), u64::from_str_radix(hi, 16).unwrap_or(0));
            *last == path && (lo..hi).contains(&at)
        })
    };
    let mut libraries = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 4 && f[0].starts_with("0x") && f[2] == "Yes" {
            let from = u64::from_str_radix(f[0].trim_start_matches("0x"), 16).unwrap_or(0);
            assert!(
                mapped(f[3], from),
                "{} at {from:#x} is in no mapping of it:\n{}\n{out}",
                f[3],
                maps.join("\n")
            );
            libraries.push(f[3].to_string());
        }
    }
    assert!(
        libraries.iter().any(|l| l.contains("ld-linux")) && libraries.iter().any(|l| l.contains("libc.so")),
        "gdb did not load the dynamic linker and libc:\n{out}"
    );
    assert!(out.contains(&format!("= {pid}\n")), "dyn_pid is not {pid}:\n{out}");
    assert!(out.contains("= 0x64796e7469636b72"), "dyn_magic is wrong:\n{out}");
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    let names = frames.join("\n");
    assert!(
        names.contains("sleep") && frames.iter().any(|f| f.contains(" main ") && f.contains("dynticker.c:")),
        "bt does not go from libc's sleep to main in dynticker.c:\n{out}"
    );
    let listed: Vec<&str> = out.lines().filter(|l| l.contains(" Yes ") || l.starts_with("From ")).collect();
    eprintln!("live maps: pid {pid} dynticker in gdb:\n{}\n{}", listed.join("\n"), frames.join("\n"));
}

/// `dmastub gcore` of the dynamic program, opened by gdb with its binary: the libraries found
/// from the core's file mappings, its globals and the backtrace from libc's sleep to `main`.
fn dynamic_process_core(ram: &str, pid: i64, binary: &Path) {
    let core = binary.with_file_name("dynticker.core");
    let out = Command::new(BIN)
        .args(["gcore", "--live", ram, &pid.to_string(), "-o"])
        .arg(&core)
        .output()
        .expect("run dmastub gcore");
    assert!(out.status.success(), "dmastub gcore {pid}: {}", String::from_utf8_lossy(&out.stderr));
    let g = Command::new("gdb")
        .args(["-q", "-nx", "-batch", "-ex", "set sysroot /"])
        .arg(binary)
        .arg(&core)
        .args(["-ex", "info sharedlibrary", "-ex", "bt", "-ex", "p dyn_pid", "-ex", "p/x dyn_magic"])
        .output()
        .expect("run gdb");
    let out = format!("{}{}", String::from_utf8_lossy(&g.stdout), String::from_utf8_lossy(&g.stderr));
    let loaded = |name: &str| out.lines().any(|l| l.contains(" Yes ") && l.contains(name));
    assert!(loaded("ld-linux") && loaded("libc.so"), "gdb on the core did not load ld.so and libc:\n{out}");
    assert!(out.contains(&format!("= {pid}\n")), "dyn_pid in the core is not {pid}:\n{out}");
    assert!(out.contains("= 0x64796e7469636b72"), "dyn_magic in the core is wrong:\n{out}");
    let frames: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        frames.iter().any(|f| f.contains("sleep"))
            && frames.iter().any(|f| f.contains(" main ") && f.contains("dynticker.c:")),
        "the core's bt does not go from libc's sleep to main:\n{out}"
    );
    eprintln!("live maps: gcore of pid {pid}: gdb finds its libraries, globals and {} frames", frames.len());
}
