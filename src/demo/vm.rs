//! `dmastub demo --vm`: the main job on a real Linux kernel, in one command.
//!
//! It boots the distribution's own kernel under QEMU with the guest's RAM in a shared memory
//! file, serves that file with `dmastub serve --live` (or through `dmastub nettlp-emulator`
//! and `serve --nettlp`, the path a real adapter takes), and drives gdb: the kernel found
//! with no hints, the process list, the ticker's counter changing between two reads, a
//! kernel panic caused from outside, the panic message, the counter frozen, and the
//! panicking task's backtrace. Every claim it shows is checked; a wrong one ends the demo
//! with an error.

use std::error::Error;
use std::io::{self, BufRead, IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dmastub_testkit::child::{DmastubChild, GdbSession};
use dmastub_testkit::vm::{self, GuestOptions, LiveVm, VmConfig};

/// What `dmastub demo --vm` was asked for.
#[derive(Debug, Clone)]
pub struct VmDemoOptions {
    /// Read the guest through the NetTLP emulator instead of the RAM file directly.
    pub nettlp: bool,
    /// Install missing packages without asking.
    pub yes: bool,
    pub guest: GuestOptions,
    /// A vmlinux with DWARF for this kernel: gdb then shows the backtrace with source lines.
    pub vmlinux: Option<PathBuf>,
    pub panic: PanicBy,
}

/// How the demo panics the guest's kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicBy {
    /// An NMI from QEMU's monitor (QMP `inject-nmi`), as a BMC's NMI button sends one to a hung
    /// server; the guest runs with `kernel.unknown_nmi_panic = 1`.
    Nmi,
    /// `echo c > /proc/sysrq-trigger` from a guest process, asked for over QEMU's second
    /// serial port: a panic in process context.
    Sysrq,
}

const GDB_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the demo; an error says what failed and what to do.
pub fn run(opts: &VmDemoOptions) -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    println!("dmastub demo --vm: a stock Linux kernel under QEMU, read from outside by dmastub");
    ensure_packages(opts.yes)?;
    // On Ctrl-C, SIGTERM or SIGHUP: stop the VM, remove its files, exit 130.
    ctrlc::set_handler(|| {
        eprintln!("\ndmastub: interrupted; stopping the VM and removing its files");
        vm::clean_up_registered();
        std::process::exit(130);
    })
    .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    let mut progress = |line: &str| {
        println!("  .. {line}");
        let _ = io::stdout().flush();
    };
    let files = vm::guest::prepare(&opts.guest, &mut progress)?;
    println!("\n== booting {} under QEMU; its RAM is a shared memory file ==", files.kernel_origin);
    let mut machine = LiveVm::boot(&files, &VmConfig::default(), &mut progress)?;
    println!(
        "  the guest is up after {:.1} s ({}): kernel {}, the ticker runs as pid {}",
        machine.boot_time.as_secs_f64(),
        machine.accel.to_uppercase(),
        machine.report.release,
        machine.report.ticker_pid
    );

    let exe = std::env::current_exe()?;
    let ram = machine.ram_path().display().to_string();
    let (_emulator, mut serve_args) = if opts.nettlp {
        let (adapter, local) = loopback_pair();
        let emulator = DmastubChild::start(
            &exe,
            &["nettlp-emulator".into(), "--live".into(), ram.clone(), "--listen".into(), adapter.to_string()],
            Duration::from_secs(30),
        )?;
        println!("\n== a NetTLP adapter in front of that RAM: the emulator answers DMA reads over UDP ==");
        println!("$ dmastub nettlp-emulator --live {ram} --listen {adapter}");
        print_indented(&emulator.banner);
        let args = vec![
            "serve".into(),
            "--nettlp".into(),
            adapter.to_string(),
            "--nettlp-local".into(),
            local.to_string(),
        ];
        (Some(emulator), args)
    } else {
        (None, vec!["serve".into(), "--live".into(), ram.clone()])
    };
    println!("\n== dmastub serves the running machine's memory; it is told nothing about the kernel ==");
    println!("$ dmastub {}", serve_args.join(" "));
    serve_args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let stub = DmastubChild::start(&exe, &serve_args, Duration::from_secs(120))?;
    print_indented(&stub.banner);
    let port = stub.port.ok_or("dmastub serve did not say its port")?;

    let mut gdb = GdbSession::start(opts.vmlinux.as_deref())?;
    let mut show = |gdb: &mut GdbSession, why: &str, command: &str| -> Result<String, Box<dyn Error>> {
        if !why.is_empty() {
            println!("\n# {why}");
        }
        println!("(gdb) {command}");
        let out = gdb.run(command, GDB_TIMEOUT)?;
        if !out.trim().is_empty() {
            println!("{out}");
        }
        let _ = io::stdout().flush();
        Ok(out)
    };

    println!("\n== gdb on the running machine ==");
    let attach = show(&mut gdb, "", &format!("target remote 127.0.0.1:{port}"))?;
    expect(attach.contains("Remote debugging using"), "gdb attaches", &attach)?;
    let kernel = show(&mut gdb, "the kernel, found in raw memory with no hints", "monitor kernel")?;
    expect(kernel.contains(&machine.report.release), "monitor kernel names the guest's release", &kernel)?;
    let ps = show(&mut gdb, "its processes, read from the task list in memory", "monitor ps")?;
    let ticker_pid = machine.report.ticker_pid;
    expect(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(&ticker_pid.to_string()) && l.contains("ticker")),
        "monitor ps lists the ticker",
        &ps,
    )?;
    show(
        &mut gdb,
        "the ticker's address space: its page tables become the active ones",
        &format!("monitor switch {ticker_pid}"),
    )?;
    show(
        &mut gdb,
        "the ticker's own symbols (a static binary: they need no relocation)",
        &format!("add-symbol-file {}", files.ticker.display()),
    )?;
    let first = read_ticks(&mut show, &mut gdb, "its counter, which the guest adds 1 to ten times a second")?;
    std::thread::sleep(Duration::from_millis(1500));
    let second =
        read_ticks(&mut show, &mut gdb, "1.5 s later: the same address, read again from the live RAM")?;
    expect(second > first, "the counter changes while the machine runs", &format!("{first} then {second}"))?;
    let printed = machine.ticker_values();
    println!(
        "  -> it moved from {first} to {second}; the guest itself printed ticks={} meanwhile",
        printed.last().copied().unwrap_or(0)
    );

    match opts.panic {
        PanicBy::Nmi => {
            println!(
                "\n== the kernel panics from outside: QEMU's monitor sends the guest an NMI (QMP inject-nmi),"
            );
            println!(
                "   as a BMC's NMI button does to a hung server; the guest has kernel.unknown_nmi_panic = 1 =="
            );
            machine.panic_by_nmi(Duration::from_secs(120))?;
        }
        PanicBy::Sysrq => {
            println!(
                "\n== the kernel panics: the host asks the guest (over QEMU's second serial port) to run"
            );
            println!("   'crasher', which does: echo c > /proc/sysrq-trigger ==");
            machine.panic(Duration::from_secs(120))?;
        }
    }
    println!("  the guest's console: {}", panic_line(&machine.console()));

    let dmesg =
        show(&mut gdb, "the kernel log, read from the printk ring buffer in memory", "monitor dmesg 25")?;
    expect(dmesg.contains("Kernel panic - not syncing"), "monitor dmesg shows the panic", &dmesg)?;
    let frozen1 = read_ticks(&mut show, &mut gdb, "the ticker's counter now")?;
    std::thread::sleep(Duration::from_millis(1500));
    let frozen2 = read_ticks(&mut show, &mut gdb, "1.5 s later: frozen, the machine is dead")?;
    expect(
        frozen1 == frozen2 && frozen1 >= second,
        "the counter is frozen after the panic",
        &format!("{frozen1} then {frozen2}"),
    )?;

    // The panicking task is a gdb thread whose extra info says so; selecting it makes it the
    // context of what follows.
    let found = show(&mut gdb, "the panicking task: a gdb thread like every task", "thread find panicking")?;
    // "Thread 58 has extra info 'pid 0 swapper/1 …'" (after gdb's "[New Thread …]" lines).
    let thread = found
        .lines()
        .find_map(|l| l.strip_prefix("Thread ")?.split_once(" has ").map(|(n, _)| n.to_string()))
        .ok_or("gdb found no panicking thread")?;
    show(&mut gdb, "", &format!("thread {thread}"))?;
    if opts.vmlinux.is_some() {
        let bt = show(&mut gdb, "its backtrace, from its registers and the kernel's DWARF", "bt 16")?;
        expect(bt.contains("panic"), "gdb's backtrace goes through panic", &bt)?;
    }
    let bt = show(
        &mut gdb,
        "its backtrace, unwound by dmastub with the kernel's own ORC tables and kallsyms (no vmlinux \
         needed; through interrupt and NMI entries too)",
        "monitor bt",
    )?;
    expect(bt.contains("panic"), "the backtrace goes through panic", &bt)?;
    drop(gdb);
    drop(stub);
    drop(machine);
    println!(
        "\nThe demo took {:.0} s. Its VM and RAM file are gone. On your own machines:",
        started.elapsed().as_secs_f64()
    );
    println!(
        "  dmastub serve --live /dev/shm/GUEST-RAM     (a QEMU guest with memory-backend-file,share=on)"
    );
    println!(
        "  dmastub serve --image vmcore                 (a kdump vmcore or QEMU dump-guest-memory core)"
    );
    println!(
        "  dmastub serve --nettlp ADAPTER_IP            (a machine read by DMA through a NetTLP adapter)"
    );
    println!("  gdb -q vmlinux -ex 'target remote 127.0.0.1:1234' -ex 'info threads' -ex 'monitor dmesg 20'");
    Ok(())
}

/// `p ticker.ticks`, shown, and its value.
fn read_ticks(
    show: &mut impl FnMut(&mut GdbSession, &str, &str) -> Result<String, Box<dyn Error>>,
    gdb: &mut GdbSession,
    why: &str,
) -> Result<u64, Box<dyn Error>> {
    let out = show(gdb, why, "p ticker.ticks")?;
    out.lines()
        .find_map(|l| l.split_once(" = ").and_then(|(_, v)| v.trim().parse().ok()))
        .ok_or_else(|| format!("gdb printed no value for ticker.ticks: {out}").into())
}

fn expect(ok: bool, claim: &str, seen: &str) -> Result<(), Box<dyn Error>> {
    if ok { Ok(()) } else { Err(format!("the demo expected that {claim}, but saw:\n{seen}").into()) }
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("  {line}");
    }
}

fn panic_line(console: &str) -> String {
    console
        .lines()
        .find(|l| l.contains("Kernel panic - not syncing"))
        .map(|l| l.trim().to_string())
        .unwrap_or_default()
}

/// Loopback addresses for the emulated adapter and our end, unique to this process so that
/// demos and tests running side by side do not share UDP ports.
fn loopback_pair() -> (Ipv4Addr, Ipv4Addr) {
    let id = std::process::id();
    let (hi, lo) = ((id >> 8) as u8, (id as u8) | 1);
    (Ipv4Addr::new(127, 77, hi, lo), Ipv4Addr::new(127, 78, hi, lo))
}

/// Makes sure QEMU, gdb and a compiler with a static C library are here: installs them with
/// apt-get after asking (or at once with `--yes` or `CI=true`), else says what to install.
fn ensure_packages(yes: bool) -> Result<(), Box<dyn Error>> {
    let missing = vm::missing_packages();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err(format!(
            "missing: {list}. This is not a Debian or Ubuntu machine: install qemu-system-x86_64, gdb \
             and gcc with a static C library (glibc's libc.a) with your package manager, then run again"
        )
        .into());
    }
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let sudo = if root { "" } else { "sudo " };
    let command = format!("{sudo}apt-get update && {sudo}apt-get install -y {list}");
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if !(yes || ci) {
        if !io::stdin().is_terminal() {
            return Err(format!(
                "missing packages: {list}. Install them with:\n  {command}\n(or run the demo with --yes)"
            )
            .into());
        }
        print!("The demo needs packages that are not installed: {list}.\nRun '{command}' now? [Y/n] ");
        io::stdout().flush()?;
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if answer.trim().to_lowercase().starts_with('n') {
            return Err(format!("not installing; install them with:\n  {command}").into());
        }
    }
    println!("$ {command}");
    let status =
        Command::new("sh").args(["-c", &command]).env("DEBIAN_FRONTEND", "noninteractive").status()?;
    if !status.success() {
        return Err(format!("'{command}' failed ({status})").into());
    }
    let still = vm::missing_packages();
    if !still.is_empty() {
        return Err(format!("still missing after installing: {}", still.join(" ")).into());
    }
    Ok(())
}
