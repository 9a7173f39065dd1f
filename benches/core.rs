//! The core benchmark: page walks per second (cold and warm caches), backend reads per 4 KiB
//! page when gdb reads a 64 MiB virtual range, and gdb's `dump binary memory` of that range in
//! virtual mode against the same bytes in physical mode, all in one run so the figures are
//! ratios measured side by side.
//!
//! Run: `cargo bench --bench core` (needs gdb; uses the fixtures when present, see README).
//! Prints numbers; asserts nothing about time.

use dmastub::gdb::{DmaTarget, Server, bind};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging, bits};
use dmastub::phys::{self, OpenOptions, PhysMem};
use dmastub::testing::page_tables::PageTableBuilder;
use dmastub::{PhysAddr, VirtAddr};
use std::path::{Path, PathBuf};

// The integration tests' helpers: fixtures and their unpacking live in one place.
#[path = "../tests/common/mod.rs"]
mod common;
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const DUMP: u64 = 64 * MIB;
const SYNTH_VIRT: u64 = 0xffff_c900_0000_0000;
const SYNTH_PHYS: u64 = 16 * MIB;

fn main() {
    println!("dmastub core benchmark ({} CPUs, {})", cpus(), gdb_version());
    println!();
    walks();
    let have_gdb = Command::new("gdb").arg("--version").output().is_ok();
    if !have_gdb {
        println!("gdb is not installed: skipping the gdb dump figures (apt-get install gdb)");
        return;
    }
    println!();
    let (mem, cr3) = synthetic();
    dump_case("synthetic machine, 64 MiB mapped by scattered 4 KiB pages", mem, cr3, SYNTH_VIRT, SYNTH_PHYS);
    match fixture_image() {
        Some((image, cr3, page_offset_base)) => {
            let mem = phys::open_file(&image, &OpenOptions::default()).expect("open the fixture image");
            dump_case(
                "linux-6.1-kaslr post-panic.raw, kernel direct map (large pages)",
                mem,
                cr3,
                page_offset_base + 16 * MIB,
                16 * MIB,
            );
        }
        None => println!("\n(fixtures not found: set DMASTUB_FIXTURES for the real-image figures)"),
    }
}

/// 80 MiB of RAM whose 64 MiB at `SYNTH_PHYS` are mapped at `SYNTH_VIRT` by 4 KiB pages in a
/// scrambled order, so no read can merge two pages.
fn synthetic() -> (Box<dyn PhysMem>, u64) {
    let mut b = PageTableBuilder::new(Paging::Level4, (SYNTH_PHYS + DUMP + 8 * MIB) as usize);
    b.map_scattered(VirtAddr(SYNTH_VIRT), PhysAddr(SYNTH_PHYS), DUMP, bits::WRITABLE | bits::NX)
        .expect("build the synthetic page tables");
    for (i, chunk) in
        b.bytes_mut()[SYNTH_PHYS as usize..(SYNTH_PHYS + DUMP) as usize].chunks_mut(8).enumerate()
    {
        chunk.copy_from_slice(&(i as u64).to_le_bytes());
    }
    let cr3 = b.root();
    (Box::new(b.into_mem("synthetic")), cr3)
}

fn walks() {
    let (mem, cr3) = synthetic();
    let mut space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
    let pages = DUMP / 4096;
    let run = |space: &mut AddressSpace, flush_each: bool| -> (f64, f64) {
        space.reset_stats();
        let start = Instant::now();
        for i in 0..pages {
            if flush_each {
                space.flush();
            }
            space.translate_in(cr3, VirtAddr(SYNTH_VIRT + i * 4096)).expect("mapped");
        }
        let secs = start.elapsed().as_secs_f64();
        (pages as f64 / secs, space.stats().table_reads as f64 / pages as f64)
    };
    let best = |space: &mut AddressSpace, flush_each: bool| {
        (0..3).map(|_| run(space, flush_each)).fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
    };
    let (cold, cold_reads) = best(&mut space, true);
    space.flush();
    run(&mut space, false);
    let (warm, warm_reads) = best(&mut space, false);
    println!("page walks, 16384 distinct 4 KiB pages (best of 3):");
    println!(
        "  cold caches (flushed before every walk): {:>12.0} walks/s, {cold_reads:.2} table reads/walk",
        cold
    );
    println!(
        "  warm caches:                             {:>12.0} walks/s, {warm_reads:.4} table reads/walk",
        warm
    );
    println!("  warm / cold: {:.1}x", warm / cold);
}

/// Serves `mem` in this process and times gdb's `dump binary memory` of 64 MiB at `virt`
/// (virtual mode) and at `phys` (physical mode), alternating, best of 3 each.
fn dump_case(title: &str, mem: Box<dyn PhysMem>, cr3: u64, virt: u64, phys: u64) {
    let space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
    let mut target = DmaTarget::new(space, false).with_cr3(cr3, "the benchmark's machine");
    let server = Server::new(bind("127.0.0.1:0").expect("bind"));
    let port = server.local_addr().expect("port").port();
    std::thread::spawn(move || server.serve_forever(&mut target));

    let out_dir = std::env::temp_dir().join(format!("dmastub-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("temp dir");
    let vfile = out_dir.join("virt.bin");
    let pfile = out_dir.join("phys.bin");
    let dump = |mode: &str, start: u64, file: &Path| -> (Duration, String) {
        let t = Instant::now();
        let out = common::gdb(
            port,
            &[
                &format!("monitor {mode}"),
                "monitor stats reset",
                &format!("dump binary memory {} {start:#x} {:#x}", file.display(), start + DUMP),
                "monitor stats",
            ],
        );
        (t.elapsed(), out)
    };
    let connect_only = (0..3).map(|_| time(|| common::gdb(port, &[]))).min().unwrap_or_default();
    // Warm-up: the first virtual dump fills the table cache (static sources keep it).
    let (cold_time, cold_out) = dump("virt", virt, &vfile);
    let (mut best_v, mut best_p) = (Duration::MAX, Duration::MAX);
    let mut warm_out = String::new();
    for _ in 0..3 {
        let (tp, _) = dump("phys", phys, &pfile);
        let (tv, ov) = dump("virt", virt, &vfile);
        best_p = best_p.min(tp);
        if tv < best_v {
            best_v = tv;
            warm_out = ov;
        }
    }
    let size_ok = [&vfile, &pfile].iter().all(|f| std::fs::metadata(f).is_ok_and(|m| m.len() == DUMP));
    let _ = std::fs::remove_dir_all(&out_dir);
    let mbps = |d: Duration| DUMP as f64 / 1e6 / d.as_secs_f64();
    println!("{title}:");
    if !size_ok {
        println!("  a dump came out short: gdb printed\n{warm_out}");
        return;
    }
    let per_page = |out: &str| reads_per_page(out).map_or("?".to_string(), |r| format!("{r:.4}"));
    println!("  backend reads per 4 KiB page: {} cold, {} warm", per_page(&cold_out), per_page(&warm_out));
    println!(
        "  gdb dump binary memory 64 MiB: virt {:.1} MB/s, phys {:.1} MB/s (whole gdb runs, best of 3; \
         gdb start and connect alone: {:.0} ms; first, cold virt run {:.1} MB/s)",
        mbps(best_v),
        mbps(best_p),
        connect_only.as_secs_f64() * 1e3,
        mbps(cold_time)
    );
    println!("  virt / phys throughput: {:.2}x", best_p.as_secs_f64() / best_v.as_secs_f64());
}

/// (table + data backend reads) / 4 KiB pages, from `monitor stats` output.
fn reads_per_page(out: &str) -> Option<f64> {
    // The last one: `monitor stats reset` prints the counts it drops.
    let line = out.lines().rfind(|l| l.starts_with("backend reads:"))?;
    let nums: Vec<u64> = line
        .trim_start_matches("backend reads:")
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .filter_map(|s| s.parse().ok())
        .collect();
    let [table, data] = nums[..] else { return None };
    Some((table + data) as f64 / (DUMP / 4096) as f64)
}

fn time<T>(f: impl FnOnce() -> T) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// The post-panic raw image, the kernel CR3 and `page_offset_base` from its truth file.
fn fixture_image() -> Option<(PathBuf, u64, u64)> {
    let dir = common::fixture_dir("linux-6.1-kaslr")?;
    let truth = common::truth(&dir, "post-panic");
    Some((
        common::unpacked(&dir, "post-panic.raw.zst"),
        common::hex(&truth["paging"]["kernel_cr3"]),
        common::hex(&truth["kaslr"]["page_offset_base"]),
    ))
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn gdb_version() -> String {
    Command::new("gdb")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_string))
        .unwrap_or_else(|| "no gdb".to_string())
}
