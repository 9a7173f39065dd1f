//! `dmastub ps` against drgn on the same ELF core, whole-process time and peak memory, side by
//! side in one run; and the bytes discovery reads.
//!
//! `cargo bench --bench linux`. drgn comes from PyPI (`pip install drgn`); it needs the kernel's
//! DWARF vmlinux (Debian's linux-image-6.1.0-56-amd64-dbg), given with DMASTUB_DWARF_VMLINUX.
//! Without either, only dmastub is measured.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROUNDS: usize = 7;

/// Wall time and peak RSS (KiB) of one run of `cmd`, and its stdout.
// The child is reaped with wait4, which gives its own rusage; std's wait() would not.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> (Duration, i64, String) {
    use std::io::Read;
    let start = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read stdout");
    let mut status = 0;
    // SAFETY: a plain rusage struct, filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaps our own child (not waited for elsewhere) and writes only the given structs.
    unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    (start.elapsed(), usage.ru_maxrss, out)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let Some(dir) = fixture_dir("linux-6.1-kaslr") else { return };
    let core = unpacked(&dir, "post-panic.elf.zst");
    let vmlinux = std::env::var("DMASTUB_DWARF_VMLINUX").ok().filter(|p| std::path::Path::new(p).exists());
    let drgn_ok =
        vmlinux.is_some() && Command::new("drgn").arg("--version").output().is_ok_and(|o| o.status.success());
    let script = "from drgn.helpers.linux.pid import for_each_task\n\
                  for t in for_each_task(prog):\n    \
                  print(t.pid.value_(), t.real_parent.tgid.value_(), t.comm.string_().decode())";
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_rss, mut their_rss) = (0, 0);
    let (mut our_tasks, mut their_tasks) = (0, 0);
    for _ in 0..ROUNDS {
        let (t, rss, out) = measure(Command::new(BIN).args(["ps", "--image"]).arg(&core));
        ours.push(t);
        our_rss = our_rss.max(rss);
        our_tasks = out
            .lines()
            .filter(|l| l.split_whitespace().next().is_some_and(|w| w.parse::<u32>().is_ok()))
            .count();
    }
    if let (true, Some(v)) = (drgn_ok, &vmlinux) {
        for _ in 0..ROUNDS {
            let (t, rss, out) = measure(Command::new("drgn").arg("-q").arg("-c").arg(&core).args([
                "-s",
                v,
                "--no-default-symbols",
                "-e",
                script,
            ]));
            theirs.push(t);
            their_rss = their_rss.max(rss);
            their_tasks = out.lines().count();
        }
    }
    let ours_m = median(ours);
    println!(
        "dmastub ps   {:>8.1} ms  peak {:>7} KiB  {our_tasks} tasks (median of {ROUNDS})",
        ours_m.as_secs_f64() * 1e3,
        our_rss
    );
    if theirs.is_empty() {
        println!("drgn: not measured (needs drgn on PATH and DMASTUB_DWARF_VMLINUX=the -dbg vmlinux)");
    } else {
        let theirs_m = median(theirs);
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
