//! `dmastub dump` against makedumpfile, and over NetTLP against the link's own read rate, side by
//! side in one run (dmastub issue 15's targets), every figure a ratio to its peer of this run:
//!
//! 1. the size of `dmastub dump -d 31` against makedumpfile 1.7's `-d 31` of the same ELF core
//!    with the same compression (zlib `-c`, lzo `-l`; Debian's makedumpfile has no snappy/zstd);
//! 2. wall time and peak memory (max RSS from wait4) of the same two commands;
//! 3. over one `dmastub nettlp-emulator` on loopback: bytes read by DMA against the pages kept
//!    plus the `struct page` array read to choose them, and the dump phase's throughput against
//!    the client's sequential read rate (64 MiB in 1 MiB reads, the dump's tags and MRRS),
//!    measured just before and just after the dump.
//!
//! Both tools read the same input: the 6.1 fixture's raw image written as an ELF core by
//! `dmastub dump --format elf --dump-level 0` (program headers at 64, VMCOREINFO note), which
//! makedumpfile reads with the kernel's DWARF vmlinux (`DMASTUB_DWARF_VMLINUX`; CI:
//! `eval "$(tools/setup-full-tests.sh)"`). Without it or makedumpfile those rows are skipped.
//!
//! `cargo bench --bench dump` (about two minutes, most of it makedumpfile's). Prints numbers and
//! "MISSED" beside a target the run missed; fails only when something does not run.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{BIN, Emulator, Measured, dwarf_vmlinux, fixture_dir, measure, unpacked};
use dmastub::PhysAddr;
use dmastub::phys::PhysMem;
use dmastub::phys::nettlp::{NetTlpConfig, NetTlpMem};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const ADAPTER: Ipv4Addr = Ipv4Addr::new(127, 0, 44, 2);
const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 44, 1);
const PAGE: u64 = 4096;
/// The sequential read: this much RAM from 16 MiB up, in reads of `CHUNK`.
const RAW_BYTES: u64 = 64 << 20;
const CHUNK: usize = 1 << 20;

fn main() {
    let Some(dir) = fixture_dir("linux-6.1-kaslr") else { return };
    let raw = unpacked(&dir, "post-panic.raw.zst");
    let work = std::env::temp_dir().join(format!("dmastub-dump-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("create the bench's temp folder");
    let ok = run(&raw, &work);
    let _ = std::fs::remove_dir_all(&work);
    if !ok {
        std::process::exit(1);
    }
}

/// The whole benchmark; false when something failed to run.
fn run(raw: &Path, work: &Path) -> bool {
    let elf = work.join("in.elf");
    let made =
        measure(&mut dmastub_dump(&["--image", path(raw), "--format", "elf", "--dump-level", "0"], &elf), "");
    if !made.success {
        println!("FAILED: dmastub dump --format elf --dump-level 0 of {}:\n{}", raw.display(), made.stderr);
        return false;
    }
    println!(
        "input: {} ({} MiB), the 6.1 fixture's post-panic image as an ELF core by dmastub dump -d 0",
        elf.display(),
        file_size(&elf) >> 20
    );
    let mut ok = versus_makedumpfile(&elf, work);
    ok &= over_nettlp(raw, work);
    ok
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// `dmastub dump ARGS -q -f -o OUT`.
fn dmastub_dump(args: &[&str], out: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("dump").args(args).args(["-q", "-f", "-o", path(out)]);
    cmd
}

/// makedumpfile from PATH, else where Debian puts it.
fn makedumpfile() -> Option<PathBuf> {
    let on_path = Command::new("makedumpfile").arg("-v").output().is_ok_and(|o| o.status.success());
    if on_path {
        return Some(PathBuf::from("makedumpfile"));
    }
    ["/usr/sbin/makedumpfile", "/usr/bin/makedumpfile"].iter().map(PathBuf::from).find(|p| p.is_file())
}

/// "MISSED" when a target is not met, else nothing.
fn mark(met: bool) -> &'static str {
    if met { "" } else { "  MISSED" }
}

fn mib(kib: i64) -> f64 {
    kib as f64 / 1024.0
}

/// Targets 1 and 2: one table, a row per compression.
fn versus_makedumpfile(elf: &Path, work: &Path) -> bool {
    let tool = makedumpfile();
    let vmlinux = dwarf_vmlinux();
    let (Some(tool), Some(vmlinux)) = (tool.clone(), vmlinux) else {
        if tool.is_none() {
            println!("SKIP size, time and memory against makedumpfile: makedumpfile is not installed");
        } else {
            println!(
                "SKIP size, time and memory against makedumpfile: DMASTUB_DWARF_VMLINUX does not name the \
                 kernel's DWARF vmlinux (eval \"$(tools/setup-full-tests.sh)\")"
            );
        }
        return true;
    };
    let version =
        Command::new(&tool).arg("-v").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    println!(
        "against {} -d 31 -x {} (dmastub: mean of 2 runs bracketing makedumpfile's one; RSS: the larger)\n",
        version.as_deref().unwrap_or("makedumpfile").lines().next().unwrap_or("makedumpfile").trim(),
        vmlinux.display()
    );
    println!(
        "{:<5} {:>11} {:>11} {:>6}   {:>7} {:>7} {:>7}   {:>8} {:>8} {:>6}",
        "", "bytes ours", "theirs", "ratio", "s ours", "theirs", "faster", "MiB ours", "theirs", "ratio"
    );
    let mut notes = Vec::new();
    for (name, flag) in [("zlib", "-c"), ("lzo", "-l")] {
        let ours_out = work.join(format!("ours.{name}"));
        let theirs_out = work.join(format!("theirs.{name}"));
        let mut ours = Vec::new();
        let mut theirs = None;
        for i in 0..3 {
            if i == 1 {
                let _ = std::fs::remove_file(&theirs_out);
                let mut cmd = Command::new(&tool);
                cmd.args([flag, "-d", "31", "-x"]).arg(&vmlinux).arg(elf).arg(&theirs_out);
                let m = measure(&mut cmd, "");
                if !m.success {
                    println!("FAILED: makedumpfile {flag} -d 31:\n{}{}", m.stdout, m.stderr);
                    return false;
                }
                if let Some(w) =
                    m.stdout.lines().chain(m.stderr.lines()).find(|l| l.contains("not supported"))
                {
                    notes.push(format!("makedumpfile {flag} said: {}", w.trim()));
                }
                theirs = Some(m);
            } else {
                let m = measure(
                    &mut dmastub_dump(&["--image", path(elf), "-d", "31", "--compress", name], &ours_out),
                    "",
                );
                if !m.success {
                    println!("FAILED: dmastub dump -d 31 --compress {name}:\n{}", m.stderr);
                    return false;
                }
                if i == 0 {
                    notes.push(format!("dmastub {name}: {}", m.stderr.lines().next().unwrap_or("").trim()));
                }
                ours.push(m);
            }
        }
        let Some(theirs) = theirs else { return false };
        let (ours_bytes, theirs_bytes) = (file_size(&ours_out), file_size(&theirs_out));
        let ours_s = ours.iter().map(|m| m.wall.as_secs_f64()).sum::<f64>() / ours.len() as f64;
        let ours_cpu = ours.iter().map(|m| m.cpu.as_secs_f64()).sum::<f64>() / ours.len() as f64;
        let ours_rss = ours.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0);
        let theirs_s = theirs.wall.as_secs_f64();
        let size = ours_bytes as f64 / theirs_bytes.max(1) as f64;
        let faster = theirs_s / ours_s;
        let rss = ours_rss as f64 / theirs.peak_rss_kib.max(1) as f64;
        println!(
            "{name:<5} {ours_bytes:>11} {theirs_bytes:>11} {size:>6.3}{:<8} {ours_s:>7.2} {theirs_s:>7.2} {faster:>6.1}x{:<8} \
             {:>8.1} {:>8.1} {rss:>6.3}{}",
            mark(size <= 1.0),
            mark(faster >= 10.0),
            mib(ours_rss),
            mib(theirs.peak_rss_kib),
            mark(rss <= 0.1),
        );
        notes.push(format!(
            "{name}: CPU seconds ours {ours_cpu:.2}, makedumpfile {:.2} ({:.1}x less)",
            theirs.cpu.as_secs_f64(),
            theirs.cpu.as_secs_f64() / ours_cpu.max(1e-9)
        ));
        let _ = std::fs::remove_file(&ours_out);
        let _ = std::fs::remove_file(&theirs_out);
    }
    println!(
        "(targets: size ratio <= 1, at least 10x faster, RSS ratio <= 0.1; wall time of the whole command)"
    );
    for n in notes {
        println!("  {n}");
    }
    true
}

/// The number after `key` in `text` (digits and dots), if any.
fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The byte count "(N bytes)" on the report line that starts with `prefix`.
fn traffic_bytes(report: &str, prefix: &str) -> Option<f64> {
    let line = report.lines().map(str::trim).find(|l| l.starts_with(prefix))?;
    let at = line.find(" bytes)")?;
    let open = line[..at].rfind('(')?;
    line[open + 1..at].parse().ok()
}

/// The client's sequential read rate in bytes/s: `RAW_BYTES` from 16 MiB up in `CHUNK` reads.
fn raw_rate() -> Result<f64, String> {
    let config = NetTlpConfig { adapter: ADAPTER, local: LOCAL, ..NetTlpConfig::default() };
    let mut mem = NetTlpMem::connect(config).map_err(|e| format!("NetTLP client: {e}"))?;
    let mut buf = vec![0u8; CHUNK];
    let start = 16u64 << 20;
    let t = Instant::now();
    let mut at = 0;
    while at < RAW_BYTES {
        mem.read(PhysAddr(start + at), &mut buf)
            .map_err(|e| format!("NetTLP read at {:#x}: {e}", start + at))?;
        at += CHUNK as u64;
    }
    Ok(RAW_BYTES as f64 / t.elapsed().as_secs_f64())
}

/// Target 3.
fn over_nettlp(raw: &Path, work: &Path) -> bool {
    let emulator = Emulator::start(path(raw), &ADAPTER.to_string());
    let before = raw_rate();
    let out = work.join("nettlp.zlib");
    let adapter = ADAPTER.to_string();
    let local = LOCAL.to_string();
    let dump: Measured =
        measure(&mut dmastub_dump(&["--nettlp", &adapter, "--nettlp-local", &local], &out), "");
    let after = raw_rate();
    drop(emulator);
    let (before, after) = match (before, after) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(e), _) | (_, Err(e)) => {
            println!("FAILED: {e}");
            return false;
        }
    };
    if !dump.success {
        println!("FAILED: dmastub dump --nettlp {adapter}:\n{}", dump.stderr);
        return false;
    }
    let r = &dump.stderr;
    let (Some(kept), Some(mem_map), Some(choosing), Some(dumping), Some(phase)) = (
        number_after(r, "of RAM: "),
        number_after(r, "mem_map: "),
        traffic_bytes(r, "choosing pages: NetTLP:"),
        traffic_bytes(r, "dumping: NetTLP:"),
        r.lines().find(|l| l.contains(": kdump-compressed, ")).and_then(|l| number_after(l, " in ")),
    ) else {
        println!("FAILED: dmastub dump --nettlp printed no page, mem_map or NetTLP traffic figures:\n{r}");
        return false;
    };
    let needed = kept * PAGE as f64 + mem_map;
    let dma = choosing + dumping;
    let read_ratio = dma / needed;
    let raw = (before + after) / 2.0;
    let throughput = dumping / phase;
    let speed = throughput / raw;
    println!(
        "\nNetTLP ({ADAPTER} <- {LOCAL}, emulator on loopback, -d 31 zlib, 16 tags, MRRS 512): read by DMA {:.0} \
         bytes / (kept {kept:.0} pages x 4096 + mem_map {mem_map:.0}) = {read_ratio:.4}{} (target <= 1.1); dump \
         phase {:.1} MB/s ({dumping:.0} bytes in {phase:.1} s) / raw sequential reads {:.1} MB/s = {speed:.2}x{} \
         (target >= 0.8)",
        dma,
        mark(read_ratio <= 1.1),
        throughput / 1e6,
        raw / 1e6,
        mark(speed >= 0.8),
    );
    println!(
        "  raw reads: {:.1} MB/s before the dump, {:.1} MB/s after ({} MiB in {} KiB reads); whole dump {:.1} s, \
         max RSS {:.1} MiB; DMA bytes count the choosing and dumping phases (finding the kernel is not reported)",
        before / 1e6,
        after / 1e6,
        RAW_BYTES >> 20,
        CHUNK >> 10,
        dump.wall.as_secs_f64(),
        mib(dump.peak_rss_kib)
    );
    for line in r.lines().filter(|l| l.contains("NetTLP") || l.contains("loses packets")) {
        println!("  {}", line.trim());
    }
    true
}
