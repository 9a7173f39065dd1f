//! One gdb command timed inside gdb, with what `monitor stats` says it read: shared by the
//! benchmarks that count DMA round trips per command (`threads`, `maps`). Each session drops
//! every cache first (`monitor flush`), so every figure is a cold one.
// Each benchmark uses its own part of it.
#![allow(dead_code)]

use super::common::gdb_with;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// gdb-side timing: the command's wall time inside gdb, its line count and the count of its
/// lines that are neither empty nor comments (`#`), then `monitor stats`.
const TIMER: &str = r##"
import time
import gdb

def dmastub_timed(command):
    gdb.execute("monitor flush", to_string=True)
    gdb.execute("monitor stats reset", to_string=True)
    t0 = time.perf_counter()
    out = gdb.execute(command, to_string=True)
    took = time.perf_counter() - t0
    lines = out.splitlines()
    content = len([l for l in lines if l and not l.startswith("#")])
    print("TIMED %.6f %d %d" % (took, len(lines), content))
    print(gdb.execute("monitor stats", to_string=True))
"##;

/// The timer script, written once to a temporary file that gdb sources.
pub struct Timer(PathBuf);

impl Timer {
    pub fn new(bench: &str) -> Timer {
        let path =
            std::env::temp_dir().join(format!("dmastub-bench-{bench}-timer-{}.py", std::process::id()));
        std::fs::write(&path, TIMER).expect("write the gdb timer script");
        Timer(path)
    }

    /// Runs `command` in a new gdb session on `port` (with `vmlinux` loaded, if given).
    pub fn run(&self, port: u16, vmlinux: Option<&Path>, command: &str) -> Sample {
        let out = gdb_with(
            port,
            vmlinux,
            &[&format!("source {}", self.0.display()), &format!("python dmastub_timed({command:?})")],
            Duration::from_secs(300),
        );
        let line =
            out.lines().find(|l| l.starts_with("TIMED ")).unwrap_or_else(|| panic!("no timing:\n{out}"));
        let mut w = line.split_whitespace().skip(1);
        let seconds = w.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
        let lines = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let content_lines = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let round_trips = out
            .lines()
            .rev()
            .find(|l| l.contains("NetTLP:"))
            .and_then(|l| l.split(" round trips").next()?.rsplit(' ').next()?.parse().ok());
        Sample { seconds, lines, content_lines, round_trips }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One timed command.
pub struct Sample {
    pub seconds: f64,
    /// Lines it printed.
    pub lines: usize,
    /// Lines it printed that are neither empty nor comments.
    pub content_lines: usize,
    /// DMA round trips, over NetTLP.
    pub round_trips: Option<u64>,
}

/// The median of `v` (not empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
