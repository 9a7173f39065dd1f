//! File sources: what reading with `pread` (dmastub's [`FileMem`], since a mapped file that
//! shrinks kills the process with SIGBUS) costs against copying out of a memory map (what
//! dmastub did before), side by side in one run on the same file, page cache warm.
//!
//! Cases, each as reads per second and MB/s: 8-byte reads at random addresses (a page-table
//! entry, a field), 4 KiB pages at random addresses (a table page for the walk cache, a data
//! page), and 64 KiB sequential reads (what gdb's `dump` asks for per packet). The map is made
//! fresh for the first pass of each case (its page faults counted, as a server's first reads
//! pay them) and reused for a second pass.
//!
//! `cargo bench --bench file_reads` (uses the 6.1 fixture's raw image). Prints numbers; asserts
//! nothing about time.

#[path = "../tests/common/mod.rs"]
mod common;

use dmastub::PhysAddr;
use dmastub::phys::{FileMem, OpenOptions, PhysMem};
use std::time::Instant;

fn main() {
    let Some(dir) = common::fixture_dir("linux-6.1-kaslr") else { return };
    let path = common::unpacked(&dir, "post-panic.raw.zst");
    let size = std::fs::metadata(&path).expect("stat the image").len();
    // Warm the page cache so both readers start from the same place.
    let _ = std::fs::read(&path);
    let mut live = FileMem::open(&path, &OpenOptions { live: true, ..Default::default() }).expect("open");
    println!(
        "file reads: {} ({} MiB), pread (FileMem, live) vs memcpy from a read-only map",
        path.display(),
        size >> 20
    );
    println!(
        "{:<34} {:>14} {:>14} {:>14} {:>10}",
        "case", "pread", "mmap 1st pass", "mmap 2nd pass", "pread/map2"
    );
    for (name, len, count, random) in [
        ("8 B at random addresses", 8usize, 2_000_000u64, true),
        ("4 KiB pages at random", 4096, 200_000, true),
        ("64 KiB sequential", 65536, 4096, false),
    ] {
        let addrs: Vec<u64> = {
            let mut rng = dmastub::testing::XorShift::new(0x9e37_79b9_7f4a_7c15);
            (0..count)
                .map(|i| {
                    if random {
                        (rng.next_u64() % (size - len as u64)) & !(len as u64 - 1).min(0xfff)
                    } else {
                        (i * len as u64) % (size - len as u64 + 1)
                    }
                })
                .collect()
        };
        let mut buf = vec![0u8; len];
        let mut sum = 0u64;
        let t = Instant::now();
        for &a in &addrs {
            live.read(PhysAddr(a), &mut buf).expect("pread");
            sum = sum.wrapping_add(buf[0] as u64);
        }
        let pread = t.elapsed();
        let file = std::fs::File::open(&path).expect("open for the map");
        // SAFETY: a private read-only map of a fixture copy nothing else changes during the run.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("map");
        let _ = map.advise(memmap2::Advice::Random);
        let mut passes = [std::time::Duration::ZERO; 2];
        for p in &mut passes {
            let t = Instant::now();
            for &a in &addrs {
                buf.copy_from_slice(&map[a as usize..a as usize + len]);
                sum = sum.wrapping_add(buf[0] as u64);
            }
            *p = t.elapsed();
        }
        let rate = |d: std::time::Duration| {
            let s = d.as_secs_f64();
            format!("{:.2} M/s {:.0} MB/s", count as f64 / s / 1e6, (count * len as u64) as f64 / s / 1e6)
        };
        println!(
            "{name:<34} {:>14} {:>14} {:>14} {:>9.2}x   (checksum {sum:x})",
            format!("{:.0} ns", pread.as_nanos() as f64 / count as f64),
            format!("{:.0} ns", passes[0].as_nanos() as f64 / count as f64),
            format!("{:.0} ns", passes[1].as_nanos() as f64 / count as f64),
            pread.as_secs_f64() / passes[1].as_secs_f64()
        );
        println!("{:<34} {:>14} {:>14} {:>14}", "", rate(pread), rate(passes[0]), rate(passes[1]));
    }
}
