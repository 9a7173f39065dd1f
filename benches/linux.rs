//! `dmastub ps` against drgn on the same ELF core, whole-process time and peak memory, side by
//! side in one run; and the bytes discovery reads.
//!
//! `cargo bench --bench linux`. drgn comes from PyPI (`pip install drgn`); it needs the kernel's
//! DWARF vmlinux (Debian's linux-image-6.1.0-56-amd64-dbg), given with DMASTUB_DWARF_VMLINUX.
//! Without either, only dmastub is measured.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::process::Command;

const ROUNDS: usize = 7;

fn main() {
    let Some(dir) = fixture_dir("linux-6.1-kaslr") else { return };
    let core = unpacked(&dir, "post-panic.elf.zst");
    let vmlinux = dwarf_vmlinux();
    let drgn_ok = vmlinux.is_some() && have_drgn();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_rss, mut their_rss) = (0, 0);
    let (mut our_tasks, mut their_tasks) = (0, 0);
    for _ in 0..ROUNDS {
        let m = measure(Command::new(BIN).args(["ps", "--image"]).arg(&core), "");
        ours.push(m.wall);
        our_rss = our_rss.max(m.peak_rss_kib);
        our_tasks = m
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<u32>().is_ok()))
            .count();
    }
    if let (true, Some(v)) = (drgn_ok, &vmlinux) {
        for _ in 0..ROUNDS {
            let m = measure(&mut drgn_command(&core, v, DRGN_PS), "");
            theirs.push(m.wall);
            their_rss = their_rss.max(m.peak_rss_kib);
            their_tasks = m.stdout.lines().count();
        }
    }
    let ours_m = median(&ours);
    println!(
        "dmastub ps   {:>8.1} ms  peak {:>7} KiB  {our_tasks} tasks (median of {ROUNDS})",
        ours_m.as_secs_f64() * 1e3,
        our_rss
    );
    if theirs.is_empty() {
        println!("drgn: not measured (needs drgn on PATH and DMASTUB_DWARF_VMLINUX=the -dbg vmlinux)");
    } else {
        let theirs_m = median(&theirs);
        println!(
            "drgn         {:>8.1} ms  peak {:>7} KiB  {their_tasks} tasks (median of {ROUNDS})",
            theirs_m.as_secs_f64() * 1e3,
            their_rss
        );
        println!(
            "dmastub is {:.1}x faster with {:.1}x less peak memory",
            theirs_m.as_secs_f64() / ours_m.as_secs_f64(),
            their_rss as f64 / our_rss as f64
        );
    }
    for image in ["post-panic.raw.zst", "post-panic.elf.zst"] {
        let out = Command::new(BIN)
            .args(["kernel", "--image"])
            .arg(unpacked(&dir, image))
            .output()
            .expect("kernel");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with("discovery read")).unwrap_or("discovery: no report");
        println!("{image}: {line}");
    }
}
