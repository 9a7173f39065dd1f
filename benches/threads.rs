//! Tasks as threads: `info threads` against `monitor ps -t` through real gdb, over NetTLP (the
//! emulator on loopback serving a post-panic raw image, which carries no CPU registers) and
//! straight from the image file: wall time inside gdb and DMA round trips per task.
//!
//! Cases: the public 6.1 image (63 tasks, 2 CPUs) and every other fixture folder beside it,
//! made with the fixture tools, e.g. 300 extra processes or 4 CPUs:
//!
//! ```sh
//! build-fixture.sh --kernel linux-image-6.1.0-56-amd64 --extra 300 --work W --out $DMASTUB_FIXTURES/linux-6.1-extra300
//! build-fixture.sh --kernel linux-image-6.1.0-56-amd64 --smp 4 --work W --out $DMASTUB_FIXTURES/linux-6.1-smp4
//! ```
//!
//! The registers of the CPUs the panic stopped are rebuilt from their stacks (a raw image
//! keeps no CPU state): "RT/CPU" is what `info threads` costs beyond `monitor ps -t` (every
//! sleeping task's switch frame and every CPU's registers), per CPU. Target: at most 3.
//!
//! Each figure is the median of 5 gdb sessions, ps and threads alternating; each session
//! connects, drops every cache (`monitor flush`), then runs one command. `cargo bench --bench threads`.

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "support/gdb_timing.rs"]
mod gdb_timing;

use common::*;
use gdb_timing::{Sample, Timer, median};
use std::path::Path;

const ADAPTER: &str = "127.0.78.2";
const LOCAL: &str = "127.0.78.1";
const RUNS: usize = 5;

/// A command's median seconds, and median round trips when over NetTLP.
type Median = (f64, Option<f64>);

/// (ps, threads) medians, and the thread count.
fn compare(args: &[&str], vmlinux: Option<&Path>, timer: &Timer) -> (Median, Median, usize) {
    let stub = Stub::start(args);
    let (mut ps, mut th) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ps.push(timer.run(stub.port, vmlinux, "monitor ps -t"));
        th.push(timer.run(stub.port, vmlinux, "info threads"));
    }
    // `info threads` prints a header line, then one line per thread.
    let threads = th[0].lines.saturating_sub(1);
    let summary = |v: &[Sample]| {
        let rt = v.iter().map(|s| s.round_trips).collect::<Option<Vec<u64>>>();
        (
            median(v.iter().map(|s| s.seconds).collect()),
            rt.map(|r| median(r.iter().map(|&x| x as f64).collect())),
        )
    };
    (summary(&ps), summary(&th), threads)
}

fn main() {
    let timer = Timer::new("threads");
    let mut any = false;
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        let cpus = truth(&dir, "post-panic")["vcpus"].as_array().map_or(0, Vec::len);
        any = true;
        let image = unpacked(&dir, "post-panic.raw.zst");
        let image = image.to_str().expect("UTF-8 path");
        let vmlinux = unpacked(&dir, "vmlinux-symbols.zst");
        println!("\n{name} (post-panic raw image), gdb 13.1, median of {RUNS} sessions each:");
        println!(
            "  {:<34} {:>9} {:>9} {:>7} {:>10} {:>10} {:>8} {:>8}",
            "source / gdb", "ps (s)", "threads", "ratio", "RT ps", "RT threads", "RT/task", "RT/CPU"
        );
        let emulator = Emulator::start(image, ADAPTER);
        let nettlp = ["--nettlp", ADAPTER, "--nettlp-local", LOCAL];
        let file = ["--image", image];
        for (label, args, symbols) in [
            ("NetTLP, no vmlinux", &nettlp[..], None),
            ("NetTLP, gdb vmlinux (symbols)", &nettlp[..], Some(vmlinux.as_path())),
            ("image file, no vmlinux", &file[..], None),
            ("image file, gdb vmlinux (symbols)", &file[..], Some(vmlinux.as_path())),
        ] {
            let ((ps_s, ps_rt), (th_s, th_rt), threads) = compare(args, symbols, &timer);
            let rt = |v: Option<f64>| v.map_or("-".to_string(), |r| format!("{r:.0}"));
            let per_task = th_rt.map_or("-".to_string(), |r| format!("{:.2}", r / threads.max(1) as f64));
            let per_cpu = match (th_rt, ps_rt) {
                (Some(t), Some(p)) if cpus > 0 => format!("{:.2}", (t - p) / cpus as f64),
                _ => "-".to_string(),
            };
            println!(
                "  {label:<34} {ps_s:>9.4} {th_s:>9.4} {:>6.1}x {:>10} {:>10} {per_task:>8} {per_cpu:>8}",
                th_s / ps_s,
                rt(ps_rt),
                rt(th_rt)
            );
            if label.starts_with("NetTLP, no") {
                println!(
                    "  ({threads} threads, {cpus} CPUs; RT = DMA round trips from `monitor stats`; targets: at most 3 per task, 3 per CPU)"
                );
            }
        }
        drop(emulator);
    }
    if !any {
        println!("SKIP: no fixture images (set DMASTUB_FIXTURES)");
    }
}
