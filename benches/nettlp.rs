//! NetTLP on loopback, in one run against one `dmastub nettlp-emulator`:
//!
//! 1. reads per second and MB/s at 8 B, 256 B, 2 KiB and 4 KiB with 1 and 16 tags, the
//!    emulator's CPU use beside each figure;
//! 2. libtlp's own `tlpperf` (single thread, one read at a time) against the same emulator, when
//!    LIBTLP_TLPPERF (or LIBTLP_BIN, its folder) names it (built from a fetched libtlp, outside
//!    this repository), and the ratio at 2 KiB;
//! 3. DMA round trips per operation through real gdb: a cold `x/gx` of a kernel address,
//!    `monitor ps` per task, and a 64 MiB `dump binary memory` (needs the 6.1 fixture).
//!
//! `cargo bench --bench nettlp`. Loopback is not a 10 GbE link to an FPGA: the figures compare
//! the two clients' designs on the same path, not what a real adapter gives.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/nettlp.rs"]
mod rates;

use common::*;
use rates::{Link, Rate, Reads};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ADAPTER: Ipv4Addr = Ipv4Addr::new(127, 0, 77, 2);
const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 77, 1);
/// Region the throughput runs read, inside the 6.1 image's RAM (and inside the trimmed one's
/// largest range when that is all there is).
const REGION: u64 = 32 << 20;
const RUN: Duration = Duration::from_millis(1500);

/// The "N reads in R round trips" of `monitor stats` (after the given command).
fn round_trips(out: &str) -> Option<u64> {
    let line = out.lines().rev().find(|l| l.contains("NetTLP:"))?;
    let r = line.split(" round trips").next()?.rsplit(' ').next()?;
    r.parse().ok()
}

fn table_reads(out: &str) -> Option<u64> {
    let line = out.lines().rev().find(|l| l.contains("backend reads:"))?;
    line.split("backend reads: ").nth(1)?.split(' ').next()?.parse().ok()
}

fn main() {
    let (image, full) = match fixture_dir("linux-6.1-kaslr") {
        Some(d) => (unpacked(&d, "post-panic.raw.zst"), Some(d)),
        None => {
            let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/linux-6.1-la57-trimmed");
            (unpacked(&d, "post-panic.lime.zst"), None)
        }
    };
    let start = if full.is_some() { 0x100_0000 } else { 0x10_0000 };
    let img = image.to_str().expect("utf-8 path");
    let link = Link { adapter: ADAPTER, local: LOCAL };
    let reads = |size| Reads { start, region: REGION, size };
    let emulator = Emulator::start(img, &ADAPTER.to_string());
    let pid = emulator.pid();
    println!("NetTLP on loopback ({ADAPTER} <- {LOCAL}), emulator serving {img}");
    println!(
        "dmastub MRRS 512 (its default) and 2048; tlpperf sends 2048-byte requests; emulator MPS 256, RCB 64; {RUN:?} per figure\n"
    );
    println!(
        "{:>6} {:>31} {:>31} {:>31} {:>31}",
        "read", "dmastub, 1 tag", "dmastub, 16 tags", "dmastub, 16 tags, MRRS 2048", "libtlp tlpperf -N 1"
    );
    let tlpperf_path = rates::tlpperf_path();
    let mut at_2k = None;
    for size in [8usize, 256, 2048, 4096] {
        let one = rates::dmastub_rate(link, reads(size), 1, 512, RUN, pid);
        let sixteen = rates::dmastub_rate(link, reads(size), 16, 512, RUN, pid);
        let like_tlpperf = rates::dmastub_rate(link, reads(size), 16, 2048, RUN, pid);
        let theirs = tlpperf_path.as_deref().and_then(|p| rates::tlpperf_rate(p, link, reads(size), 4, pid));
        let cell = |r: &Rate| {
            let client = r.client_cpu.map_or("  ?".to_string(), |c| format!("{:>3.0}", c * 100.0));
            format!(
                "{:>7.0}/s {:>5.1} MB/s {:>3.0}% {client}%",
                r.reads_per_s,
                r.mb_per_s,
                r.emulator_cpu * 100.0
            )
        };
        println!(
            "{:>5}B {:>31} {:>31} {:>31} {:>31}",
            size,
            cell(&one),
            cell(&sixteen),
            cell(&like_tlpperf),
            theirs.as_ref().map(cell).unwrap_or_else(|| "(no LIBTLP_TLPPERF/LIBTLP_BIN)".into())
        );
        if size == 2048 {
            at_2k = Some((
                sixteen.reads_per_s,
                like_tlpperf.reads_per_s,
                theirs.map(|t| t.reads_per_s),
                one.reads_per_s,
            ));
        }
    }
    println!("(each cell: reads/s, MB/s, then the CPU use of the emulator and of the client meanwhile)");
    if let Some((ours, ours_2048, theirs, one)) = at_2k {
        println!("\n2 KiB reads: 16 tags / 1 tag = {:.1}x", ours / one);
        match theirs {
            Some(t) => {
                println!("2 KiB reads: dmastub 16 tags, MRRS 512 / libtlp tlpperf = {:.1}x", ours / t);
                println!(
                    "2 KiB reads: dmastub 16 tags, MRRS 2048 (tlpperf's request size) / libtlp tlpperf = {:.1}x (target: 4x)",
                    ours_2048 / t
                );
            }
            None => println!(
                "2 KiB reads: set LIBTLP_TLPPERF (or LIBTLP_BIN, libtlp's bin folder) to compare with libtlp's tlpperf"
            ),
        }
    }

    let Some(dir) = full else {
        println!("\nSKIP round trips per operation: needs the linux-6.1-kaslr fixture");
        return;
    };
    let truth = truth(&dir, "post-panic");
    let stub = Stub::start(&["--nettlp", &ADAPTER.to_string(), "--nettlp-local", &LOCAL.to_string()]);
    let init_task = truth["init_task"]["virt"].as_str().expect("init_task");
    let cold = gdb(
        stub.port,
        &["monitor flush", "monitor stats reset", &format!("x/gx {init_task}"), "monitor stats"],
    );
    let ps = gdb(stub.port, &["monitor flush", "monitor stats reset", "monitor ps", "monitor stats"]);
    let tasks = ps
        .lines()
        .filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<u32>().is_ok()))
        .count()
        .max(1);
    let base = hex(&truth["kaslr"]["page_offset_base"]) + 0x100_0000;
    let dump = std::env::temp_dir().join(format!("dmastub-bench-dump-{}", std::process::id()));
    let dump_cmd = format!("dump binary memory {} {base:#x} {:#x}", dump.display(), base + (64 << 20));
    let t0 = Instant::now();
    let dumped = gdb_with(
        stub.port,
        None,
        &["monitor flush", &dump_cmd, "monitor stats reset", &dump_cmd, "monitor stats"],
        Duration::from_secs(600),
    );
    let took = t0.elapsed();
    let _ = std::fs::remove_file(&dump);
    println!("\nDMA round trips per operation (gdb 13.1 over `serve --nettlp`, 6.1 image):");
    let show = |what: &str, v: Option<u64>, per: f64, target: &str| match v {
        Some(r) => println!("  {what:<44} {:>8.2}   (target: {target})", r as f64 / per),
        None => println!("  {what:<44} (no NetTLP line in monitor stats)"),
    };
    show("cold x/gx of init_task (after monitor flush)", round_trips(&cold), 1.0, "at most 5");
    show(&format!("monitor ps, per task ({tasks} tasks)"), round_trips(&ps), tasks as f64, "at most 3");
    show("dump binary memory 64 MiB, per 4 KiB page (warm)", round_trips(&dumped), 16384.0, "about 1");
    println!(
        "  page-table pages read in the warm dump: {} for 16384 pages (target: none after warm-up; a live \
         source's caches are dropped after each second of continuous reading); both dumps took {:.1} s",
        table_reads(&dumped).map_or("?".into(), |v| v.to_string()),
        took.as_secs_f64()
    );
    drop(stub);
    drop(emulator);
}
