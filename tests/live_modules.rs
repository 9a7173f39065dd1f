//! Modules on a live guest (one boot): the demo's guest with stock modules of its own kernel
//! package (dummy, tun, loop) and the out-of-tree test module (`tools/test-module`, built here
//! against the kernel's headers) loaded at boot. `monitor lsmod -p` must equal the guest's own
//! `/proc/modules`; gdb must list the modules as libraries and load the test module's debug
//! file at its place; after the test module panics in its own code, `monitor bt` names its
//! functions `[dmastub_test]` and gdb's `bt` names them with their source lines.
//!
//! Needs QEMU, gdb, gcc/make, the kernel's headers (`linux-headers-RELEASE`) and its image
//! package (downloaded with `apt-get download`). The kernel is the fixture kernel when the full
//! suite set it up (`DMASTUB_FIXTURE_KERNEL`, with `DMASTUB_DWARF_VMLINUX` for gdb's `bt`), else
//! the pinned release's (6.1.0-56-amd64) from its package. Skips with a message when something
//! is missing, unless `DMASTUB_LIVE_REQUIRED` is set.

mod common;

use common::*;
use dmastub_testkit::child::{DmastubChild, GdbSession};
use dmastub_testkit::vm::{self, GuestOptions, LiveVm, VmConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const GDB_TIMEOUT: Duration = Duration::from_secs(120);
/// Stock modules of the kernel package, without dependencies (their `depends=` is empty).
const STOCK: &[(&str, &str)] =
    &[("dummy", "drivers/net/dummy.ko"), ("tun", "drivers/net/tun.ko"), ("loop", "drivers/block/loop.ko")];

/// Skips (or fails, when required) with `why`.
fn skip(why: &str) -> Option<()> {
    assert!(!live_required(), "live modules suite must run, but: {why}");
    eprintln!("SKIP: live modules: {why}");
    None
}

/// `make` of the test module against `headers`, in a copy of its source under `dir`.
fn build_test_module(headers: &Path, dir: &Path) -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/test-module");
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for f in ["Makefile", "dmastub_test.c"] {
        std::fs::copy(src.join(f), dir.join(f)).map_err(|e| format!("copying {f}: {e}"))?;
    }
    let out = Command::new("make")
        .arg("-C")
        .arg(dir)
        .arg(format!("KDIR={}", headers.display()))
        .output()
        .map_err(|e| format!("running make (apt-get install make gcc): {e}"))?;
    let ko = dir.join("dmastub_test.ko");
    if !out.status.success() || !ko.is_file() {
        return Err(format!(
            "building the test module failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(ko)
}

/// The release booted when the full suite did not set up its kernel: the one the project pins
/// (its headers are what CI installs).
const PINNED_RELEASE: &str = "6.1.0-56-amd64";

/// The stock modules' folder and the kernel from the kernel's image package, kept in the cache.
fn kernel_package(release: &str, cache: &Path) -> Result<(PathBuf, PathBuf), String> {
    let dir = cache.join(format!("modules-{release}"));
    let root = dir.join("lib/modules").join(release).join("kernel");
    let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
    if vmlinuz.is_file() && STOCK.iter().all(|(_, p)| root.join(p).is_file()) {
        return Ok((root, vmlinuz));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let package = format!("linux-image-{release}");
    let deb = vm::guest::download(&package, cache).map_err(|e| e.to_string())?;
    let mut members: Vec<String> =
        STOCK.iter().map(|(_, p)| format!("./lib/modules/{release}/kernel/{p}")).collect();
    members.push(format!("./boot/vmlinuz-{release}"));
    for m in &members {
        vm::guest::extract_from_deb(&deb, &dir, m).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_file(&deb);
    Ok((root, vmlinuz))
}

/// The line number of the line of `file` holding `marker`.
fn line_of(file: &Path, marker: &str) -> usize {
    let text = std::fs::read_to_string(file).expect("read the test module's source");
    text.lines().position(|l| l.contains(marker)).expect("marker in the test module's source") + 1
}

struct Setup {
    vm: LiveVm,
    build: PathBuf,
    stock: PathBuf,
    vmlinux: Option<PathBuf>,
    /// Whether `vmlinux` has DWARF (gdb's own `bt` through the kernel needs it).
    dwarf: bool,
}

fn setup(scratch: &Path) -> Option<Setup> {
    let missing = vm::missing_packages();
    if !missing.is_empty() {
        return skip(&format!("missing {missing:?}")).and(None);
    }
    // The fixture kernel when the full suite set it up, else the pinned release's package.
    let fixture = std::env::var_os("DMASTUB_FIXTURE_KERNEL").map(PathBuf::from).filter(|p| p.is_file());
    let release = match &fixture {
        Some(k) => match k.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix("vmlinuz-")) {
            Some(r) => r.to_string(),
            None => return skip(&format!("cannot tell the release of {}", k.display())).and(None),
        },
        None => PINNED_RELEASE.to_string(),
    };
    let headers = PathBuf::from(format!("/usr/src/linux-headers-{release}"));
    if !headers.join("Makefile").is_file() {
        return skip(&format!("no {} (apt-get install linux-headers-{release})", headers.display()))
            .and(None);
    }
    let build = scratch.join("test-module");
    let ko = match build_test_module(&headers, &build) {
        Ok(ko) => ko,
        Err(e) => return skip(&e).and(None),
    };
    let cache = vm::guest::default_cache_dir();
    let (stock, packaged) = match kernel_package(&release, &cache) {
        Ok(d) => d,
        Err(e) => return skip(&format!("the kernel package of {release}: {e}")).and(None),
    };
    let kernel = fixture.unwrap_or(packaged);
    let mut extra_files = Vec::new();
    let mut order = String::new();
    for (name, p) in STOCK {
        extra_files.push((format!("lib/modules/{name}.ko"), std::fs::read(stock.join(p)).unwrap()));
        order.push_str(&format!("{name}\n"));
    }
    extra_files.push(("lib/modules/dmastub_test.ko".to_string(), std::fs::read(&ko).unwrap()));
    order.push_str("dmastub_test\n");
    extra_files.push(("lib/modules/load-order".to_string(), order.into_bytes()));
    let opts = GuestOptions { kernel: Some(kernel), cache, extra_files, ..Default::default() };
    let mut progress = |line: &str| eprintln!("live-modules: {line}");
    let files = match vm::guest::prepare(&opts, &mut progress) {
        Ok(f) => f,
        Err(e) => return skip(&format!("cannot prepare the guest: {e}")).and(None),
    };
    let vm = LiveVm::boot(&files, &VmConfig::default(), &mut progress)
        .unwrap_or_else(|e| panic!("the live guest did not boot: {e}"));
    // gdb reads the libraries' symbols once it has the kernel's: the DWARF vmlinux, else the
    // fixture's symbol-only vmlinux of the same kernel.
    let (vmlinux, dwarf) = match dwarf_vmlinux() {
        Some(v) => (Some(v), true),
        None => (
            fixture_dir("linux-6.1-kaslr")
                .filter(|_| release == PINNED_RELEASE)
                .map(|d| unpacked(&d, "vmlinux-symbols.zst")),
            false,
        ),
    };
    Some(Setup { vm, build, stock, vmlinux, dwarf })
}

fn run(gdb: &mut GdbSession, command: &str) -> String {
    gdb.run(command, GDB_TIMEOUT).unwrap_or_else(|e| panic!("{command}: {e}"))
}

/// gdb with the kernel's symbols (when there is a DWARF vmlinux), the modules' files on its
/// solib-search-path, attached to `port`.
fn gdb(s: &Setup, port: u16) -> GdbSession {
    let mut gdb = GdbSession::start(s.vmlinux.as_deref()).expect("start gdb");
    let mut path: Vec<String> = vec![s.build.display().to_string()];
    for (_, p) in STOCK {
        if let Some(d) = s.stock.join(p).parent() {
            path.push(d.display().to_string());
        }
    }
    run(&mut gdb, &format!("set solib-search-path {}", path.join(":")));
    let out = run(&mut gdb, &format!("target remote 127.0.0.1:{port}"));
    assert!(out.contains("Remote debugging using"), "gdb did not attach: {out}");
    gdb
}

#[test]
fn modules_on_a_live_guest() {
    let scratch = Scratch::new("live-modules");
    let Some(mut s) = setup(&scratch.0) else { return };
    let console = s.vm.console();
    assert!(!console.contains("INSMOD-FAILED"), "a module did not load:\n{console}");

    let stub = DmastubChild::start(
        Path::new(BIN),
        &[
            "serve".into(),
            "--live".into(),
            s.vm.ram_path().display().to_string(),
            "--module-files".into(),
            s.build.display().to_string(),
            "--module-files".into(),
            s.stock.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = stub.port.expect("serve's port");

    // monitor lsmod -p equals the guest's own /proc/modules, line for line.
    let proc_modules = s.vm.request("modules").expect("the guest's /proc/modules");
    let mut g = gdb(&s, port);
    let ours = run(&mut g, "monitor lsmod -p");
    let ours: Vec<&str> = ours.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(ours, proc_modules, "monitor lsmod -p differs from the guest's /proc/modules");
    for (name, _) in STOCK {
        assert!(proc_modules.iter().any(|l| l.starts_with(&format!("{name} "))), "{name} not loaded");
    }
    let test_line =
        proc_modules.iter().find(|l| l.starts_with("dmastub_test ")).expect("dmastub_test loaded");
    assert!(test_line.ends_with("(OE)"), "an out-of-tree unsigned module taints O and E: {test_line}");
    // The command line reads the same over --live.
    let (ok, cli, err) = common::run(&["lsmod", "--proc", "--live", &s.vm.ram_path().display().to_string()]);
    assert!(ok, "dmastub lsmod --proc --live: {err}");
    assert_eq!(cli.lines().collect::<Vec<_>>(), proc_modules, "dmastub lsmod --proc --live");
    let table = run(&mut g, "monitor lsmod");
    assert!(table.lines().any(|l| l.starts_with("Module")), "{table}");

    // gdb's libraries: every module, the test module's debug file read at its place.
    let libs = run(&mut g, "info sharedlibrary");
    eprintln!("live-modules: monitor lsmod:\n{table}\ninfo sharedlibrary:\n{libs}");
    for name in ["dummy", "tun", "loop", "dmastub_test"] {
        assert!(libs.contains(&format!("{name}.ko")), "gdb lists no {name}.ko:\n{libs}");
    }
    let test_lib = libs.lines().find(|l| l.contains("dmastub_test.ko")).unwrap();
    if s.vmlinux.is_some() {
        assert!(test_lib.contains("Yes"), "gdb did not read dmastub_test.ko's symbols:\n{libs}");
    } else {
        eprintln!("SKIP (gdb symbols part): no vmlinux for gdb (DWARF or the fixture's symbols)");
    }
    drop(g);

    // Panic in the module's own code.
    let poker = s.vm.poke_module(Duration::from_secs(120)).expect("the test module's panic");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/test-module/dmastub_test.c");
    let (panic_line, outer_line) =
        (line_of(&src, "DMASTUB_TEST_PANIC_LINE"), line_of(&src, "DMASTUB_TEST_OUTER_LINE"));

    let (ok, bt, err) =
        common::run(&["bt", "--live", &s.vm.ram_path().display().to_string(), &poker.to_string()]);
    assert!(ok, "dmastub bt {poker}: {err}");
    eprintln!("live-modules: dmastub bt {poker}:\n{bt}");
    // (The compiler may put the call of dmastub_test_outer in dmastub_test_write.cold.)
    for f in ["dmastub_test_inner+", "dmastub_test_outer+", "dmastub_test_write"] {
        let line =
            bt.lines().find(|l| l.contains(f)).unwrap_or_else(|| panic!("no {f} in dmastub bt:\n{bt}"));
        assert!(line.ends_with("[dmastub_test]"), "{line}");
    }

    let mut g = gdb(&s, port);
    let out = run(&mut g, &format!("monitor bt {poker}"));
    assert!(out.contains("dmastub_test_inner+") && out.contains("[dmastub_test]"), "monitor bt:\n{out}");
    if !s.dwarf {
        eprintln!("SKIP (gdb bt part): no DWARF vmlinux to unwind the kernel's frames");
        return;
    }
    // The stop thread is the panicking task: gdb's bt goes through the module's frames with
    // their source lines.
    let bt = run(&mut g, "bt");
    eprintln!("live-modules: gdb bt:\n{bt}");
    assert!(
        bt.contains(&format!("dmastub_test.c:{panic_line}")),
        "no dmastub_test.c:{panic_line} in bt:\n{bt}"
    );
    assert!(
        bt.contains(&format!("dmastub_test.c:{outer_line}")),
        "no dmastub_test.c:{outer_line} in bt:\n{bt}"
    );
    assert!(bt.contains("dmastub_test_inner") && bt.contains("dmastub_test_outer"), "{bt}");
}
