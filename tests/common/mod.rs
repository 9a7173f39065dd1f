//! Helpers for the integration tests: the real `dmastub` binary, real gdb in batch mode, and
//! the real Linux images of `$DMASTUB_FIXTURES` (else `../shared/fixtures`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dmastub");

/// The live guest booted with `opts` for the suite `suite`; `None` (having said why) when
/// QEMU and its tools are missing or the guest's files cannot be had, where
/// [`live_required`] allows a skip. A guest that does not boot fails.
pub fn boot_live_guest(
    suite: &str,
    opts: &dmastub_testkit::vm::GuestOptions,
) -> Option<dmastub_testkit::vm::LiveVm> {
    use dmastub_testkit::vm::{self, LiveVm, VmConfig};
    let missing = vm::missing_packages();
    if !missing.is_empty() {
        assert!(!live_required(), "the {suite} must run here, but these packages are missing: {missing:?}");
        eprintln!("SKIP: {suite}: missing {missing:?} (apt-get install qemu-system-x86 gdb gcc libc6-dev)");
        return None;
    }
    let mut progress = |line: &str| eprintln!("{suite}: {line}");
    let files = match vm::guest::prepare(opts, &mut progress) {
        Ok(f) => f,
        Err(e) if !live_required() => {
            eprintln!("SKIP: {suite}: cannot prepare the guest: {e}");
            return None;
        }
        Err(e) => panic!("the {suite} cannot prepare its guest: {e}"),
    };
    let vm = LiveVm::boot(&files, &VmConfig::default(), &mut progress)
        .unwrap_or_else(|e| panic!("the {suite}'s guest did not boot ({}): {e}", files.kernel_origin));
    eprintln!(
        "{suite}: guest {} up in {:.1} s ({})",
        vm.report.release,
        vm.boot_time.as_secs_f64(),
        vm.accel
    );
    Some(vm)
}

/// Whether a live guest must run here (CI, or `DMASTUB_LIVE_REQUIRED`): a guest that cannot
/// boot is then a failure, not a skip.
pub fn live_required() -> bool {
    ["CI", "DMASTUB_LIVE_REQUIRED"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty() && s != "0" && s != "false"))
}

pub use dmastub_testkit::child::DmastubChild;

/// The public fixture set the suite is written for (`../shared/fixtures/README.md`); other
/// folders (more kernels, built with the fixtures' `tools/`) are used when present.
pub const BASE_FIXTURE: &str = "linux-6.1-kaslr";

/// The fixture folder `name` (e.g. `linux-6.1-kaslr`), or `None` with a message saying why the
/// test is skipped. With `DMASTUB_FIXTURES_REQUIRED=1` (CI) a missing [`BASE_FIXTURE`] fails the
/// test instead: a suite that skips its real-image tests must not pass unnoticed.
pub fn fixture_dir(name: &str) -> Option<PathBuf> {
    let root = std::env::var_os("DMASTUB_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    let dir = root.join(name);
    if dir.is_dir() {
        return Some(dir);
    }
    let required = std::env::var_os("DMASTUB_FIXTURES_REQUIRED").is_some_and(|v| v == "1");
    assert!(
        !(required && name == BASE_FIXTURE),
        "fixture folder {} not found and DMASTUB_FIXTURES_REQUIRED=1 (set DMASTUB_FIXTURES)",
        dir.display()
    );
    eprintln!("SKIP: fixture folder {} not found (set DMASTUB_FIXTURES)", dir.display());
    None
}

/// Every fixture folder: [`BASE_FIXTURE`] (as [`fixture_dir`] finds it) first, then any other
/// folder beside it with a post-panic truth file (images built with the fixtures' `tools/`,
/// e.g. with more CPUs or 5-level paging).
pub fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fixture_dir(BASE_FIXTURE).into_iter().collect();
    let root = std::env::var_os("DMASTUB_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    let mut others: Vec<PathBuf> =
        std::fs::read_dir(&root).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    others.retain(|d| {
        d.file_name() != Some(BASE_FIXTURE.as_ref()) && d.join("post-panic.truth.json").is_file()
    });
    others.sort();
    dirs.extend(others);
    dirs
}

/// Names kernel addresses as the fixture's own symbol table does (`nm` of its
/// `vmlinux-symbols`, moved by the truth's KASLR slide): an independent symbolizer.
pub struct NmSymbols {
    addrs: Vec<u64>,
    names: Vec<String>,
}

impl NmSymbols {
    /// `None` (with a message) when the fixture has no `vmlinux-symbols` or `nm` is missing.
    pub fn of_fixture(dir: &Path, truth: &serde_json::Value) -> Option<NmSymbols> {
        if !dir.join("vmlinux-symbols.zst").is_file() {
            eprintln!("SKIP part: {} has no vmlinux-symbols", dir.display());
            return None;
        }
        let file = unpacked(dir, "vmlinux-symbols.zst");
        let out = Command::new("nm").arg("-n").arg(&file).output().ok()?;
        let slide = hex(&truth["kaslr"]["offset"]);
        let (mut addrs, mut names) = (Vec::new(), Vec::new());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let p: Vec<&str> = line.split_whitespace().collect();
            if let [a, kind, name] = p[..]
                && "tTwW".contains(kind)
                && let Ok(a) = u64::from_str_radix(a, 16)
            {
                addrs.push(a.wrapping_add(slide));
                names.push(name.to_string());
            }
        }
        (!addrs.is_empty()).then_some(NmSymbols { addrs, names })
    }

    /// The function `addr` is in.
    pub fn name(&self, addr: u64) -> Option<&str> {
        let i = self.addrs.partition_point(|&a| a <= addr).checked_sub(1)?;
        Some(&self.names[i])
    }
}

/// `dir/name`, unpacked with `zstd -d` into a cache under the temp dir when it ends in `.zst`.
/// The cache is reused while it is newer than the packed file; concurrent tests unpack once.
pub fn unpacked(dir: &Path, name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let src = dir.join(name);
    let Some(stem) = name.strip_suffix(".zst") else { return src };
    let cache = std::env::temp_dir().join("dmastub-fixtures").join(dir.file_name().unwrap_or_default());
    std::fs::create_dir_all(&cache).expect("create the fixture cache folder");
    let dst = cache.join(stem);
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = |d: &Path| -> bool {
        match (
            std::fs::metadata(d).and_then(|m| m.modified()),
            std::fs::metadata(&src).and_then(|m| m.modified()),
        ) {
            (Ok(a), Ok(b)) => a >= b,
            _ => false,
        }
    };
    if !fresh(&dst) {
        // Unpack beside the target and rename, so another test binary never sees half a file.
        let tmp = cache.join(format!("{stem}.{}.part", std::process::id()));
        let st = Command::new("zstd")
            .args(["-d", "-q", "-f"])
            .arg(&src)
            .arg("-o")
            .arg(&tmp)
            .status()
            .expect("run zstd (install the zstd package)");
        assert!(st.success(), "zstd -d {} failed", src.display());
        std::fs::rename(&tmp, &dst).expect("move the unpacked fixture into place");
    }
    dst
}

/// The ground truth of a snapshot, as JSON.
pub fn truth(dir: &Path, snapshot: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(format!("{snapshot}.truth.json"))).expect("read truth JSON");
    serde_json::from_str(&text).expect("parse truth JSON")
}

/// A hex string from the truth JSON ("0x1a20000") as a number.
pub fn hex(v: &serde_json::Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("expected a hex string, got {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex number")
}

/// Runs `dmastub ARGS` to its end: whether it succeeded, its stdout and its stderr.
pub fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().expect("run dmastub");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A running `dmastub serve`, stopped when dropped.
pub struct Stub {
    _server: DmastubChild,
    pub port: u16,
    pub banner: String,
}

impl Stub {
    /// Starts `dmastub serve ARGS --listen 127.0.0.1:0` and waits for its banner, which names
    /// the port it got.
    pub fn start(args: &[&str]) -> Stub {
        let mut full: Vec<String> = vec!["serve".into()];
        full.extend(args.iter().map(|a| a.to_string()));
        full.extend(["--listen".into(), "127.0.0.1:0".into()]);
        let server = DmastubChild::start(Path::new(BIN), &full, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("{e}"));
        let port = server.port.unwrap_or_else(|| panic!("no port in the banner:\n{}", server.banner));
        Stub { banner: server.banner.clone(), port, _server: server }
    }
}

/// A running `dmastub nettlp-emulator`, stopped when dropped.
pub struct Emulator {
    emulator: DmastubChild,
}

impl Emulator {
    /// Starts the emulator serving `image` at `listen` and waits until it says it is serving.
    pub fn start(image: &str, listen: &str) -> Emulator {
        Emulator::start_with(image, listen, &[])
    }

    pub fn start_with(image: &str, listen: &str, extra: &[&str]) -> Emulator {
        let mut args: Vec<String> =
            ["nettlp-emulator", "--image", image, "--listen", listen].iter().map(|a| a.to_string()).collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        let emulator = DmastubChild::start(Path::new(BIN), &args, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"));
        Emulator { emulator }
    }

    pub fn pid(&self) -> u32 {
        self.emulator.pid()
    }
}

/// Debian's gdb in batch mode, connected to `port` (`target remote 127.0.0.1:PORT`), then
/// `commands`, not started yet: one command line for every test and benchmark that drives gdb.
pub fn gdb_command(port: u16, file: Option<&Path>, commands: &[&str]) -> Command {
    let mut cmd = Command::new("gdb");
    cmd.args(["-q", "-nx", "-batch"]);
    if let Some(f) = file {
        cmd.arg(f);
    }
    cmd.args(["-ex", "set pagination off", "-ex", "set confirm off"]);
    cmd.args(["-ex", &format!("target remote 127.0.0.1:{port}")]);
    for c in commands {
        cmd.args(["-ex", c]);
    }
    cmd
}

/// Runs Debian's gdb in batch mode against `port` with `commands`; returns stdout + stderr.
/// Panics if gdb does not finish within `timeout` (a hang is a failure, not a wait).
pub fn gdb_with(port: u16, file: Option<&Path>, commands: &[&str], timeout: Duration) -> String {
    let mut cmd = gdb_command(port, file, commands);
    // One pipe for both streams, so gdb's answers and its error lines stay in order.
    let (mut reader, writer) = std::io::pipe().expect("create a pipe");
    let mut child = cmd
        .stdout(writer.try_clone().expect("clone the pipe"))
        .stderr(writer)
        .spawn()
        .expect("run gdb (install the gdb package)");
    drop(cmd);
    let collector = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut text);
        text
    });
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for gdb").is_some() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gdb did not finish within {timeout:?} running {commands:?}; it printed:\n{}",
                collector.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    collector.join().unwrap_or_default()
}

pub fn gdb(port: u16, commands: &[&str]) -> String {
    gdb_with(port, None, commands, Duration::from_secs(120))
}

/// The value `x/gx ADDR` printed, if it did.
pub fn x_gx(out: &str, addr: u64) -> Option<u64> {
    let want = format!("{addr:#x}");
    out.lines().find_map(|line| {
        let (head, rest) = line.split_once(':')?;
        let head = head.split_whitespace().next()?;
        if head != want {
            return None;
        }
        let v = rest.split_whitespace().next()?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
    })
}

/// `x/Nxb ADDR` output as bytes.
pub fn x_bytes(out: &str, addr: u64, n: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut started = false;
    for line in out.lines() {
        let Some((head, rest)) = line.split_once(':') else { continue };
        let Some(first) = head.split_whitespace().next() else { continue };
        let Ok(at) = u64::from_str_radix(first.trim_start_matches("0x"), 16) else { continue };
        if at == addr {
            started = true;
        }
        if started && at >= addr && at < addr + n as u64 {
            for t in rest.split_whitespace() {
                if let Ok(b) = u8::from_str_radix(t.trim_start_matches("0x"), 16) {
                    bytes.push(b);
                }
            }
        }
    }
    bytes.truncate(n);
    bytes
}

/// One finished run of a command: its wall time, peak resident memory and output.
pub struct Measured {
    pub wall: Duration,
    /// Peak RSS of the process (and of any child it waited for), in KiB, from wait4's rusage.
    pub peak_rss_kib: i64,
    /// CPU time it used, user and system.
    pub cpu: Duration,
    pub stdout: String,
    pub stderr: String,
    pub success: bool,
}

/// Runs `cmd` to its end with `input` on its stdin, and measures it: wall time from spawn to
/// exit, and peak RSS from the rusage the kernel gives for this one child (std's wait() drops it).
///
/// The child starts in a copy of this process's address space (vfork, or fork), and exec folds
/// that space's peak RSS into the child's, so a child is never measured smaller than this process
/// was at its biggest. So the peak of this process is reset to its current RSS first
/// (`/proc/self/clear_refs`); a child's figure then counts at most this process's RSS of now, a
/// few MiB for a benchmark that keeps no large buffers.
// The child is reaped with wait4, not Child::wait.
#[allow(clippy::zombie_processes)]
pub fn measure(cmd: &mut Command, input: &str) -> Measured {
    use std::io::{Read, Write};
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    // Feed stdin and drain stderr beside the stdout read, so no pipe fills up and blocks.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut stderr = child.stderr.take().expect("stderr");
    let drainer = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    let _ = child.stdout.take().expect("stdout").read_to_string(&mut stdout);
    let _ = feeder.join();
    let stderr = drainer.join().unwrap_or_default();
    let mut status = 0;
    // SAFETY: a plain rusage struct, filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaps our own child (not waited for elsewhere) and writes only the given structs.
    let reaped = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    let success = reaped > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let tv =
        |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    Measured { wall, peak_rss_kib: usage.ru_maxrss, cpu, stdout, stderr, success }
}

/// The median of `v` (the upper one of the middle two for an even count); `v` must not be empty.
pub fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// The kernel's DWARF vmlinux (Debian's -dbg package) named by DMASTUB_DWARF_VMLINUX, if it exists.
pub fn dwarf_vmlinux() -> Option<PathBuf> {
    std::env::var_os("DMASTUB_DWARF_VMLINUX").map(PathBuf::from).filter(|p| p.is_file())
}

/// drgn's script for the process list: PID, parent's TGID and command name of every task.
pub const DRGN_PS: &str = "from drgn.helpers.linux.pid import for_each_task\n\
                           for t in for_each_task(prog):\n    \
                           print(t.pid.value_(), t.real_parent.tgid.value_(), t.comm.string_().decode())";

/// `drgn` (from PATH) on the ELF core `core` with only the DWARF `vmlinux` for symbols, running
/// `script`.
pub fn drgn_command(core: &Path, vmlinux: &Path, script: &str) -> Command {
    let mut cmd = Command::new("drgn");
    cmd.arg("-q").arg("-c").arg(core).arg("-s").arg(vmlinux).args(["--no-default-symbols", "-e", script]);
    cmd
}

/// Whether `drgn` runs from PATH.
pub fn have_drgn() -> bool {
    Command::new("drgn").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A scratch folder for one test, removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("dmastub-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// A writable copy of `src` named `name` (fixtures are unpacked read-only).
    pub fn copy(&self, src: &Path, name: &str) -> PathBuf {
        let dst = self.0.join(name);
        std::fs::copy(src, &dst).expect("copy the fixture");
        let mut perm = std::fs::metadata(&dst).expect("stat the copy").permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&dst, perm).expect("make the copy writable");
        dst
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (pid → (ppid, comm, cr3)) from a `ps` table.
pub fn parse_ps(text: &str) -> BTreeMap<i64, (i64, String, Option<u64>)> {
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if t.len() < 6 || t[0].parse::<i64>().is_err() || t[1].parse::<i64>().is_err() {
            continue;
        }
        let cr3 = match t[t.len() - 1] {
            "-" => None,
            c => Some(u64::from_str_radix(c.trim_start_matches("0x"), 16).expect("cr3 column")),
        };
        rows.insert(t[0].parse().unwrap(), (t[1].parse().unwrap(), t[3..t.len() - 2].join(" "), cr3));
    }
    rows
}

/// Every difference between a ps table and the truth's task list (drgn's), idle task aside.
pub fn ps_differences(
    rows: &BTreeMap<i64, (i64, String, Option<u64>)>,
    t: &serde_json::Value,
) -> Vec<String> {
    let mut want = BTreeMap::new();
    for p in t["processes"].as_array().expect("processes") {
        let cr3 = p["cr3"].as_str().map(|c| u64::from_str_radix(c.trim_start_matches("0x"), 16).unwrap());
        want.insert(
            p["pid"].as_i64().unwrap(),
            (p["ppid"].as_i64().unwrap(), p["comm"].as_str().unwrap().to_string(), cr3),
        );
    }
    let mut probs = Vec::new();
    for (pid, w) in &want {
        match rows.get(pid) {
            None => probs.push(format!("missing pid {pid} ({})", w.1)),
            Some(g) if g != w => probs.push(format!("pid {pid}: got {g:?}, want {w:?}")),
            _ => {}
        }
    }
    for pid in rows.keys().filter(|p| **p != 0 && !want.contains_key(p)) {
        probs.push(format!("extra pid {pid}"));
    }
    probs
}
