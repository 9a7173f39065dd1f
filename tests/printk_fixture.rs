//! The kernel log read from real Linux 6.1 memory images (the fixtures), with the layout the
//! kernel itself exported in VMCOREINFO and the symbols of its System.map.

mod common;

use common::*;
use dmastub::linux::VmcoreInfo;
use dmastub::linux::load_system_map;
use dmastub::linux::{KernelLog, read_log};
use dmastub::linux::{Memory, View};
use dmastub::mmu::{AddressSpace, MemError, MmuConfig};
use dmastub::phys::{OpenOptions, open_file};
use std::path::Path;

const FIXTURE: &str = "linux-6.1-kaslr";

/// Counts what `read_log` asks for.
struct Counting<'a> {
    inner: View<'a>,
    reads: u64,
    bytes: u64,
}

impl Memory for Counting<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.reads += 1;
        self.bytes += buf.len() as u64;
        self.inner.read(addr, buf)
    }
}

/// The log of `snapshot`, and (reads, bytes) it took.
fn read_snapshot(dir: &Path, snapshot: &str) -> (KernelLog, u64, u64) {
    let t = truth(dir, snapshot);
    let image = unpacked(dir, &format!("{snapshot}.raw.zst"));
    let mem = open_file(&image, &OpenOptions::default()).expect("open the image");
    let mut space = AddressSpace::new(mem, MmuConfig::default());
    let cr3 = hex(&t["paging"]["kernel_cr3"]);
    let syms = load_system_map(&dir.join("System.map")).expect("System.map").slid(hex(&t["kaslr"]["offset"]));
    let note = t["vmcoreinfo"]["from_elf_note"].as_object().expect("vmcoreinfo.from_elf_note");
    let text: String = note
        .iter()
        .map(|(k, v)| format!("{k}={}\n", v.as_str().map_or(v.to_string(), String::from)))
        .collect();
    let types = VmcoreInfo::parse(text.as_bytes()).types();
    let mut mem = Counting { inner: View::new(&mut space, cr3), reads: 0, bytes: 0 };
    let log = read_log(&mut mem, &syms, &types).expect("read the kernel log");
    (log, mem.reads, mem.bytes)
}

#[test]
fn post_panic_log_ends_with_the_panic() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let (log, reads, bytes) = read_snapshot(&dir, "post-panic");
    let text = log.render(None);
    eprintln!(
        "post-panic: {} records, {} lines, {reads} reads, {bytes} bytes; layout: {}; problems: {:?}\nlast lines:\n{}",
        log.records.len(),
        text.lines().count(),
        log.layout,
        log.problems,
        log.render(Some(5))
    );
    assert_eq!(log.format, "printk ring buffer");
    assert!(log.problems.is_empty(), "{:?}", log.problems);
    assert!(text.contains("Kernel panic - not syncing: sysrq triggered crash"), "{text}");
    assert!(text.contains("] Linux version 6.1.0-56-amd64 "), "{text}");
    assert!(log.records.windows(2).all(|w| w[0].ts_nsec <= w[1].ts_nsec), "timestamps go backwards");
    assert!(log.records.windows(2).all(|w| w[1].seq == w[0].seq + 1), "sequence numbers have gaps");
    // The arrays are read in a few large pieces, not record by record.
    assert!(reads < 40, "{reads} reads");
    assert!(bytes < 2 << 20, "{bytes} bytes");

    // The end of the log is what the serial console printed last.
    let console = std::fs::read_to_string(dir.join("console.log")).expect("read console.log");
    let console_lines: Vec<&str> =
        console.lines().map(|l| l.trim_end_matches('\r')).filter(|l| l.starts_with('[')).collect();
    let want = &console_lines[console_lines.len() - 10..];
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(&got[got.len() - 10..], want);
}

#[test]
fn pre_panic_log_has_no_panic() {
    let Some(dir) = fixture_dir(FIXTURE) else { return };
    let (log, reads, bytes) = read_snapshot(&dir, "pre-panic");
    let text = log.render(None);
    eprintln!("pre-panic: {} records, {reads} reads, {bytes} bytes", log.records.len());
    assert!(log.problems.is_empty(), "{:?}", log.problems);
    assert!(text.contains("] Linux version 6.1.0-56-amd64 "), "{text}");
    assert!(!text.contains("Kernel panic"), "{text}");
    assert!(log.records.len() > 100);
}
