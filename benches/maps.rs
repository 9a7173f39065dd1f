//! `monitor maps PID` over NetTLP: DMA round trips per VMA for a process's memory map, read
//! through real gdb from the NetTLP emulator on loopback serving each fixture's post-panic raw
//! image (and straight from the file, for the wall time). Target: at most 2 round trips per
//! VMA, everything included (finding the task by pid, its mm, the maple tree, the VMAs, their
//! files, inodes and paths).
//!
//! Each figure is the median of 5 gdb sessions; each connects, drops every cache
//! (`monitor flush`, `monitor stats reset`), then runs `monitor maps PID` once for the
//! fixture's timekeeper and for init (pid 1). `cargo bench --bench maps`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const ADAPTER: &str = "127.0.91.2";
const LOCAL: &str = "127.0.91.1";
const RUNS: usize = 5;

/// gdb-side timing: the command's wall time inside gdb, its line count, then `monitor stats`.
const TIMER: &str = r##"
import time
import gdb

def dmastub_timed(command):
    gdb.execute("monitor flush", to_string=True)
    gdb.execute("monitor stats reset", to_string=True)
    t0 = time.perf_counter()
    out = gdb.execute(command, to_string=True)
    took = time.perf_counter() - t0
    vmas = len([l for l in out.splitlines() if l and not l.startswith("#")])
    print("TIMED %.6f %d" % (took, vmas))
    print(gdb.execute("monitor stats", to_string=True))
"##;

struct Sample {
    seconds: f64,
    vmas: usize,
    round_trips: Option<u64>,
}

fn timed(port: u16, timer: &Path, command: &str) -> Sample {
    let out = gdb_with(
        port,
        None,
        &[&format!("source {}", timer.display()), &format!("python dmastub_timed({command:?})")],
        Duration::from_secs(300),
    );
    let line = out.lines().find(|l| l.starts_with("TIMED ")).unwrap_or_else(|| panic!("no timing:\n{out}"));
    let mut w = line.split_whitespace().skip(1);
    let seconds = w.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    let vmas = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let round_trips = out
        .lines()
        .rev()
        .find(|l| l.contains("NetTLP:"))
        .and_then(|l| l.split(" round trips").next()?.rsplit(' ').next()?.parse().ok());
    Sample { seconds, vmas, round_trips }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let timer = std::env::temp_dir().join(format!("dmastub-bench-maps-timer-{}.py", std::process::id()));
    std::fs::write(&timer, TIMER).expect("write the gdb timer script");
    let mut any = false;
    for dir in fixture_dirs() {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        let tk = truth(&dir, "post-panic")["timekeeper"]["pid"].as_u64().unwrap_or(93);
        any = true;
        let image = unpacked(&dir, "post-panic.raw.zst");
        let image = image.to_str().expect("UTF-8 path");
        println!("\n{name} (post-panic raw image), gdb 13.1, median of {RUNS} sessions each:");
        println!(
            "  {:<24} {:<16} {:>6} {:>10} {:>8} {:>8}",
            "source", "command", "VMAs", "time (s)", "RT", "RT/VMA"
        );
        let emulator = Emulator::start(image, ADAPTER);
        let nettlp = ["--nettlp", ADAPTER, "--nettlp-local", LOCAL];
        let file = ["--image", image];
        for (label, args) in [("NetTLP (emulator)", &nettlp[..]), ("image file", &file[..])] {
            let stub = Stub::start(args);
            for pid in [tk, 1] {
                let command = format!("monitor maps {pid}");
                let samples: Vec<Sample> = (0..RUNS).map(|_| timed(stub.port, &timer, &command)).collect();
                let vmas = samples[0].vmas;
                let secs = median(samples.iter().map(|s| s.seconds).collect());
                let rt = samples
                    .iter()
                    .map(|s| s.round_trips)
                    .collect::<Option<Vec<u64>>>()
                    .map(|r| median(r.iter().map(|&x| x as f64).collect()));
                let (rt_s, per) = match rt {
                    Some(r) => (format!("{r:.0}"), format!("{:.2}", r / vmas.max(1) as f64)),
                    None => ("-".into(), "-".into()),
                };
                println!("  {label:<24} {command:<16} {vmas:>6} {secs:>10.4} {rt_s:>8} {per:>8}");
            }
        }
        println!("  (RT = DMA round trips from `monitor stats`; target: at most 2 per VMA)");
        drop(emulator);
    }
    if !any {
        println!("SKIP: no fixture images (set DMASTUB_FIXTURES)");
    }
    let _ = std::fs::remove_file(&timer);
}
