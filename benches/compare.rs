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
//! (wall time, CPU, peak RSS), [`dump::dump_rounds`] times gdb dumps from any list of gdb servers.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/nettlp.rs"]
mod rates;

// One file per comparison, and the chart.
#[path = "compare/chart.rs"]
mod chart;
#[path = "compare/discovery.rs"]
mod discovery;
#[path = "compare/dump.rs"]
mod dump;
#[path = "compare/nettlp.rs"]
mod nettlp;
#[path = "compare/ps.rs"]
mod ps;

use chart::svg;
use common::*;
use discovery::compare_discovery;
use dump::{HOLD_ENV, compare_dump, compare_live_dump, hold_memory};
use nettlp::compare_nettlp;
use ps::compare_ps;
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
