//! A live Linux machine to attach to: a stock distribution kernel under QEMU (KVM when the
//! host offers it, else TCG), its RAM in a shared file, running the guest's own ticker.
//!
//! The demo (`dmastub demo --vm`), the live end-to-end tests and the comparison bench all
//! boot it through [`LiveVm::boot`]. The guest reports what it knows about itself (its `ps`,
//! kallsyms lines, the ticker's values) on its console, and answers requests on a second
//! serial port; that report is the ground truth the live tests compare with.

pub mod cpio;
pub mod guest;
mod qmp;

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use guest::{GuestFiles, GuestOptions};
use qmp::Qmp;

/// What went wrong while preparing, booting or talking to the guest.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// What went wrong, said in full.
    #[error("{0}")]
    Msg(String),
    /// An I/O error, and what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl VmError {
    pub(crate) fn io(what: String, source: io::Error) -> Self {
        VmError::Io { what, source }
    }
}

/// Runs a host tool to completion; its stdout, or an error with its stderr.
pub(crate) fn run_tool(cmd: &mut Command, what: &str) -> Result<String, VmError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| VmError::io(format!("running {what}"), e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        return Err(VmError::Msg(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Debian packages the live guest needs on the host, with the command each provides; the
/// ones missing here. (The kernel and busybox are downloaded, not installed.)
pub fn missing_packages() -> Vec<&'static str> {
    let has = |cmd: &str| {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
    };
    let mut missing = Vec::new();
    if !has("qemu-system-x86_64") {
        missing.push("qemu-system-x86");
    }
    if !has("gdb") {
        missing.push("gdb");
    }
    if !has("gcc") {
        missing.extend(["gcc", "libc6-dev"]);
    } else if !static_libc_present() {
        missing.push("libc6-dev");
    }
    missing
}

fn static_libc_present() -> bool {
    Command::new("gcc")
        .arg("-print-file-name=libc.a")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|p| p.is_absolute() && p.is_file())
}

/// How to run the guest.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The guest's RAM in MiB.
    pub mem_mib: u32,
    /// Its virtual CPUs.
    pub cpus: u32,
    /// Force TCG even where KVM works (also `DMASTUB_VM_ACCEL=tcg`).
    pub tcg_only: bool,
    /// Give QEMU's own gdbstub a port (for comparisons).
    pub qemu_gdb_port: Option<u16>,
    /// How long the guest may take to report ready.
    pub boot_timeout: Duration,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            mem_mib: 256,
            cpus: 2,
            tcg_only: false,
            qemu_gdb_port: None,
            boot_timeout: Duration::from_secs(300),
        }
    }
}

/// What the guest said about itself when it was ready (see `guest/init.sh`).
#[derive(Debug, Clone, Default)]
pub struct GuestReport {
    /// `uname -r`.
    pub release: String,
    /// The PID of the ticker, the guest's own program.
    pub ticker_pid: u32,
    /// `/proc/kallsyms` lines: address and name.
    pub kallsyms: Vec<(u64, String)>,
    /// Its processes.
    pub ps: Vec<GuestProcess>,
}

/// One line of the guest's `ps -o pid,ppid,stat,comm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestProcess {
    /// Process ID.
    pub pid: u32,
    /// Parent's process ID.
    pub ppid: u32,
    /// State letters, as `ps` prints them.
    pub stat: String,
    /// Command name.
    pub comm: String,
}

impl GuestReport {
    fn parse(lines: &[String]) -> Result<GuestReport, VmError> {
        let mut r = GuestReport::default();
        for line in lines {
            let (key, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match key {
                "release" => r.release = rest.trim().to_string(),
                "ticker" => r.ticker_pid = rest.trim().parse().unwrap_or(0),
                "kallsyms" => {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    if let [addr, _, name, ..] = f[..]
                        && let Ok(a) = u64::from_str_radix(addr, 16)
                    {
                        r.kallsyms.push((a, name.to_string()));
                    }
                }
                "ps" => {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    if let [pid, ppid, stat, comm, ..] = f[..]
                        && let (Ok(pid), Ok(ppid)) = (pid.parse(), ppid.parse())
                    {
                        r.ps.push(GuestProcess { pid, ppid, stat: stat.into(), comm: comm.into() });
                    }
                }
                _ => {}
            }
        }
        if r.release.is_empty() || r.ticker_pid == 0 || r.ps.is_empty() {
            return Err(VmError::Msg(format!("the guest's report is incomplete: {lines:?}")));
        }
        Ok(r)
    }

    /// The address of a kallsyms symbol, as the guest saw it.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.kallsyms.iter().find(|(_, n)| n == name).map(|(a, _)| *a)
    }
}

/// A running guest. Dropping it stops QEMU and deletes its RAM file and run directory.
pub struct LiveVm {
    qemu: Child,
    run_dir: PathBuf,
    ram: PathBuf,
    console: PathBuf,
    control: BufReader<UnixStream>,
    qmp: Qmp,
    /// The accelerator QEMU runs with: `kvm` or `tcg`.
    pub accel: &'static str,
    /// The files it booted.
    pub guest: GuestFiles,
    /// What the guest said about itself once up.
    pub report: GuestReport,
    /// From QEMU's start to the guest's report.
    pub boot_time: Duration,
}

/// Children and files to clean up if the process is interrupted (see [`clean_up_registered`]).
static CLEANUP: Mutex<Vec<(u32, Vec<PathBuf>)>> = Mutex::new(Vec::new());

/// Registers a child process (killed) and files or directories (removed) for
/// [`clean_up_registered`]; [`forget`] takes them off again.
pub fn register(pid: u32, paths: Vec<PathBuf>) {
    if let Ok(mut list) = CLEANUP.lock() {
        list.push((pid, paths));
    }
}

/// Takes `pid` and its files off the clean-up list (it was stopped and cleaned up normally).
pub fn forget(pid: u32) {
    if let Ok(mut list) = CLEANUP.lock() {
        list.retain(|(p, _)| *p != pid);
    }
}

/// Kills every registered child and removes its files: what a process that is interrupted
/// calls before it exits (the application installs the signal handler, not this kit).
pub fn clean_up_registered() {
    if let Ok(list) = CLEANUP.lock() {
        for (pid, paths) in list.iter() {
            // SAFETY: kill(2) on a child we spawned; no memory is touched.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            for p in paths {
                let _ = if p.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
            }
        }
    }
}

/// Why one boot attempt failed: the accelerator (retry with TCG), or anything else.
enum BootFailure {
    AccelUnusable(String),
    Other(VmError),
}

impl From<VmError> for BootFailure {
    fn from(e: VmError) -> Self {
        BootFailure::Other(e)
    }
}

impl BootFailure {
    fn into_error(self) -> VmError {
        match self {
            BootFailure::AccelUnusable(why) => VmError::Msg(why),
            BootFailure::Other(e) => e,
        }
    }
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

fn kvm_usable() -> bool {
    fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

impl LiveVm {
    /// Boots the guest and waits until it reports ready. `progress` hears a line every few
    /// seconds while the kernel boots. KVM is tried first where `/dev/kvm` opens; if QEMU
    /// cannot run the guest with it (nested or restricted hosts), the boot falls back to TCG.
    pub fn boot(
        guest: &GuestFiles,
        cfg: &VmConfig,
        progress: &mut dyn FnMut(&str),
    ) -> Result<LiveVm, VmError> {
        let kvm = !cfg.tcg_only && std::env::var("DMASTUB_VM_ACCEL").as_deref() != Ok("tcg") && kvm_usable();
        if kvm {
            match Self::boot_with(guest, cfg, "kvm", progress) {
                Ok(vm) => return Ok(vm),
                Err(BootFailure::AccelUnusable(why)) => {
                    let why = why.lines().next().unwrap_or_default().to_string();
                    progress(&format!(
                        "KVM did not work here ({}); booting with TCG instead",
                        clip(&why, 120)
                    ));
                }
                Err(BootFailure::Other(e)) => return Err(e),
            }
        }
        Self::boot_with(guest, cfg, "tcg", progress).map_err(BootFailure::into_error)
    }

    fn boot_with(
        guest: &GuestFiles,
        cfg: &VmConfig,
        accel: &'static str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<LiveVm, BootFailure> {
        let tag =
            format!("dmastub-vm-{}-{}", std::process::id(), RUN_COUNTER.fetch_add(1, Ordering::Relaxed));
        let run_dir = std::env::temp_dir().join(&tag);
        fs::create_dir_all(&run_dir)
            .map_err(|e| VmError::io(format!("creating {}", run_dir.display()), e))?;
        // /dev/shm keeps guest RAM in memory; a file elsewhere works too, only slower.
        let shm = Path::new("/dev/shm");
        let ram = if shm.is_dir() { shm.join(format!("{tag}.ram")) } else { run_dir.join("guest.ram") };
        let console = run_dir.join("console.log");
        let control_path = run_dir.join("control.sock");
        let qmp_path = run_dir.join("qmp.sock");

        let kvm = accel == "kvm";
        let mem = format!("{}M", cfg.mem_mib);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", accel, "-cpu", if kvm { "host" } else { "max" }])
            .args(["-smp", &cfg.cpus.to_string(), "-m", &mem])
            .arg("-object")
            .arg(format!("memory-backend-file,id=ram,size={mem},mem-path={},share=on", ram.display()))
            .args(["-machine", "pc,memory-backend=ram"])
            .arg("-kernel")
            .arg(&guest.kernel)
            .arg("-initrd")
            .arg(&guest.initramfs)
            .args(["-append", "console=ttyS0 panic=0"])
            .args(["-display", "none", "-vga", "none", "-monitor", "none", "-no-reboot", "-nodefaults"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!("socket,id=control,path={},server=on,wait=off", control_path.display()))
            .args(["-serial", "chardev:control"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()));
        if let Some(port) = cfg.qemu_gdb_port {
            cmd.args(["-gdb", &format!("tcp:127.0.0.1:{port}")]);
        }
        let log = fs::File::create(run_dir.join("qemu.log"))
            .map_err(|e| VmError::io(format!("creating {}", run_dir.display()), e))?;
        let log2 = log.try_clone().map_err(|e| VmError::io("qemu.log".into(), e))?;
        // Its own process group: Ctrl-C reaches dmastub, which stops QEMU and removes the files.
        let mut qemu =
            cmd.stdin(Stdio::null()).stdout(log).stderr(log2).process_group(0).spawn().map_err(|e| {
                VmError::io("starting qemu-system-x86_64 (package qemu-system-x86)".into(), e)
            })?;
        register(qemu.id(), vec![ram.clone(), run_dir.clone()]);
        let started = Instant::now();
        let stop = |qemu: &mut Child| {
            let _ = qemu.kill();
            let _ = qemu.wait();
            forget(qemu.id());
            let log = fs::read_to_string(run_dir.join("qemu.log")).unwrap_or_default();
            let console_tail = tail(&fs::read_to_string(&console).unwrap_or_default(), 15);
            let _ = fs::remove_file(&ram);
            let _ = fs::remove_dir_all(&run_dir);
            (log.trim().to_string(), console_tail)
        };
        let fail = |qemu: &mut Child, why: String| {
            let (log, console_tail) = stop(qemu);
            BootFailure::Other(VmError::Msg(format!(
                "{why}\nQEMU said: {log}\nconsole (last lines):\n{console_tail}"
            )))
        };

        let mut last_progress = Instant::now();
        let ready = loop {
            let text = fs::read_to_string(&console).unwrap_or_default();
            if text.contains("DMASTUB-GUEST-READY") {
                break text;
            }
            if let Ok(Some(status)) = qemu.try_wait() {
                if kvm && text.is_empty() {
                    let (log, _) = stop(&mut qemu);
                    return Err(BootFailure::AccelUnusable(format!("QEMU exited ({status}): {log}")));
                }
                return Err(fail(&mut qemu, format!("QEMU exited while the guest booted ({status})")));
            }
            // A kernel under KVM prints within a second or two; silence means KVM is not really there.
            if kvm && text.is_empty() && started.elapsed() > Duration::from_secs(15) {
                stop(&mut qemu);
                return Err(BootFailure::AccelUnusable("no console output in 15 s".into()));
            }
            if started.elapsed() > cfg.boot_timeout {
                let why = format!(
                    "the guest did not report ready within {} s ({accel})",
                    cfg.boot_timeout.as_secs()
                );
                return Err(fail(&mut qemu, why));
            }
            if last_progress.elapsed() >= Duration::from_secs(3) {
                last_progress = Instant::now();
                let last =
                    text.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("(no output yet)");
                progress(&format!(
                    "booting ({accel}, {:>3} s): {}",
                    started.elapsed().as_secs(),
                    clip(last, 90)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let boot_time = started.elapsed();
        let report = match framed(&ready, "report") {
            Some(lines) => GuestReport::parse(&lines),
            None => Err(VmError::Msg("the guest said ready without a report".into())),
        };
        let report = match report {
            Ok(r) => r,
            Err(e) => return Err(fail(&mut qemu, e.to_string())),
        };
        let connect = UnixStream::connect(&control_path).and_then(|s| {
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            Ok(s)
        });
        let control = match connect {
            Ok(s) => BufReader::new(s),
            Err(e) => return Err(fail(&mut qemu, format!("connecting to the guest's control port: {e}"))),
        };
        let qmp = match Qmp::connect(&qmp_path) {
            Ok(q) => q,
            Err(e) => return Err(fail(&mut qemu, format!("connecting to QEMU's QMP socket: {e}"))),
        };
        Ok(LiveVm {
            qemu,
            run_dir,
            ram,
            console,
            control,
            qmp,
            accel,
            guest: guest.clone(),
            report,
            boot_time,
        })
    }

    /// The guest's RAM: offset = guest physical address.
    pub fn ram_path(&self) -> &Path {
        &self.ram
    }

    /// Everything the guest wrote on its console so far.
    pub fn console(&self) -> String {
        fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// The ticker's values printed on the console so far, oldest first.
    pub fn ticker_values(&self) -> Vec<u64> {
        self.console()
            .lines()
            .filter(|l| l.starts_with("TICKER "))
            .filter_map(|l| l.rsplit_once("ticks=").and_then(|(_, v)| v.trim().parse().ok()))
            .collect()
    }

    /// The ticker's `ticks` address, from its own console line.
    pub fn ticker_address(&self) -> Option<u64> {
        let console = self.console();
        let line = console.lines().find(|l| l.starts_with("TICKER "))?;
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr=0x"))?;
        u64::from_str_radix(addr, 16).ok()
    }

    /// Sends one request on the control port and returns the lines of its answer.
    pub fn request(&mut self, request: &str) -> Result<Vec<String>, VmError> {
        let what = |e| VmError::io(format!("the guest's control port ('{request}')"), e);
        self.control.get_mut().write_all(format!("{request}\n").as_bytes()).map_err(what)?;
        let (begin, end) = (format!("BEGIN {request}"), format!("END {request}"));
        let mut lines = Vec::new();
        let mut inside = false;
        for _ in 0..100_000 {
            let mut line = String::new();
            if self.control.read_line(&mut line).map_err(what)? == 0 {
                return Err(VmError::Msg(format!("the guest closed its control port during '{request}'")));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line == begin {
                inside = true;
            } else if line == end && inside {
                return Ok(lines);
            } else if inside {
                lines.push(line.to_string());
            }
        }
        Err(VmError::Msg(format!("the guest's answer to '{request}' never ended")))
    }

    /// The guest's report now (its `ps`, kallsyms lines, the ticker's pid).
    pub fn fresh_report(&mut self) -> Result<GuestReport, VmError> {
        let lines = self.request("report")?;
        GuestReport::parse(&lines)
    }

    /// Panics the kernel from a guest process named `crasher` and waits for the panic to
    /// finish; returns the crasher's pid.
    pub fn panic(&mut self, timeout: Duration) -> Result<u32, VmError> {
        self.request("panic")?;
        let console = self.wait_for_panic(timeout)?;
        console
            .lines()
            .find_map(|l| l.split_once("CRASHER pid=").map(|(_, pid)| pid))
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| VmError::Msg("the crasher did not say its pid".into()))
    }

    /// Panics the kernel in the test module's own code (`tools/test-module`, which must be
    /// loaded): a process writes to `/proc/dmastub_test`; waits for the panic to finish and
    /// returns that process's pid.
    pub fn poke_module(&mut self, timeout: Duration) -> Result<u32, VmError> {
        self.request("poke-module")?;
        let console = self.wait_for_panic(timeout)?;
        console
            .lines()
            .find_map(|l| l.split_once("POKER pid=").map(|(_, pid)| pid))
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| VmError::Msg("the process poking the test module did not say its pid".into()))
    }

    /// Panics the kernel from outside: an NMI from QEMU's monitor, which the guest's
    /// `kernel.unknown_nmi_panic` turns into a panic; waits for the panic to finish.
    pub fn panic_by_nmi(&mut self, timeout: Duration) -> Result<(), VmError> {
        self.qmp.execute("inject-nmi")?;
        self.wait_for_panic(timeout).map(drop)
    }

    /// Waits until the console shows the end of a kernel panic; returns the console.
    fn wait_for_panic(&self, timeout: Duration) -> Result<String, VmError> {
        let started = Instant::now();
        loop {
            let console = self.console();
            if console.contains("---[ end Kernel panic") {
                return Ok(console);
            }
            if started.elapsed() > timeout {
                return Err(VmError::Msg(format!(
                    "no end of a kernel panic on the console after {} s:\n{}",
                    timeout.as_secs(),
                    tail(&console, 10)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a QMP command with `arguments` (a JSON object as text, e.g.
    /// `{"paging":false,"protocol":"file:/tmp/x","format":"kdump-zlib"}` for
    /// `dump-guest-memory`) and returns QEMU's reply line, `{"return": ...}`.
    pub fn qmp(&mut self, command: &str, arguments: Option<&str>) -> Result<String, VmError> {
        self.qmp.execute_with(command, arguments)
    }

    /// Pauses or resumes the guest's CPUs (QMP `stop` / `cont`).
    pub fn set_running(&mut self, running: bool) -> Result<(), VmError> {
        self.qmp.execute(if running { "cont" } else { "stop" })
    }
}

impl Drop for LiveVm {
    fn drop(&mut self) {
        let _ = self.qmp.execute("quit");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.qemu.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        forget(self.qemu.id());
        let _ = fs::remove_file(&self.ram);
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

/// The lines between `BEGIN name` and `END name` in `text`.
fn framed(text: &str, name: &str) -> Option<Vec<String>> {
    let (begin, end) = (format!("BEGIN {name}"), format!("END {name}"));
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    lines.by_ref().find(|l| *l == begin)?;
    let mut out = Vec::new();
    for l in lines {
        if l == end {
            return Some(out);
        }
        out.push(l.to_string());
    }
    None
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_report_parses() {
        let text = "noise\nBEGIN report\nrelease 6.1.0-56-amd64\nticker 57\n\
                    kallsyms ffffffffb6a00000 T _text\nps   PID  PPID STAT COMMAND\n\
                    ps     1     0 S    init\nps    57     1 S    ticker\nEND report\nDMASTUB-GUEST-READY\n";
        let r = GuestReport::parse(&framed(text, "report").unwrap()).unwrap();
        assert_eq!(r.release, "6.1.0-56-amd64");
        assert_eq!(r.ticker_pid, 57);
        assert_eq!(r.symbol("_text"), Some(0xffffffffb6a00000));
        assert_eq!(r.ps.len(), 2);
        assert_eq!(r.ps[1], GuestProcess { pid: 57, ppid: 1, stat: "S".into(), comm: "ticker".into() });
        assert!(GuestReport::parse(&["release x".to_string()]).is_err());
        assert_eq!(framed("BEGIN report\nno end", "report"), None);
    }
}
