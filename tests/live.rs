//! The live end-to-end suite: one real Linux guest under QEMU (the demo's: the distribution's
//! kernel, busybox and the ticker), read while it runs and after it panics, through the RAM
//! file and through the NetTLP emulator, checked against what the guest says about itself
//! (its `ps`, `/proc/kallsyms`, the ticker's printed values). While it runs it is also dumped,
//! by `dmastub dump --live` and by QEMU's own kdump writer (`dump-guest-memory`), and dmastub
//! reads both dumps.
//!
//! Skips with a message where QEMU is missing, unless `CI` or `DMASTUB_LIVE_REQUIRED` is set:
//! then a guest that cannot boot fails the suite.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{BIN, live_required};
use dmastub_testkit::child::{DmastubChild, GdbSession};
use dmastub_testkit::vm::{self, GuestOptions, GuestReport, LiveVm};

const GDB_TIMEOUT: Duration = Duration::from_secs(120);

/// The guest, booted once for the whole suite; `None` (skip) only where that is allowed. The
/// fixture kernel when the full suite set it up (its DWARF vmlinux then lets crash read the
/// live dump); else the distribution's current kernel, as the demo boots.
fn boot() -> Option<LiveVm> {
    let kernel =
        std::env::var_os("DMASTUB_FIXTURE_KERNEL").map(std::path::PathBuf::from).filter(|p| p.is_file());
    let opts = GuestOptions { kernel, cache: vm::guest::default_cache_dir(), ..Default::default() };
    common::boot_live_guest("live suite", &opts)
}

/// A server over the guest's RAM: `serve --live FILE`, or the NetTLP emulator on the file
/// and `serve --nettlp`.
struct Reader {
    name: &'static str,
    _emulator: Option<DmastubChild>,
    stub: DmastubChild,
}

impl Reader {
    fn start(ram: &Path, nettlp: bool) -> Reader {
        let ram = ram.display().to_string();
        let exe = Path::new(BIN);
        let start = |args: Vec<String>| {
            DmastubChild::start(exe, &args, Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"))
        };
        if nettlp {
            let id = std::process::id();
            let (adapter, local) = (
                format!("127.79.{}.{}", (id >> 8) as u8, id as u8 | 1),
                format!("127.80.{}.{}", (id >> 8) as u8, id as u8 | 1),
            );
            let emulator = start(vec![
                "nettlp-emulator".into(),
                "--live".into(),
                ram,
                "--listen".into(),
                adapter.clone(),
            ]);
            let stub = start(vec![
                "serve".into(),
                "--nettlp".into(),
                adapter,
                "--nettlp-local".into(),
                local,
                "--listen".into(),
                "127.0.0.1:0".into(),
            ]);
            Reader { name: "NetTLP", _emulator: Some(emulator), stub }
        } else {
            let stub =
                start(vec!["serve".into(), "--live".into(), ram, "--listen".into(), "127.0.0.1:0".into()]);
            Reader { name: "RAM file", _emulator: None, stub }
        }
    }

    fn gdb(&self) -> GdbSession {
        let mut gdb = GdbSession::start(None).expect("start gdb");
        let port = self.stub.port.expect("serve's port");
        let out = gdb.run(&format!("target remote 127.0.0.1:{port}"), GDB_TIMEOUT).unwrap();
        assert!(out.contains("Remote debugging using"), "{}: gdb did not attach: {out}", self.name);
        gdb
    }
}

fn run(gdb: &mut GdbSession, command: &str) -> String {
    gdb.run(command, GDB_TIMEOUT).unwrap_or_else(|e| panic!("{command}: {e}"))
}

/// `x/gx ADDR`'s value.
fn read_u64(gdb: &mut GdbSession, addr: u64) -> u64 {
    let out = run(gdb, &format!("x/gx {addr:#x}"));
    out.rsplit(':')
        .next()
        .and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        .unwrap_or_else(|| panic!("no value at {addr:#x}: {out}"))
}

/// `monitor kernel`'s value for `key` (the second column).
fn kernel_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.strip_prefix(key).map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("monitor kernel has no '{key}': {out}"))
}

/// Discovery with no hints on memory that changes under it, checked against the guest's own
/// uname and /proc/kallsyms.
fn check_discovery(reader: &Reader, gdb: &mut GdbSession, truth: &GuestReport) {
    let out = run(gdb, "monitor kernel");
    assert_eq!(kernel_field(&out, "release"), truth.release, "{}: release", reader.name);
    for sym in ["_text", "init_task"] {
        let want = truth.symbol(sym).unwrap_or_else(|| panic!("the guest reported no {sym}"));
        assert_eq!(
            kernel_field(&out, sym),
            format!("{want:#x}"),
            "{}: {sym} against /proc/kallsyms",
            reader.name
        );
    }
    assert!(
        reader.stub.banner.contains(&truth.release),
        "{}: the banner names the kernel: {}",
        reader.name,
        reader.stub.banner
    );
}

/// `monitor ps` on the running machine against the guest's `ps` taken just before.
fn check_ps(reader: &Reader, gdb: &mut GdbSession, truth: &GuestReport) {
    let out = run(gdb, "monitor ps");
    compare_ps(reader.name, &out, truth);
}

/// A ps table of dmastub's (`monitor ps`, `dmastub ps`) against the guest's own `ps`.
fn compare_ps(name: &str, out: &str, truth: &GuestReport) {
    let ours: BTreeMap<u32, (u32, String)> = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                [pid, ppid, _state, comm, ..] => {
                    Some((pid.parse().ok()?, (ppid.parse().ok()?, comm.to_string())))
                }
                _ => None,
            }
        })
        .collect();
    // What lasts: init, the kernel threads, and init's ticker and sleepers. The report's own
    // pipeline (ps, sed, grep, busybox re-executing itself as "exe") is gone by now.
    let lasting: Vec<_> = truth
        .ps
        .iter()
        .filter(|p| p.pid <= 2 || p.ppid == 2 || ["ticker", "sleep"].contains(&p.comm.as_str()))
        .collect();
    let mut found = 0;
    for p in &lasting {
        match ours.get(&p.pid) {
            Some((ppid, comm)) => {
                // procps and busybox show a kworker's current work after its comm ("-events").
                let same_comm = *comm == p.comm
                    || (comm.starts_with("kworker") && p.comm.starts_with(&format!("{comm}-")));
                assert!(
                    *ppid == p.ppid && same_comm,
                    "{}: pid {}: its ps says ppid {ppid} comm {comm}, the guest {p:?}",
                    name,
                    p.pid
                );
                found += 1;
            }
            // Short-lived kernel workers may come and go between the two listings.
            None => assert!(
                p.comm.starts_with("kworker"),
                "{}: pid {} ({}) missing from its ps:\n{out}",
                name,
                p.pid,
                p.comm
            ),
        }
    }
    assert!(
        found * 10 >= lasting.len() * 9,
        "{}: only {found} of {} guest processes found",
        name,
        lasting.len()
    );
    assert!(ours.contains_key(&truth.ticker_pid), "{}: the ticker is listed", name);
}

/// No stale data: the ticker's counter read twice differs while the guest runs, within one
/// stop and across one, and never lags behind what the guest printed before the read; while
/// QEMU pauses the guest it does not change.
fn check_fresh_reads(reader: &Reader, gdb: &mut GdbSession, vm: &mut LiveVm, addr: u64) {
    run(gdb, &format!("monitor switch {}", vm.report.ticker_pid));
    let printed_before = vm.ticker_values().last().copied().unwrap_or(0);
    let first = read_u64(gdb, addr);
    assert!(
        first >= printed_before,
        "{}: read {first}, but the guest had printed {printed_before} already",
        reader.name
    );
    std::thread::sleep(Duration::from_millis(1200));
    let same_stop = read_u64(gdb, addr);
    assert!(
        same_stop > first,
        "{}: within one stop the counter stayed {first} while the guest ran",
        reader.name
    );
    let cont = run(gdb, "continue");
    assert!(cont.contains("cannot be continued"), "{}: continue: {cont}", reader.name);
    std::thread::sleep(Duration::from_millis(1200));
    let printed = vm.ticker_values().last().copied().unwrap_or(0);
    let after_stop = read_u64(gdb, addr);
    assert!(
        after_stop > same_stop && after_stop >= printed,
        "{}: across a stop: {same_stop} then {after_stop} (guest printed {printed})",
        reader.name
    );

    vm.set_running(false).expect("QMP stop");
    let paused = read_u64(gdb, addr);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(read_u64(gdb, addr), paused, "{}: the counter moved while QEMU paused the guest", reader.name);
    vm.set_running(true).expect("QMP cont");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        read_u64(gdb, addr) > paused,
        "{}: the counter did not move after QEMU resumed the guest",
        reader.name
    );
}

/// `dmastub kernel` and `dmastub ps` on the vmcore `path` name the guest's release and list its
/// processes.
fn check_vmcore(tag: &str, path: &Path, truth: &GuestReport) {
    let cmd = |verb: &str| {
        let out = std::process::Command::new(BIN).args([verb, "--image"]).arg(path).output().unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{tag}: dmastub {verb} --image {}: {stderr}", path.display());
        stdout
    };
    let kernel = cmd("kernel");
    assert!(
        kernel.contains(&truth.release),
        "{tag}: dmastub kernel does not name {}:\n{kernel}",
        truth.release
    );
    compare_ps(tag, &cmd("ps"), truth);
}

/// The DWARF vmlinux of `DMASTUB_DWARF_VMLINUX` if it is the build of `release` (its banner
/// names it) and crash is installed: what crash needs to open a dump of the guest.
fn crash_vmlinux_for(release: &str) -> Result<std::path::PathBuf, String> {
    let vmlinux = common::dwarf_vmlinux().ok_or("DMASTUB_DWARF_VMLINUX is not set")?;
    if !std::process::Command::new("crash").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Err("crash is not installed".into());
    }
    let file = std::fs::File::open(&vmlinux).map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    // SAFETY: a read-only map of a file nobody changes while the test runs.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", vmlinux.display()))?;
    let banner = format!("Linux version {release} (");
    let found = map.windows(banner.len()).any(|w| w == banner.as_bytes());
    if found {
        Ok(vmlinux)
    } else {
        Err(format!("{} is not the guest's kernel {release}", vmlinux.display()))
    }
}

/// crash opens `path` with `vmlinux`: `sys` names the release and a task list walked from
/// init_task holds the ticker.
fn check_crash(tag: &str, path: &Path, vmlinux: &Path, truth: &GuestReport) {
    use std::io::Write;
    let mut child = std::process::Command::new("crash")
        .arg("-s")
        .arg(vmlinux)
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run crash");
    let cmds = "sys\nlist task_struct.tasks -h init_task -s task_struct.comm\nquit\n";
    child.stdin.take().unwrap().write_all(cmds.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&truth.release), "{tag}: crash does not name {}:\n{said}", truth.release);
    // crash prints the whole char array, its NULs as \000 or '\000' <repeats N times>.
    let ticker = ["comm = \"ticker\"", "comm = \"ticker\\000"].iter().any(|c| said.contains(c));
    assert!(ticker, "{tag}: crash's task list lacks the ticker:\n{said}");
}

/// Dumps of the running guest: `dmastub dump --live` of its RAM file (-d 31, zlib), and QEMU's
/// own kdump writer (`dump-guest-memory`, kdump-zlib and, where this QEMU has it, kdump-lzo;
/// QEMU 7.2 writes a garbage phys_base and bitmaps sized from its RAM layout). dmastub reads
/// each with the guest's release and processes; crash opens dmastub's when the DWARF vmlinux
/// is the guest's kernel. The guest runs on afterwards, as the other checks expect.
fn check_dumps(vm: &mut LiveVm, ram: &Path) {
    let scratch = common::Scratch::new("live-dumps");
    let truth = vm.fresh_report().expect("the guest's report");

    let ours = scratch.0.join("live-d31.kdump");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(BIN)
        .args(["dump", "-q", "--live"])
        .arg(ram)
        .args(["--dump-level", "31", "--compress", "zlib", "-o"])
        .arg(&ours)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dmastub dump --live: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "live: dmastub dump --live -d 31: {} bytes in {:.1} s",
        std::fs::metadata(&ours).unwrap().len(),
        started.elapsed().as_secs_f64()
    );
    check_vmcore("dmastub dump --live", &ours, &truth);
    match crash_vmlinux_for(&truth.release) {
        Ok(vmlinux) => check_crash("dmastub dump --live", &ours, &vmlinux, &truth),
        Err(why) => eprintln!("SKIP: crash on the live dump: {why}"),
    }

    let caps = vm.qmp("query-dump-guest-memory-capability", None).expect("QMP dump capabilities");
    assert!(caps.contains("\"kdump-zlib\""), "QEMU cannot write kdump-zlib: {caps}");
    for format in ["kdump-zlib", "kdump-lzo"] {
        if !caps.contains(&format!("\"{format}\"")) {
            eprintln!("SKIP: QEMU's dump-guest-memory has no {format}: {caps}");
            continue;
        }
        let truth = vm.fresh_report().expect("the guest's report");
        let file = scratch.0.join(format!("qemu.{format}"));
        let args = format!(r#"{{"paging":false,"protocol":"file:{}","format":"{format}"}}"#, file.display());
        let started = std::time::Instant::now();
        // QEMU pauses the guest while it dumps and resumes it once the file is written, before
        // it answers (no "detach").
        vm.qmp("dump-guest-memory", Some(&args))
            .unwrap_or_else(|e| panic!("dump-guest-memory {format}: {e}"));
        let status = vm.qmp("query-status", None).expect("QMP query-status");
        assert!(status.contains("\"running\""), "the guest is not running after the dump: {status}");
        // QEMU before 8.2 writes the flattened form of a kdump file (makedumpfile -F's).
        let head = std::fs::read(&file).map(|d| d[..16].to_vec()).unwrap_or_default();
        let layout = match &head[..] {
            [b'K', b'D', b'U', b'M', b'P', b' ', b' ', b' ', ..] => "kdump-compressed",
            b"makedumpfile\0\0\0\0" => "flattened",
            _ => panic!("QEMU's {format} file is neither kdump-compressed nor flattened: {head:02x?}"),
        };
        eprintln!(
            "live: QEMU dump-guest-memory {format} ({layout}): {} bytes in {:.1} s",
            std::fs::metadata(&file).unwrap().len(),
            started.elapsed().as_secs_f64()
        );
        check_vmcore(&format!("QEMU {format}"), &file, &truth);
        std::fs::remove_file(&file).unwrap();
    }
}

/// After the panic: the message in `monitor dmesg`, the counter frozen, the crasher listed as
/// the panicking task.
/// Each vCPU's (rip, rsp, halted) as QEMU's monitor prints them (`info registers -a`).
fn qemu_vcpus(vm: &mut LiveVm) -> Vec<(u64, u64, bool)> {
    let reply = vm
        .qmp("human-monitor-command", Some(r#"{"command-line":"info registers -a"}"#))
        .expect("QEMU's info registers");
    // The reply is JSON with the text's newlines escaped.
    let text = reply.replace("\\r", "").replace("\\n", "\n");
    let field = |block: &str, name: &str| {
        block
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|v| u64::from_str_radix(&v[..16.min(v.len())], 16).ok())
    };
    text.split("CPU#")
        .skip(1)
        .filter_map(|b| Some((field(b, "RIP")?, field(b, "RSP")?, b.contains("HLT=1"))))
        .collect()
}

/// Every CPU the panic stopped: the registers dmastub rebuilds from memory are the ones QEMU
/// holds for the halted vCPU, and `monitor bt -a` goes through the stop interrupt.
fn check_stopped_cpus(reader: &Reader, gdb: &mut GdbSession, vcpus: &[(u64, u64, bool)]) {
    let threads = run(gdb, "monitor threads");
    let all = run(gdb, "monitor bt -a");
    for (cpu, &(rip, rsp, halted)) in vcpus.iter().enumerate() {
        let mark = format!("[cpu{cpu}");
        let Some(line) = threads.lines().find(|l| l.contains(&mark) && l.contains("stopped in")) else {
            // The panicking CPU spins in panic(), and is not halted.
            assert!(!halted, "{}: halted cpu{cpu} has no stopped task:\n{threads}", reader.name);
            continue;
        };
        let cols: Vec<&str> = line.split_whitespace().collect();
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        assert_eq!(
            (hex(cols[3]), hex(cols[4])),
            (Some(rip), Some(rsp)),
            "{}: cpu{cpu}'s rebuilt rip and rsp are not QEMU's ({rip:#x}, {rsp:#x}): {line}",
            reader.name
        );
        let section = all.split(&format!("CPU {cpu}:")).nth(1).unwrap_or("");
        let section = section.split("\nCPU ").next().unwrap_or(section);
        assert!(
            section.contains("stop_this_cpu+") && section.contains("--- interrupt/exception entry"),
            "{}: monitor bt -a on cpu{cpu}:\n{section}",
            reader.name
        );
    }
}

fn check_after_panic(reader: &Reader, gdb: &mut GdbSession, vm: &LiveVm, addr: u64, crasher: u32) {
    let dmesg = run(gdb, "monitor dmesg 60");
    assert!(
        dmesg.contains("Kernel panic - not syncing: sysrq triggered crash"),
        "{}: dmesg: {dmesg}",
        reader.name
    );
    run(gdb, &format!("monitor switch {}", vm.report.ticker_pid));
    let frozen = read_u64(gdb, addr);
    let printed = vm.ticker_values().last().copied().unwrap_or(0);
    assert!(frozen >= printed, "{}: frozen at {frozen}, below the last printed {printed}", reader.name);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(read_u64(gdb, addr), frozen, "{}: the counter moved after the panic", reader.name);
    let threads = run(gdb, "monitor threads");
    let line = threads
        .lines()
        .find(|l| l.contains("crasher"))
        .unwrap_or_else(|| panic!("{}: no crasher thread:\n{threads}", reader.name));
    // Columns: gdb thread id, pid, comm, rip, rsp, marks, where the registers came from.
    let pid = line.split_whitespace().nth(1);
    assert!(
        pid == Some(&crasher.to_string()) && line.contains("panicking"),
        "{}: crasher {crasher}: {line}",
        reader.name
    );
}

#[test]
fn a_live_guest_read_while_it_runs_and_after_it_panics() {
    let Some(mut vm) = boot() else { return };
    let ram = vm.ram_path().to_path_buf();
    let addr = vm.ticker_address().expect("the ticker printed its address");
    let readers = [Reader::start(&ram, false), Reader::start(&ram, true)];
    let mut sessions = Vec::new();
    for reader in &readers {
        let truth = vm.fresh_report().expect("the guest's report");
        let mut gdb = reader.gdb();
        check_discovery(reader, &mut gdb, &truth);
        check_ps(reader, &mut gdb, &truth);
        check_fresh_reads(reader, &mut gdb, &mut vm, addr);
        sessions.push(gdb);
    }
    check_dumps(&mut vm, &ram);
    let crasher = vm.panic(Duration::from_secs(120)).expect("the guest panics");
    let vcpus = qemu_vcpus(&mut vm);
    assert!(vcpus.len() >= 2, "QEMU's info registers -a: {vcpus:?}");
    for (reader, gdb) in readers.iter().zip(sessions.iter_mut()) {
        check_after_panic(reader, gdb, &vm, addr, crasher);
        check_stopped_cpus(reader, gdb, &vcpus);
    }
    // The command-line tools see the same frozen machine.
    let out = std::process::Command::new(BIN)
        .args(["dmesg", "--live"])
        .arg(&ram)
        .args(["-n", "80"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Kernel panic - not syncing"),
        "dmastub dmesg --live"
    );
}

/// The README's first command, in its NetTLP variant (CI's acceptance runs the default one),
/// with its default panic, an NMI from QEMU's monitor:
/// it must finish on its own, checked claims and all, and leave no VM or RAM file behind.
#[test]
fn the_vm_demo_runs_through_the_nettlp_emulator() {
    if !vm::missing_packages().is_empty() && !live_required() {
        eprintln!("SKIP: the VM demo: missing {:?}", vm::missing_packages());
        return;
    }
    let child = std::process::Command::new(BIN)
        .args(["demo", "--vm", "--nettlp"])
        .env("CI", "true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dmastub demo --vm --nettlp");
    let demo_pid = child.id();
    let out = child.wait_with_output().expect("wait for the demo");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "dmastub demo --vm --nettlp failed:\n{text}");
    // By default the demo panics the guest with an NMI from QEMU's monitor: the backtrace
    // starts on the CPU's NMI stack and crosses the NMI entry into what it interrupted.
    for needle in [
        "nettlp-emulator: serving live RAM file",
        "Kernel panic - not syncing: NMI: Not continuing",
        "at its cpu's exception stacks slot",
        "panic+0x",
        "exc_nmi+0x",
        "--- interrupt/",
        "Its VM and RAM file are gone",
    ] {
        assert!(text.contains(needle), "the demo's output lacks {needle:?}:\n{text}");
    }
    let prefix = format!("dmastub-vm-{demo_pid}-");
    for dir in [Path::new("/dev/shm").to_path_buf(), std::env::temp_dir()] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .collect();
        assert!(left.is_empty(), "the demo left {left:?} in {}", dir.display());
    }
}

/// Without QEMU and without a terminal to ask on, the demo installs nothing and says exactly
/// what to install.
#[test]
fn the_vm_demo_says_what_to_install_when_it_cannot_ask() {
    let bin_dir = std::env::temp_dir().join(format!("dmastub-no-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&bin_dir).unwrap();
    // A PATH with gdb and gcc but no qemu-system-x86_64.
    for tool in ["gdb", "gcc", "sh"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(tool))
            .find(|p| p.is_file());
        if let Some(path) = found {
            let _ = std::os::unix::fs::symlink(path, bin_dir.join(tool));
        }
    }
    let out = std::process::Command::new(BIN)
        .args(["demo", "--vm"])
        .env_remove("CI")
        .env("PATH", &bin_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run dmastub demo --vm");
    let _ = std::fs::remove_dir_all(&bin_dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the demo went on without QEMU: {err}");
    assert!(err.contains("qemu-system-x86"), "the demo did not name the missing package: {err}");
    let apt = Path::new("/usr/bin/apt-get").exists();
    assert!(
        if apt {
            err.contains("apt-get install -y") && err.contains("--yes")
        } else {
            err.contains("install qemu-system-x86_64")
        },
        "the demo did not say how to install it: {err}"
    );
}
