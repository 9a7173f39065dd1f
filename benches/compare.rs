//! dmastub against the tools people use today, in one run on one machine and the same memory:
//!
//! 1. gdb's `dump binary memory` of 64 MiB: dmastub serving the fixture's raw image (physical
//!    mode, and virtual mode through the kernel's direct map) against gdbserver serving a local
//!    process that holds a copy of the same 64 MiB, gdb's own ceiling;
//! 2. the process list: `dmastub ps` against drgn and crash on the same ELF core, with the
//!    kernel's DWARF vmlinux for them (dmastub needs nothing). Each peer's PIDs are checked
//!    against dmastub's before it is timed; where crash's `ps` cannot read the task table (crash
//!    before 8.0.4 on this kernel), crash's walk of init_task's task list is timed instead;
//! 3. NetTLP reads: dmastub's client against libtlp's `tlpperf`, same emulator, same request size;
//! 4. finding the kernel with no hints: what `dmastub kernel` reads and how long it takes, against
//!    drgn opening the core with the DWARF vmlinux and printing the release.
//!
//! Every figure is a ratio to the peer measured in the same run (medians of interleaved runs),
//! with the absolute numbers beside it. It prints them, writes `docs/compare.svg` (a bar chart of
//! the ratios) and `target/compare.json`. A peer that is missing is reported as skipped, with how
//! to install it. Asserts nothing about time; the targets are printed as met or missed.
//!
//! ```sh
//! eval "$(tools/setup-full-tests.sh)"      # drgn and the DWARF vmlinux
//! apt-get install gdbserver crash          # Debian packages
//! LIBTLP_BIN=/path/to/libtlp/bin cargo bench --bench compare
//! cargo bench --bench compare -- dump ps     # only these (dump, ps, nettlp, discovery); no chart
//! ```
//!
//! Each comparison is one function returning a [`Comparison`], listed in `main`; a new one (QEMU's
//! gdbstub, a live RAM file) is one more function there. [`common::measure`] times any command
//! (wall time, CPU, peak RSS), [`dump_rounds`] times gdb dumps from any list of gdb servers.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/nettlp.rs"]
mod rates;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Bytes gdb dumps in the dump comparison.
const DUMP: u64 = 64 * MIB;
/// Where in physical memory the dumped range starts (the same bytes in virtual mode are at
/// page_offset_base + this).
const DUMP_PHYS: u64 = 16 * MIB;
const DUMP_ROUNDS: usize = 5;
const PS_ROUNDS: usize = 5;
/// crash takes seconds to load the DWARF vmlinux, so fewer of its runs.
const CRASH_ROUNDS: usize = 3;
const DISCOVERY_ROUNDS: usize = 5;
const NETTLP_ROUNDS: usize = 7;
const NETTLP_RUN: Duration = Duration::from_millis(1000);
/// tlpperf's run in seconds (its first per-second line is dropped).
const TLPPERF_SECONDS: u32 = 3;
/// A link of our own, so another NetTLP benchmark running beside this one does not collide.
const LINK: rates::Link =
    rates::Link { adapter: Ipv4Addr::new(127, 0, 79, 2), local: Ipv4Addr::new(127, 0, 79, 1) };
const FIXTURE: &str = "linux-6.1-kaslr";

/// One ratio of dmastub to a peer, turned so that above 1 means dmastub does better.
struct Figure {
    /// What is compared, e.g. "ps vs drgn: wall time".
    label: String,
    ratio: f64,
    /// What the ratio says when above 1: "faster", "less peak memory", "more MB/s".
    sense: &'static str,
    /// The peer's name, and dmastub's and the peer's absolute figures.
    peer: String,
    ours: String,
    theirs: String,
    /// The ratio the target asks for, and the target in words.
    target: Option<(f64, &'static str)>,
}

impl Figure {
    fn met(&self) -> Option<bool> {
        self.target.map(|(t, _)| self.ratio >= t)
    }

    fn ratio_text(&self) -> String {
        if self.ratio >= 1.0 {
            format!("{:.2}x {}", self.ratio, self.sense)
        } else {
            format!("{:.2}x ({:.2}x the other way)", self.ratio, 1.0 / self.ratio)
        }
    }

    fn json(&self) -> Value {
        json!({
            "label": self.label, "ratio": self.ratio, "sense": self.sense, "peer": self.peer,
            "dmastub_figure": self.ours, "peer_figure": self.theirs,
            "target": self.target.map(|(r, t)| json!({"ratio": r, "text": t, "met": self.ratio >= r})),
        })
    }
}

/// What one comparison found: its ratios, why any peer was skipped, its raw measurements.
struct Comparison {
    title: &'static str,
    figures: Vec<Figure>,
    skipped: Vec<String>,
    /// A line under the group's title in the chart (e.g. what discovery read).
    caption: Option<String>,
    data: Value,
}

impl Comparison {
    fn new(title: &'static str) -> Comparison {
        Comparison { title, figures: Vec::new(), skipped: Vec::new(), caption: None, data: json!({}) }
    }

    fn skip(&mut self, why: String) {
        println!("  skipped: {why}");
        self.skipped.push(why);
    }
}

/// One comparison: reads the fixture, measures dmastub and its peers, prints as it goes.
type Compare = fn(&Fixture) -> Comparison;

/// The memory every comparison reads: the public 6.1 image, unpacked.
struct Fixture {
    raw: PathBuf,
    elf: PathBuf,
    release: String,
    page_offset_base: u64,
    ram: u64,
}

fn main() {
    if std::env::var_os(HOLD_ENV).is_some() {
        return hold_memory();
    }
    let t0 = Instant::now();
    let machine = machine();
    let tools = tools();
    println!("dmastub against the tools people use today (cargo bench --bench compare)");
    println!(
        "machine: {} ({} cores), host kernel {}",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["host_kernel"].as_str().unwrap_or("?")
    );
    let Some(dir) = fixture_dir(FIXTURE) else {
        println!("SKIP: the comparisons read the {FIXTURE} fixture (set DMASTUB_FIXTURES)");
        return;
    };
    let truth = truth(&dir, "post-panic");
    let fx = Fixture {
        raw: unpacked(&dir, "post-panic.raw.zst"),
        elf: unpacked(&dir, "post-panic.elf.zst"),
        release: truth["kernel"]["release"].as_str().unwrap_or("?").to_string(),
        page_offset_base: hex(&truth["kaslr"]["page_offset_base"]),
        ram: truth["machine"]["mem_mib"].as_u64().unwrap_or(0) * MIB,
    };
    println!(
        "kernel image: {FIXTURE} post-panic (Linux {}, {} MiB RAM, KASLR), {} and {}",
        fx.release,
        fx.ram / MIB,
        fx.raw.display(),
        fx.elf.display()
    );
    for (name, version) in tools.as_object().into_iter().flatten() {
        println!("  {name}: {}", version.as_str().unwrap_or("not found"));
    }

    // `cargo bench --bench compare -- NAME...` runs only those comparisons (cargo adds `--bench`).
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let all: [(&str, Compare); 5] = [
        ("dump", compare_dump),
        ("live", compare_live_dump),
        ("ps", compare_ps),
        ("nettlp", compare_nettlp),
        ("discovery", compare_discovery),
    ];
    let comparisons: Vec<Comparison> = all
        .iter()
        .filter(|(name, _)| only.is_empty() || only.iter().any(|o| o == name))
        .map(|(_, f)| f(&fx))
        .collect();

    println!("\n== Ratios (dmastub / peer, above 1 = dmastub better) ==");
    for c in &comparisons {
        println!("{}:", c.title);
        for f in &c.figures {
            println!("  {:<46} {:<28} ({} vs {})", f.label, f.ratio_text(), f.ours, f.theirs);
        }
        for s in &c.skipped {
            println!("  skipped: {s}");
        }
    }
    println!("\n== Targets ==");
    for f in comparisons.iter().flat_map(|c| &c.figures) {
        if let (Some((_, text)), Some(met)) = (f.target, f.met()) {
            let verdict = if met { "met" } else { "MISSED" };
            println!("  {verdict:<7} {text}: {} ({})", f.ratio_text(), f.label);
        }
    }

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let svg_path = manifest.join("docs/compare.svg");
    let _ = std::fs::create_dir_all(manifest.join("docs"));
    let subtitle = format!(
        "{} ({} cores) · Linux {} image ({FIXTURE}, {} MiB RAM) · median of interleaved runs",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        fx.release,
        fx.ram / MIB
    );
    if !only.is_empty() {
        println!("\nchart: not written (only {only:?} ran; the chart shows a whole run)");
    } else {
        match std::fs::write(&svg_path, svg(&comparisons, &subtitle)) {
            Ok(()) => println!("\nchart: {}", svg_path.display()),
            Err(e) => println!("\nchart: could not write {}: {e}", svg_path.display()),
        }
    }
    let json_path = target_dir().join("compare.json");
    let report = json!({
        "command": "cargo bench --bench compare",
        "machine": machine,
        "image": {"fixture": FIXTURE, "snapshot": "post-panic", "release": fx.release, "ram_bytes": fx.ram,
                  "raw": fx.raw, "elf": fx.elf},
        "tools": tools,
        "comparisons": comparisons.iter().map(|c| json!({
            "title": c.title, "figures": c.figures.iter().map(Figure::json).collect::<Vec<_>>(),
            "skipped": c.skipped, "caption": c.caption, "measurements": c.data,
        })).collect::<Vec<_>>(),
        "seconds": t0.elapsed().as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    match std::fs::write(&json_path, text) {
        Ok(()) => println!("json:  {}", json_path.display()),
        Err(e) => println!("json:  could not write {}: {e}", json_path.display()),
    }
    println!("whole run: {:.0} s", t0.elapsed().as_secs_f64());
}

// ---- the machine and the tools ----------------------------------------------------------------

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({"cpu": cpu, "cores": cores, "host_kernel": host.trim()})
}

/// The first line `program ARGS` prints (stdout, else stderr), if it runs.
fn version(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().ok()?;
    let text = [&out.stdout[..], &out.stderr[..]].concat();
    String::from_utf8_lossy(&text).lines().map(str::trim).find(|l| !l.is_empty()).map(str::to_string)
}

fn tools() -> Value {
    json!({
        "gdb": version("gdb", &["--version"]),
        "gdbserver": version("gdbserver", &["--version"]),
        "drgn": have_drgn().then(|| version("drgn", &["--version"])).flatten(),
        "crash": version("crash", &["--version"]),
        "tlpperf": rates::tlpperf_path(),
        "dwarf_vmlinux": dwarf_vmlinux(),
    })
}

/// The cargo target folder this benchmark was built in (`target/` by default).
fn target_dir() -> PathBuf {
    // The bench runs as target/<profile>/deps/compare-<hash>.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: i64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The PIDs of a process listing: the first number of each line, after crash's `>` mark of an
/// active task (and the `pid = N` lines of crash's `list -S`).
fn pids(listing: &str) -> BTreeSet<u64> {
    listing
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_start_matches('>').trim();
            let l = l.strip_prefix("pid = ").unwrap_or(l);
            l.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// The medians of a command's runs.
struct Stats {
    wall: Duration,
    cpu: Duration,
    rss_kib: i64,
    runs: usize,
}

fn stats(runs: &[Measured]) -> Stats {
    Stats {
        wall: median(&runs.iter().map(|m| m.wall).collect::<Vec<_>>()),
        cpu: median(&runs.iter().map(|m| m.cpu).collect::<Vec<_>>()),
        rss_kib: median(&runs.iter().map(|m| m.peak_rss_kib).collect::<Vec<_>>()),
        runs: runs.len(),
    }
}

impl Stats {
    fn print(&self, what: &str) {
        println!(
            "  {what:<44} {:>10}  cpu {:>10}  peak {:>10}  ({} runs)",
            ms(self.wall),
            ms(self.cpu),
            mib(self.rss_kib),
            self.runs
        );
    }

    fn json(&self) -> Value {
        json!({"wall_seconds": self.wall.as_secs_f64(), "cpu_seconds": self.cpu.as_secs_f64(),
               "peak_rss_kib": self.rss_kib, "runs": self.runs})
    }

    /// Two figures, dmastub (`self`) against `peer`: wall time and peak memory, with a target
    /// ratio for each when there is one.
    fn against(
        &self,
        peer: &Stats,
        what: &str,
        name: &str,
        targets: [Option<(f64, &'static str)>; 2],
    ) -> [Figure; 2] {
        [
            Figure {
                label: format!("{what} vs {name}: wall time"),
                ratio: peer.wall.as_secs_f64() / self.wall.as_secs_f64(),
                sense: "faster",
                peer: name.split(' ').next().unwrap_or(name).into(),
                ours: ms(self.wall),
                theirs: ms(peer.wall),
                target: targets[0],
            },
            Figure {
                label: format!("{what} vs {name}: peak memory"),
                ratio: peer.rss_kib as f64 / self.rss_kib as f64,
                sense: "less peak memory",
                peer: name.split(' ').next().unwrap_or(name).into(),
                ours: mib(self.rss_kib),
                theirs: mib(peer.rss_kib),
                target: targets[1],
            },
        ]
    }
}

// ---- 1. gdb dump: dmastub against gdbserver ------------------------------------------------------

/// One gdb server the dump comparison runs gdb against: where, and which 64 MiB to dump.
struct DumpServer {
    name: String,
    port: u16,
    start: u64,
    /// gdb commands before the dump (QEMU's gdbstub: its physical-memory mode).
    setup: Vec<String>,
}

/// The medians of one server's dumps.
struct DumpStats {
    /// Seconds the `dump binary memory` command took inside gdb (connection excluded).
    dump: f64,
    /// The whole gdb process: wall time and peak RSS.
    wall: Duration,
    gdb_rss_kib: i64,
}

impl DumpStats {
    fn mb_per_s(&self) -> f64 {
        DUMP as f64 / 1e6 / self.dump
    }
}

/// gdb's `dump binary memory` of DUMP bytes from each server, `rounds` times, the servers in a
/// different order each round; the same gdb and the same commands for all (only the port and
/// the address differ). Each dump's size is checked; returns the medians and the files of the
/// last round (for the caller to check their bytes), or an error saying what went wrong.
fn dump_rounds(servers: &[DumpServer], rounds: usize, out: &Path) -> Result<Vec<DumpStats>, String> {
    let mut samples: Vec<Vec<(f64, Duration, i64)>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let s = &servers[i];
            let file = out.join(format!("dump-{i}.bin"));
            let _ = std::fs::remove_file(&file);
            let dump = format!("dump binary memory {} {:#x} {:#x}", file.display(), s.start, s.start + DUMP);
            let timed = format!(
                "python import time; t0 = time.perf_counter(); gdb.execute({dump:?}); \
                 print('DUMP-SECONDS %.6f' % (time.perf_counter() - t0))"
            );
            let mut commands: Vec<&str> = s.setup.iter().map(String::as_str).collect();
            commands.extend([timed.as_str(), "disconnect"]);
            let m = measure(&mut gdb_command(s.port, None, &commands), "");
            let secs = m
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("DUMP-SECONDS ")?.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("gdb's dump from {} failed: {}{}", s.name, m.stdout, m.stderr))?;
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            if len != DUMP {
                return Err(format!("gdb's dump from {} wrote {len} bytes, not {DUMP}", s.name));
            }
            samples[i].push((secs, m.wall, m.peak_rss_kib));
        }
    }
    Ok(samples
        .iter()
        .map(|v| DumpStats {
            dump: median(&v.iter().map(|s| s.0).collect::<Vec<_>>()),
            wall: median(&v.iter().map(|s| s.1).collect::<Vec<_>>()),
            gdb_rss_kib: median(&v.iter().map(|s| s.2).collect::<Vec<_>>()),
        })
        .collect())
}

/// Whether two files hold the same bytes (read a MiB at a time, so this process stays small: a
/// child's peak RSS starts from ours, see [`common::measure`]).
fn files_equal(a: &Path, b: &Path) -> bool {
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else { return false };
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let (na, nb) = (read_full(&mut fa, &mut ba), read_full(&mut fb, &mut bb));
        if na != nb || ba[..na] != bb[..nb] {
            return false;
        }
        if na == 0 {
            return true;
        }
    }
}

/// Fills `buf` from `r` as far as the file goes; the bytes read.
fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// The environment variable that turns this benchmark's binary into the memory holder; its value
/// is `OFFSET:FILE`, the bytes to hold.
const HOLD_ENV: &str = "DMASTUB_COMPARE_HOLD";

/// The holder process for gdbserver: reads DUMP bytes of FILE at OFFSET into memory of its own
/// (every page touched), prints their address and waits for stdin to close. The bytes are the
/// ones dmastub serves, so both servers send the same packets (gdbserver run-length encodes its
/// replies, so memory of zeros would flatter it).
fn hold_memory() {
    let spec = std::env::var(HOLD_ENV).unwrap_or_default();
    let (offset, file) = spec.split_once(':').unwrap_or(("0", ""));
    let mut buf = vec![0u8; DUMP as usize];
    let read = std::fs::File::open(file).and_then(|f| {
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut buf, offset.parse().unwrap_or(0))
    });
    if let Err(e) = read {
        println!("cannot read {DUMP} bytes at {offset} of {file}: {e}");
        return;
    }
    println!("{:#x}", buf.as_ptr() as u64);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    std::hint::black_box(&buf);
}

/// gdbserver attached to a process holding DUMP bytes of `file` at `offset`; both stopped when
/// dropped.
struct GdbServer {
    holder: Child,
    server: Child,
    port: u16,
    buffer: u64,
}

impl GdbServer {
    fn start(file: &Path, offset: u64) -> Result<GdbServer, String> {
        let exe = std::env::current_exe().map_err(|e| format!("where is this benchmark? {e}"))?;
        let mut holder = Command::new(exe)
            .env(HOLD_ENV, format!("{offset}:{}", file.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the memory holder: {e}"))?;
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().expect("stdout")).read_line(&mut line);
        let Ok(buffer) = u64::from_str_radix(line.trim().trim_start_matches("0x"), 16) else {
            let _ = holder.kill();
            return Err(format!("the memory holder printed {line:?}, not its address"));
        };
        let mut server = match Command::new("gdbserver")
            .args(["--attach", "127.0.0.1:0", &holder.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(s) => s,
            Err(e) => {
                let _ = holder.kill();
                return Err(format!("start gdbserver: {e}"));
            }
        };
        let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
        let mut said = String::new();
        let port = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(p) = l.strip_prefix("Listening on port ") {
                        break p.trim().parse::<u16>().ok();
                    }
                    said.push_str(&l);
                    said.push('\n');
                }
                _ => break None,
            }
        };
        // Keep draining: gdbserver logs every connection.
        std::thread::spawn(move || for _ in lines {});
        let mut g = GdbServer { holder, server, port: 0, buffer };
        match port {
            Some(p) => g.port = p,
            None => return Err(format!("gdbserver --attach did not listen; it said:\n{said}")),
        }
        Ok(g)
    }
}

impl Drop for GdbServer {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn compare_dump(fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("gdb dump binary memory, 64 MiB");
    println!("\n== 1. {} ==", c.title);
    if version("gdb", &["--version"]).is_none() {
        c.skip("gdb is not installed (apt-get install gdb)".into());
        return c;
    }
    let raw = fx.raw.to_str().expect("UTF-8 path");
    // Physical mode: no kernel, plain memory; virtual mode: the kernel found with no hints, its
    // page tables. gdb sends the same commands to both.
    let phys = Stub::start(&["--image", raw, "--no-linux"]);
    let virt = Stub::start(&["--image", raw]);
    let mut servers = vec![
        DumpServer { name: "dmastub, phys mode".into(), port: phys.port, start: DUMP_PHYS, setup: vec![] },
        DumpServer {
            name: "dmastub, virt mode".into(),
            port: virt.port,
            start: fx.page_offset_base + DUMP_PHYS,
            setup: vec![],
        },
    ];
    let gdbserver = match version("gdbserver", &["--version"]) {
        None => {
            c.skip("gdbserver is not installed (apt-get install gdbserver)".into());
            None
        }
        Some(_) => match GdbServer::start(&fx.raw, DUMP_PHYS) {
            Ok(g) => {
                servers.push(DumpServer {
                    name: "gdbserver".into(),
                    port: g.port,
                    start: g.buffer,
                    setup: vec![],
                });
                Some(g)
            }
            Err(e) => {
                c.skip(format!("gdbserver: {e}"));
                None
            }
        },
    };
    let out = std::env::temp_dir().join(format!("dmastub-compare-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&out);
    println!(
        "  phys {DUMP_PHYS:#x}, virt {:#x} (direct map: the same bytes){}; median of {DUMP_ROUNDS} rounds",
        fx.page_offset_base + DUMP_PHYS,
        gdbserver.as_ref().map_or(String::new(), |g| format!(", gdbserver's process at {:#x}", g.buffer))
    );
    let stats = match dump_rounds(&servers, DUMP_ROUNDS, &out) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&out);
            c.skip(e);
            return c;
        }
    };
    // The last round's files hold the same bytes: phys, virt (the direct map) and the holder's copy.
    let same = |i: usize, j: usize| {
        files_equal(&out.join(format!("dump-{i}.bin")), &out.join(format!("dump-{j}.bin")))
    };
    let (virt_ok, holder_ok) = (same(0, 1), gdbserver.is_none() || same(0, 2));
    let _ = std::fs::remove_dir_all(&out);
    if !virt_ok || !holder_ok {
        c.skip(format!("the dumps differ (phys == virt: {virt_ok}, phys == gdbserver's: {holder_ok})"));
        return c;
    }
    let mut data = serde_json::Map::new();
    for (s, st) in servers.iter().zip(&stats) {
        println!(
            "  {:<20} dump {:>7.1} ms  {:>6.1} MB/s   whole gdb run {:>9}, gdb peak {}",
            s.name,
            st.dump * 1e3,
            st.mb_per_s(),
            ms(st.wall),
            mib(st.gdb_rss_kib)
        );
        data.insert(
            s.name.clone(),
            json!({"dump_seconds": st.dump, "mb_per_s": st.mb_per_s(), "gdb_wall_seconds": st.wall.as_secs_f64(),
                   "gdb_peak_rss_kib": st.gdb_rss_kib, "start": format!("{:#x}", s.start)}),
        );
    }
    c.data = Value::Object(data);
    if let Some(peer) = stats.get(2) {
        println!(
            "  (a whole gdb run with gdbserver also loads the symbols of the process it debugs, this \
             benchmark's binary; the ratios are of the dump command alone)"
        );
        for (mode, ours) in [("phys", &stats[0]), ("virt", &stats[1])] {
            c.figures.push(Figure {
                label: format!("{mode} mode vs gdbserver: MB/s"),
                ratio: ours.mb_per_s() / peer.mb_per_s(),
                sense: "more MB/s",
                peer: "gdbserver".into(),
                ours: format!("{:.1} MB/s", ours.mb_per_s()),
                theirs: format!("{:.1} MB/s", peer.mb_per_s()),
                target: Some((1.0 / 1.1, "dump within 10% of gdbserver")),
            });
        }
        c.caption = Some(format!(
            "the same 64 MiB of the image through each server to gdb 13.1; time of the dump command in gdb, \
             median of {DUMP_ROUNDS}"
        ));
    }
    drop(gdbserver);
    c
}

/// A free TCP port on loopback (bound and released: QEMU's -gdb takes a port, not port 0).
fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).ok()
}

/// The same dump from a live VM: QEMU's own gdbstub (physical mode, `Qqemu.PhyMemMode:1`)
/// against dmastub serving the VM's RAM file (`serve --live`), phys and virt, on the demo's
/// guest. The guest is panicked and paused first, so that every server dumps the same bytes.
fn compare_live_dump(_fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("gdb dump binary memory, 64 MiB, live VM");
    println!("\n== 1b. {} ==", c.title);
    let missing = dmastub_testkit::vm::missing_packages();
    if !missing.is_empty() {
        c.skip(format!("the live VM needs {} (apt-get install {})", missing.join(", "), missing.join(" ")));
        return c;
    }
    let opts = dmastub_testkit::vm::GuestOptions {
        cache: dmastub_testkit::vm::guest::default_cache_dir(),
        ..Default::default()
    };
    let mut progress = |line: &str| println!("  .. {line}");
    let files = match dmastub_testkit::vm::guest::prepare(&opts, &mut progress) {
        Ok(f) => f,
        Err(e) => {
            c.skip(format!("cannot prepare the guest: {e}"));
            return c;
        }
    };
    let Some(qemu_port) = free_port() else {
        c.skip("no free port for QEMU's gdbstub".into());
        return c;
    };
    let cfg = dmastub_testkit::vm::VmConfig { qemu_gdb_port: Some(qemu_port), ..Default::default() };
    let mut vm = match dmastub_testkit::vm::LiveVm::boot(&files, &cfg, &mut progress) {
        Ok(vm) => vm,
        Err(e) => {
            c.skip(format!("the guest did not boot: {e}"));
            return c;
        }
    };
    if let Err(e) = vm.panic(Duration::from_secs(120)).and_then(|_| vm.set_running(false)) {
        c.skip(format!("could not panic and pause the guest: {e}"));
        return c;
    }
    let ram = vm.ram_path().to_str().expect("UTF-8 path").to_string();
    let kernel = Command::new(BIN).args(["kernel", "--live", &ram]).output();
    let page_offset_base = kernel.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
            let v = l.strip_prefix("page_offset_base")?.split_whitespace().next()?;
            u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
        })
    });
    let Some(page_offset_base) = page_offset_base else {
        c.skip("dmastub kernel --live found no page_offset_base".into());
        return c;
    };
    println!(
        "  guest: {} under QEMU ({}), {} MiB RAM file; panicked and paused; QEMU's gdbstub on port {qemu_port}",
        vm.report.release, vm.accel, cfg.mem_mib
    );
    let phys = Stub::start(&["--live", &ram, "--no-linux"]);
    let virt = Stub::start(&["--live", &ram]);
    let servers = vec![
        DumpServer {
            name: "QEMU gdbstub, phys".into(),
            port: qemu_port,
            start: DUMP_PHYS,
            setup: vec!["maint packet Qqemu.PhyMemMode:1".into()],
        },
        DumpServer { name: "dmastub live, phys".into(), port: phys.port, start: DUMP_PHYS, setup: vec![] },
        DumpServer {
            name: "dmastub live, virt".into(),
            port: virt.port,
            start: page_offset_base + DUMP_PHYS,
            setup: vec![],
        },
    ];
    let out = std::env::temp_dir().join(format!("dmastub-compare-live-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&out);
    let stats = dump_rounds(&servers, DUMP_ROUNDS, &out);
    let read = |i: usize| std::fs::read(out.join(format!("dump-{i}.bin"))).unwrap_or_default();
    let (qemu_bytes, phys_bytes, virt_bytes) = (read(0), read(1), read(2));
    let _ = std::fs::remove_dir_all(&out);
    let stats = match stats {
        Ok(s) => s,
        Err(e) => {
            c.skip(e);
            return c;
        }
    };
    let pages_equal = qemu_bytes.chunks(4096).zip(phys_bytes.chunks(4096)).filter(|(a, b)| a == b).count();
    let pages = (DUMP / 4096) as usize;
    println!(
        "  same bytes: dmastub phys == virt: {}; QEMU == dmastub in {pages_equal} of {pages} pages",
        phys_bytes == virt_bytes
    );
    if phys_bytes != virt_bytes || pages_equal * 100 < pages * 99 {
        c.skip(format!(
            "the dumps differ (dmastub phys == virt: {}, QEMU and dmastub agree on {pages_equal} of {pages} pages)",
            phys_bytes == virt_bytes
        ));
        return c;
    }
    let mut data = serde_json::Map::new();
    for (s, st) in servers.iter().zip(&stats) {
        println!(
            "  {:<20} dump {:>7.1} ms  {:>6.1} MB/s   whole gdb run {:>9}",
            s.name,
            st.dump * 1e3,
            st.mb_per_s(),
            ms(st.wall)
        );
        data.insert(s.name.clone(), json!({"dump_seconds": st.dump, "mb_per_s": st.mb_per_s(), "gdb_wall_seconds": st.wall.as_secs_f64()}));
    }
    data.insert("accel".into(), json!(vm.accel));
    c.data = Value::Object(data);
    c.caption = Some(format!(
        "the demo's guest ({}, {}), panicked and paused; QEMU's gdbstub in physical mode vs dmastub on its RAM file",
        vm.report.release, vm.accel
    ));
    for (mode, ours) in [("phys", &stats[1]), ("virt", &stats[2])] {
        c.figures.push(Figure {
            label: format!("live {mode} vs QEMU gdbstub: dump throughput"),
            ratio: ours.mb_per_s() / stats[0].mb_per_s(),
            sense: "more MB/s",
            peer: "QEMU gdbstub".into(),
            ours: format!("{:.1} MB/s", ours.mb_per_s()),
            theirs: format!("{:.1} MB/s", stats[0].mb_per_s()),
            target: Some((1.0, "dump at least as fast as QEMU's gdbstub")),
        });
    }
    c
}

// ---- 2. the process list: dmastub ps against drgn and crash --------------------------------------

/// How crash is asked for the process list: `ps`, or (when its `ps` cannot read this kernel's
/// task table) a walk of init_task's task list.
const CRASH_PS: &str = "ps\nexit\n";
const CRASH_LIST: &str = "list task_struct.tasks -S task_struct.pid,comm -h init_task\nexit\n";

fn compare_ps(fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("process list");
    println!("\n== 2. {} ==", c.title);
    let ours_cmd = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["ps", "--image"]).arg(&fx.elf);
        cmd
    };
    let first = measure(&mut ours_cmd(), "");
    let want = pids(&first.stdout);
    if !first.success || want.is_empty() {
        c.skip(format!("dmastub ps --image {} failed: {}", fx.elf.display(), first.stderr.trim()));
        return c;
    }
    println!("  dmastub ps --image {}: {} tasks", fx.elf.display(), want.len());
    let vmlinux = dwarf_vmlinux();
    let setup = "eval \"$(tools/setup-full-tests.sh)\" installs drgn 0.3.0 in a venv, fetches Debian's \
                 DWARF vmlinux and sets PATH and DMASTUB_DWARF_VMLINUX";
    let vm = match &vmlinux {
        Some(v) => v.clone(),
        None => {
            c.skip(format!(
                "drgn and crash need the kernel's DWARF vmlinux: DMASTUB_DWARF_VMLINUX is unset ({setup})"
            ));
            return c;
        }
    };
    // Each peer: its command, its stdin, and whether its listing has dmastub's PIDs.
    let drgn = if !have_drgn() {
        c.skip(format!("drgn is not on PATH ({setup})"));
        None
    } else {
        let m = measure(&mut drgn_command(&fx.elf, &vm, DRGN_PS), "");
        let got = pids(&m.stdout);
        if same_tasks(&want, &got) {
            println!(
                "  drgn for_each_task: {} tasks, the same PIDs (it does not visit PID 0, the idle task)",
                got.len()
            );
            Some(m)
        } else {
            c.skip(format!("drgn's list has other PIDs than dmastub's: {}", set_diff(&want, &got)));
            None
        }
    };
    let crash_cmd = || {
        let mut cmd = Command::new("crash");
        cmd.arg("-s").arg(&vm).arg(&fx.elf);
        cmd
    };
    let mut crash: Option<(Measured, &str, &str)> = None;
    if version("crash", &["--version"]).is_none() {
        c.skip("crash is not installed (apt-get install crash)".into());
    } else {
        let m = measure(&mut crash_cmd(), CRASH_PS);
        let got = pids(&m.stdout);
        if same_tasks(&want, &got) {
            println!("  crash ps: {} tasks, the same PIDs", got.len());
            crash = Some((m, CRASH_PS, "ps"));
        } else {
            let why = if format!("{}{}", m.stdout, m.stderr).contains("not found in PID hash") {
                " (crash before 8.0.4 reads no task table from a kernel whose struct pid ends in a flexible \
                 numbers[], as this 6.1 stable kernel's does; crash commit 8858006)"
            } else {
                ""
            };
            let note = format!(
                "crash's ps listed {} of dmastub's {} PIDs{why}; timing crash's walk of init_task's task list \
                 instead (list task_struct.tasks -S task_struct.pid,comm -h init_task)",
                got.len(),
                want.len()
            );
            println!("  note: {note}");
            c.data["crash_note"] = json!(note);
            c.data["crash_ps_listed"] = json!(got.len());
            let m = measure(&mut crash_cmd(), CRASH_LIST);
            let got = pids(&m.stdout);
            if same_tasks(&want, &got) {
                println!("  crash list: {} tasks, the same PIDs", got.len());
                crash = Some((m, CRASH_LIST, "list -S pid,comm"));
            } else {
                c.skip(format!("crash's task list has other PIDs than dmastub's: {}", set_diff(&want, &got)));
            }
        }
    }
    // The runs that checked the PIDs are the first samples; then the rest, interleaved.
    let mut ours = vec![first];
    let mut theirs_drgn: Vec<Measured> = drgn.into_iter().collect();
    let (crash, crash_input, crash_how) = match crash {
        Some((m, input, how)) => (vec![m], input, how),
        None => (Vec::new(), "", ""),
    };
    let mut theirs_crash = crash;
    for round in 1..PS_ROUNDS {
        ours.push(measure(&mut ours_cmd(), ""));
        if !theirs_drgn.is_empty() {
            theirs_drgn.push(measure(&mut drgn_command(&fx.elf, &vm, DRGN_PS), ""));
        }
        if !theirs_crash.is_empty() && round < CRASH_ROUNDS {
            theirs_crash.push(measure(&mut crash_cmd(), crash_input));
        }
    }
    let ours = stats(&ours);
    ours.print("dmastub ps, no hints");
    c.data["dmastub"] = ours.json();
    c.data["dmastub"]["tasks"] = json!(want.len());
    let crash_name = if crash_input == CRASH_LIST { "crash (task-list walk)" } else { "crash" };
    for (peer, name, runs, how) in [
        ("drgn", "drgn", &theirs_drgn, "drgn for_each_task, DWARF vmlinux".to_string()),
        ("crash", crash_name, &theirs_crash, format!("crash {crash_how}, DWARF vmlinux")),
    ] {
        if runs.is_empty() {
            continue;
        }
        let theirs = stats(runs);
        theirs.print(&how);
        // drgn indexes DWARF on every CPU, so its wall time depends on whether the machine is idle.
        println!(
            "    CPU time {:.1}x dmastub's, wall time {:.1}x",
            theirs.cpu.as_secs_f64() / ours.cpu.as_secs_f64(),
            theirs.wall.as_secs_f64() / ours.wall.as_secs_f64()
        );
        c.data[peer] = theirs.json();
        c.data[peer]["how"] = json!(how);
        c.figures.extend(ours.against(
            &theirs,
            "ps",
            name,
            [Some((10.0, "ps at least 10x faster")), Some((10.0, "ps with a tenth of the peak memory"))],
        ));
    }
    c.caption = Some(match c.data.get("crash_ps_listed") {
        Some(n) => format!(
            "the same ELF core, whole processes, {} tasks; {}'s ps lists {n} of them on this kernel, so crash \
             walks init_task's list",
            want.len(),
            version("crash", &["--version"]).unwrap_or_default()
        ),
        None => format!(
            "the same ELF core, whole processes, {} tasks; drgn and crash with the DWARF vmlinux",
            want.len()
        ),
    });
    c
}

/// Whether a peer listed dmastub's tasks. PID 0 aside: drgn's for_each_task starts after
/// init_task (the idle task of CPU 0), which dmastub and crash list.
fn same_tasks(want: &BTreeSet<u64>, got: &BTreeSet<u64>) -> bool {
    want.iter().filter(|&&p| p != 0).eq(got.iter().filter(|&&p| p != 0))
}

fn set_diff(want: &BTreeSet<u64>, got: &BTreeSet<u64>) -> String {
    let missing: Vec<_> = want.difference(got).collect();
    let extra: Vec<_> = got.difference(want).collect();
    format!("{} PIDs, missing {missing:?}, extra {extra:?}", got.len())
}

// ---- 3. NetTLP: dmastub's client against libtlp's tlpperf -------------------------------------

fn compare_nettlp(fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("NetTLP reads over loopback");
    println!("\n== 3. {} ==", c.title);
    let Some(tlpperf) = rates::tlpperf_path() else {
        c.skip(
            "libtlp's tlpperf not found: build libtlp and its apps (https://github.com/NetTLP/libtlp, outside \
             this repository) and set LIBTLP_BIN to the folder holding tlpperf (or LIBTLP_TLPPERF to tlpperf)"
                .into(),
        );
        return c;
    };
    let emulator = Emulator::start(fx.raw.to_str().expect("UTF-8 path"), &LINK.adapter.to_string());
    let pid = emulator.pid();
    println!(
        "  emulator at {} serving the raw image; tlpperf -N 1 (one read at a time, {TLPPERF_SECONDS} s), \
         dmastub MRRS 2048 like tlpperf's requests ({NETTLP_RUN:?}); median of {NETTLP_ROUNDS} rounds (and their range)",
        LINK.adapter
    );
    let mut data = serde_json::Map::new();
    // tlpperf's own request size; smaller reads are in `cargo bench --bench nettlp`.
    for size in [2048usize] {
        let reads = rates::Reads { start: DUMP_PHYS, region: 32 * MIB, size };
        // dmastub with 16 tags, with 1, and tlpperf, interleaved.
        let mut runs: [Vec<rates::Rate>; 3] = Default::default();
        for _ in 0..NETTLP_ROUNDS {
            runs[0].push(rates::dmastub_rate(LINK, reads, 16, 2048, NETTLP_RUN, pid));
            runs[2].extend(rates::tlpperf_rate(&tlpperf, LINK, reads, TLPPERF_SECONDS, pid));
            runs[1].push(rates::dmastub_rate(LINK, reads, 1, 2048, NETTLP_RUN, pid));
        }
        if runs[2].is_empty() {
            c.skip(format!("tlpperf ({tlpperf}) printed no rates at {size} B"));
            continue;
        }
        let mb: Vec<Vec<f64>> = runs.iter().map(|v| v.iter().map(|r| r.mb_per_s).collect()).collect();
        // The emulator's CPU use meanwhile: near 100% means it, not the client, set the pace.
        let cpu: Vec<Vec<f64>> = runs.iter().map(|v| v.iter().map(|r| r.emulator_cpu).collect()).collect();
        let (ours16, ours1, peer) = (median(&mb[0]), median(&mb[1]), median(&mb[2]));
        let spread = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            format!("{lo:.0}-{hi:.0}")
        };
        println!(
            "  {size:>5} B reads, MB/s: dmastub 16 tags {ours16:>6.1} ({}), 1 tag {ours1:>6.1} ({}); tlpperf {peer:>6.1} ({})",
            spread(&mb[0]),
            spread(&mb[1]),
            spread(&mb[2])
        );
        println!(
            "  emulator CPU meanwhile (median): {:.0}% / {:.0}% / {:.0}%",
            median(&cpu[0]) * 100.0,
            median(&cpu[1]) * 100.0,
            median(&cpu[2]) * 100.0
        );
        data.insert(
            format!("{size}"),
            json!({"dmastub_16_tags_mb_per_s": ours16, "dmastub_1_tag_mb_per_s": ours1, "tlpperf_mb_per_s": peer,
                   "runs": {"dmastub_16_tags": mb[0], "dmastub_1_tag": mb[1], "tlpperf": mb[2]},
                   "emulator_cpu": {"dmastub_16_tags": cpu[0], "dmastub_1_tag": cpu[1], "tlpperf": cpu[2]}}),
        );
        for (tags, ours) in [(16, ours16), (1, ours1)] {
            c.figures.push(Figure {
                label: format!(
                    "{size} B reads, {tags} tag{} vs tlpperf: MB/s",
                    if tags > 1 { "s" } else { "" }
                ),
                ratio: ours / peer,
                sense: "more MB/s",
                peer: "tlpperf".into(),
                ours: format!("{ours:.1} MB/s"),
                theirs: format!("{peer:.1} MB/s"),
                target: None,
            });
        }
    }
    c.caption = Some(format!(
        "one dmastub nettlp-emulator on loopback; libtlp's tlpperf -N 1 against dmastub's client, MRRS 2048, \
         median of {NETTLP_ROUNDS}"
    ));
    c.data = Value::Object(data);
    drop(emulator);
    c
}

// ---- 4. finding the kernel with no hints --------------------------------------------------------

fn compare_discovery(fx: &Fixture) -> Comparison {
    let mut c = Comparison::new("knowing the kernel");
    println!("\n== 4. {} ==", c.title);
    let kernel = |image: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.args(["kernel", "--image"]).arg(image);
        cmd
    };
    let script = "print(prog['init_uts_ns'].name.release.string_().decode())";
    let vmlinux = dwarf_vmlinux();
    let drgn_ok = vmlinux.is_some() && have_drgn();
    if !drgn_ok {
        c.skip(
            "drgn (on PATH) and DMASTUB_DWARF_VMLINUX are needed for the peer: \
             eval \"$(tools/setup-full-tests.sh)\""
                .into(),
        );
    }
    let mut runs: [Vec<Measured>; 3] = Default::default();
    let mut read_bytes = [0u64; 2];
    for _ in 0..DISCOVERY_ROUNDS {
        for (i, image) in [&fx.raw, &fx.elf].into_iter().enumerate() {
            let m = measure(&mut kernel(image), "");
            if !m.stdout.contains(&fx.release) {
                c.skip(format!(
                    "dmastub kernel --image {} did not find {}: {}",
                    image.display(),
                    fx.release,
                    m.stderr
                ));
                return c;
            }
            read_bytes[i] = m
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix("discovery read ")?.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            runs[i].push(m);
        }
        if let (true, Some(v)) = (drgn_ok, &vmlinux) {
            let m = measure(&mut drgn_command(&fx.elf, v, script), "");
            if m.stdout.trim() != fx.release {
                c.skip(format!("drgn printed {:?}, not the release {}", m.stdout.trim(), fx.release));
                return c;
            }
            runs[2].push(m);
        }
    }
    let mut data = serde_json::Map::new();
    let ours = [stats(&runs[0]), stats(&runs[1])];
    for (i, what) in ["raw", "elf"].into_iter().enumerate() {
        let frac = read_bytes[i] as f64 / fx.ram as f64;
        ours[i].print(&format!("dmastub kernel --image post-panic.{what}"));
        println!(
            "    read {:.2} MiB of target memory = {:.2}% of its {} MiB RAM",
            read_bytes[i] as f64 / MIB as f64,
            frac * 100.0,
            fx.ram / MIB
        );
        let mut j = ours[i].json();
        j["bytes_read"] = json!(read_bytes[i]);
        j["fraction_of_ram"] = json!(frac);
        data.insert(format!("dmastub_{what}"), j);
    }
    c.caption = Some(format!(
        "dmastub kernel, no hints: read {:.1} MiB = {:.1}% of the {} MiB RAM (raw image) in {}; \
         drgn: ELF core + DWARF vmlinux, prints the release",
        read_bytes[0] as f64 / MIB as f64,
        read_bytes[0] as f64 / fx.ram as f64 * 100.0,
        fx.ram / MIB,
        ms(ours[0].wall)
    ));
    if !runs[2].is_empty() {
        let theirs = stats(&runs[2]);
        theirs.print("drgn -c post-panic.elf -s vmlinux (release)");
        data.insert("drgn".into(), theirs.json());
        // The same file for both: the ELF core.
        c.figures.extend(ours[1].against(&theirs, "kernel, no hints,", "drgn", [None, None]));
    }
    c.data = Value::Object(data);
    c
}

// ---- the chart ------------------------------------------------------------------------------------

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A horizontal bar chart of every ratio on a log scale, one group per comparison: bars to the
/// right of 1x are dmastub's lead, to the left its lag; a dashed mark is the target.
fn svg(comparisons: &[Comparison], subtitle: &str) -> String {
    const W: f64 = 1030.0;
    const X0: f64 = 430.0;
    const X1: f64 = 900.0;
    const ROW: f64 = 36.0;
    // A white outline under text that crosses the grid lines.
    const HALO: &str = "stroke=\"#fff\" stroke-width=\"4\" paint-order=\"stroke\"";
    let ratios: Vec<f64> = comparisons
        .iter()
        .flat_map(|c| &c.figures)
        .map(|f| f.ratio)
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    let lo = ratios.iter().fold(0.5f64, |a, &r| a.min(r / 1.5)).log10().floor();
    let hi = ratios.iter().fold(2.0f64, |a, &r| a.max(r * 1.5)).log10().ceil();
    let x = |r: f64| X0 + (r.max(1e-9).log10() - lo) / (hi - lo) * (X1 - X0);
    let mut body = String::new();
    let mut y = 96.0;
    for c in comparisons {
        body += &format!(
            "<text x=\"16\" y=\"{:.0}\" font-size=\"15\" font-weight=\"bold\" {HALO}>{}</text>\n",
            y + 4.0,
            esc(c.title)
        );
        y += 12.0;
        if let Some(cap) = &c.caption {
            body += &format!(
                "<text x=\"16\" y=\"{:.0}\" font-size=\"12\" fill=\"#444\" {HALO}>{}</text>\n",
                y + 8.0,
                esc(cap)
            );
            y += 18.0;
        }
        for f in &c.figures {
            let (top, bar_h) = (y + 6.0, 16.0);
            let (a, b) = (x(1.0).min(x(f.ratio)), x(1.0).max(x(f.ratio)));
            let color = if f.ratio >= 1.0 { "#2e7d32" } else { "#c62828" };
            body += &format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"13\" text-anchor=\"end\">{}</text>\n",
                X0 - 10.0,
                top + 12.0,
                esc(&f.label)
            );
            body += &format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" fill=\"#666\" text-anchor=\"end\">dmastub {} · {} {}</text>\n",
                X0 - 10.0,
                top + 26.0,
                esc(&f.ours),
                esc(&f.peer),
                esc(&f.theirs)
            );
            body += &format!(
                "<rect x=\"{a:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\n",
                (b - a).max(1.0)
            );
            if let Some((t, _)) = f.target {
                let met = if f.ratio >= t { "met" } else { "missed" };
                body += &format!(
                    "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#111\" stroke-width=\"2\" \
                     stroke-dasharray=\"3,2\"><title>target {t}x: {met}</title></line>\n",
                    x(t),
                    top - 3.0,
                    top + bar_h + 3.0
                );
            }
            let tag = match f.met() {
                Some(true) => " ✓ target",
                Some(false) => " ✗ target missed",
                None => "",
            };
            body += &format!(
                "<text x=\"{:.1}\" y=\"{:.0}\" font-size=\"12\">{}{tag}</text>\n",
                b.max(x(f.target.map_or(1.0, |t| t.0))) + 6.0,
                top + 12.0,
                esc(&if f.ratio >= 1.0 { format!("{:.1}x", f.ratio) } else { format!("{:.2}x", f.ratio) })
            );
            y += ROW;
        }
        for s in &c.skipped {
            let s = if s.chars().count() > 130 {
                format!("{}…", s.chars().take(130).collect::<String>())
            } else {
                s.clone()
            };
            body += &format!(
                "<text x=\"16\" y=\"{:.0}\" font-size=\"12\" fill=\"#888\" font-style=\"italic\">skipped: {}</text>\n",
                y + 14.0,
                esc(&s)
            );
            y += 20.0;
        }
        y += 18.0;
    }
    let bottom = y;
    let mut grid = String::new();
    let mut d = lo;
    while d <= hi {
        let r = 10f64.powf(d);
        let gx = x(r);
        let (stroke, width) = if d == 0.0 { ("#333", 1.5) } else { ("#ccc", 1.0) };
        let label = if r >= 1.0 { format!("{r:.0}x") } else { format!("{r}x") };
        grid += &format!(
            "<line x1=\"{gx:.1}\" x2=\"{gx:.1}\" y1=\"84\" y2=\"{bottom:.0}\" stroke=\"{stroke}\" stroke-width=\"{width}\"/>\n\
             <text x=\"{gx:.1}\" y=\"78\" font-size=\"11\" fill=\"#555\" text-anchor=\"middle\">{label}</text>\n\
             <text x=\"{gx:.1}\" y=\"{:.0}\" font-size=\"11\" fill=\"#555\" text-anchor=\"middle\">{label}</text>\n",
            bottom + 14.0
        );
        d += 1.0;
    }
    let h = bottom + 44.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h:.0}\" viewBox=\"0 0 {W} {h:.0}\" \
         font-family=\"-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n\
         <text x=\"16\" y=\"26\" font-size=\"18\" font-weight=\"bold\">dmastub against the tools people use today</text>\n\
         <text x=\"16\" y=\"46\" font-size=\"12\" fill=\"#444\">{}</text>\n\
         <text x=\"16\" y=\"64\" font-size=\"12\" fill=\"#444\">ratio dmastub / peer, log scale: right of 1x dmastub \
         does better, left worse; dashed mark = target</text>\n\
         {grid}{body}\
         <text x=\"16\" y=\"{:.0}\" font-size=\"11\" fill=\"#666\">cargo bench --bench compare</text>\n</svg>\n",
        esc(subtitle),
        h - 12.0
    )
}
