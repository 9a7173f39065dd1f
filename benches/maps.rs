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

#[path = "support/gdb_timing.rs"]
mod gdb_timing;

use common::*;
use gdb_timing::{Sample, Timer, median};

const ADAPTER: &str = "127.0.91.2";
const LOCAL: &str = "127.0.91.1";
const RUNS: usize = 5;

fn main() {
    let timer = Timer::new("maps");
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
                let samples: Vec<Sample> = (0..RUNS).map(|_| timer.run(stub.port, None, &command)).collect();
                let vmas = samples[0].content_lines;
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
}
