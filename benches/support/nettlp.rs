//! NetTLP read rates on loopback, shared by the benchmarks that measure them (`nettlp`,
//! `compare`): dmastub's client and libtlp's `tlpperf` against one `dmastub nettlp-emulator`,
//! with the CPU each side used meanwhile.
// Each benchmark uses its own part of it.
#![allow(dead_code)]

use dmastub::PhysAddr;
use dmastub::phys::nettlp::{NetTlpConfig, NetTlpMem};
use dmastub::phys::{PhysMem, Segment};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The two ends of a loopback NetTLP link: the emulator's address and ours.
#[derive(Clone, Copy)]
pub struct Link {
    pub adapter: Ipv4Addr,
    pub local: Ipv4Addr,
}

/// Where the reads go: `size` bytes at a time, sequential through `region` bytes from `start`.
#[derive(Clone, Copy)]
pub struct Reads {
    pub start: u64,
    pub region: u64,
    pub size: usize,
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

pub struct Rate {
    pub reads_per_s: f64,
    pub mb_per_s: f64,
    pub emulator_cpu: f64,
    /// CPU use of the client (this process) meanwhile; unknown for tlpperf.
    pub client_cpu: Option<f64>,
}

/// dmastub's client: reads in batches of 64 (so 16 tags have work) for `run`.
pub fn dmastub_rate(link: Link, reads: Reads, tags: u8, mrrs: u32, run: Duration, emulator_pid: u32) -> Rate {
    let Reads { start, region, size } = reads;
    let config =
        NetTlpConfig { adapter: link.adapter, local: link.local, tags, mrrs, ..NetTlpConfig::default() };
    let mut mem = NetTlpMem::connect(config).expect("client sockets");
    let mut bufs = vec![vec![0u8; size]; 64];
    let mut at = 0u64;
    let mut count = 0u64;
    let cpu0 = cpu_seconds(emulator_pid);
    let own0 = cpu_seconds(std::process::id());
    let t0 = Instant::now();
    while t0.elapsed() < run {
        let mut segments: Vec<Segment> = bufs
            .iter_mut()
            .map(|b| {
                let s = Segment { addr: PhysAddr(start + at), buf: b };
                at = (at + size as u64) % (region - size as u64);
                s
            })
            .collect();
        mem.read_segments(&mut segments).expect("read over NetTLP");
        count += segments.len() as u64;
    }
    let wall = t0.elapsed().as_secs_f64();
    Rate {
        reads_per_s: count as f64 / wall,
        mb_per_s: (count * size as u64) as f64 / wall / 1e6,
        emulator_cpu: (cpu_seconds(emulator_pid) - cpu0) / wall,
        client_cpu: Some((cpu_seconds(std::process::id()) - own0) / wall),
    }
}

/// libtlp's `tlpperf` as it is meant to be found: LIBTLP_TLPPERF (the program), else
/// LIBTLP_BIN/tlpperf (libtlp's bin folder).
pub fn tlpperf_path() -> Option<String> {
    let from_bin =
        || std::env::var("LIBTLP_BIN").ok().map(|d| format!("{}/tlpperf", d.trim_end_matches('/')));
    std::env::var("LIBTLP_TLPPERF").ok().or_else(from_bin).filter(|p| std::path::Path::new(p).is_file())
}

/// tlpperf's transactions per second (single thread, one read at a time, `seconds` long; the
/// mean of its per-second lines after the first) and the emulator's CPU use meanwhile.
pub fn tlpperf_rate(path: &str, link: Link, reads: Reads, seconds: u32, emulator_pid: u32) -> Option<Rate> {
    let Reads { start, region, size } = reads;
    let cpu0 = cpu_seconds(emulator_pid);
    let t0 = Instant::now();
    let out = Command::new(path)
        .args(["-r", &link.adapter.to_string(), "-l", &link.local.to_string(), "-b", "1b:00", "-d", "read"])
        .args(["-a", &format!("{start:#x}"), "-s", &region.to_string(), "-L", &size.to_string()])
        .args(["-N", "1", "-P", "seq", "-t", &seconds.to_string()])
        .output()
        .ok()?;
    let wall = t0.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let tps: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_suffix(" tps"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    if tps.len() < 2 {
        eprintln!("tlpperf printed no rates: {}", text.lines().last().unwrap_or(""));
        return None;
    }
    let mean = tps[1..].iter().sum::<f64>() / (tps.len() - 1) as f64;
    // tlpperf counts one transaction per 2 KiB request; a read of `size` is size/2048 of them.
    let per_read = size.div_ceil(2048) as f64;
    Some(Rate {
        reads_per_s: mean / per_read,
        mb_per_s: mean / per_read * size as f64 / 1e6,
        emulator_cpu: (cpu_seconds(emulator_pid) - cpu0) / wall,
        client_cpu: None,
    })
}
