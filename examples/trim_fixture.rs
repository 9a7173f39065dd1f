//! Makes a small fixture from a large one: a LiME image holding only the physical pages that
//! dmastub reads to find the kernel, list every task, switch to the timekeeper and read its
//! global, and print the kernel log — a few MiB instead of the whole RAM, so that CI can test
//! images (5-level paging, newer kernels) it has no room to carry whole.
//!
//! ```sh
//! cargo run --release --example trim_fixture -- FIXTURE_DIR SNAPSHOT OUT_DIR
//! # e.g. ../fixture-out/linux-6.1-la57 post-panic tests/fixtures/linux-6.1-la57-trimmed
//! ```
//!
//! FIXTURE_DIR is a folder made by ../shared/fixtures/tools (SNAPSHOT.raw.zst and
//! SNAPSHOT.truth.json in it). OUT_DIR gets SNAPSHOT.lime.zst and SNAPSHOT.truth.json. The
//! pages kept are exactly those read, so a change to what discovery reads needs a new trim.

use dmastub::linux::{Hints, discover};
use dmastub::linux::{Linux, render};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::{self, CoreNote, OpenOptions, PhysError, PhysMem, RamRange, SourceKind};
use dmastub::{PhysAddr, VirtAddr};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A source that remembers which pages were read.
struct Recording {
    inner: Box<dyn PhysMem>,
    pages: Arc<Mutex<BTreeSet<u64>>>,
}

impl PhysMem for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> SourceKind {
        self.inner.kind()
    }
    fn ram(&self) -> &[RamRange] {
        self.inner.ram()
    }
    fn is_volatile(&self) -> bool {
        // Lending in place would bypass the record.
        true
    }
    fn core_notes(&self) -> &[CoreNote] {
        self.inner.core_notes()
    }
    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        self.inner.read(addr, buf)?;
        let mut pages = self.pages.lock().expect("lock");
        let end = addr.0 + buf.len().max(1) as u64;
        for page in (addr.0 >> 12)..end.div_ceil(4096) {
            pages.insert(page);
        }
        Ok(())
    }
}

fn hex(v: &serde_json::Value) -> u64 {
    u64::from_str_radix(v.as_str().expect("hex string").trim_start_matches("0x"), 16).expect("hex")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, snapshot, out] = args.as_slice() else {
        return Err("usage: trim_fixture FIXTURE_DIR SNAPSHOT OUT_DIR".into());
    };
    let (src, out) = (Path::new(src), PathBuf::from(out));
    let truth_text = std::fs::read_to_string(src.join(format!("{snapshot}.truth.json")))?;
    let truth: serde_json::Value = serde_json::from_str(&truth_text)?;
    let raw = std::env::temp_dir().join(format!("trim-{}.raw", std::process::id()));
    let st = Command::new("zstd")
        .args(["-d", "-q", "-f"])
        .arg(src.join(format!("{snapshot}.raw.zst")))
        .arg("-o")
        .arg(&raw)
        .status()?;
    if !st.success() {
        return Err("zstd -d failed".into());
    }

    let pages = Arc::new(Mutex::new(BTreeSet::new()));
    let mem = phys::open_file(&raw, &OpenOptions::default())?;
    let recording = Recording { inner: mem, pages: pages.clone() };
    let mut space = AddressSpace::new(Box::new(recording), MmuConfig::new(Paging::Level4));
    let linux = Linux::new(discover(&mut space, Hints::default())?);
    let ps = render::ps(&linux.tasks(&mut space, true)?);
    let dmesg = render::dmesg(&linux.log(&mut space)?, None);
    let tk = &truth["timekeeper"];
    let sw = linux.task_cr3(&mut space, tk["pid"].as_i64().ok_or("timekeeper pid")? as i32)?;
    let mut global = [0u8; 32];
    space.read_virt_in(sw.cr3, VirtAddr(hex(&tk["global_virt"]) - 16), &mut global)?;
    for t in truth["processes"].as_array().ok_or("processes")? {
        let _ = linux.task_cr3(&mut space, t["pid"].as_i64().unwrap_or(-1) as i32);
    }
    eprintln!("{} tasks listed, {} log lines", ps.lines().count() - 1, dmesg.lines().count());

    // LiME: one range per run of consecutive pages.
    let lime_path = out.join(format!("{snapshot}.lime"));
    std::fs::create_dir_all(&out)?;
    let mut lime = std::io::BufWriter::new(std::fs::File::create(&lime_path)?);
    let pages = pages.lock().expect("lock").clone();
    let mut file = std::fs::File::open(&raw)?;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &p in &pages {
        match runs.last_mut() {
            Some((_, end)) if *end == p => *end += 1,
            _ => runs.push((p, p + 1)),
        }
    }
    for (start, end) in &runs {
        let (s, e) = (start * 4096, end * 4096 - 1);
        lime.write_all(&0x4C69_4D45u32.to_le_bytes())?;
        lime.write_all(&1u32.to_le_bytes())?;
        lime.write_all(&s.to_le_bytes())?;
        lime.write_all(&e.to_le_bytes())?;
        lime.write_all(&[0u8; 8])?;
        let mut buf = vec![0u8; (e - s + 1) as usize];
        use std::io::{Read, Seek, SeekFrom};
        file.seek(SeekFrom::Start(s))?;
        file.read_exact(&mut buf)?;
        lime.write_all(&buf)?;
    }
    lime.flush()?;
    drop(lime);
    std::fs::remove_file(&raw)?;
    let st = Command::new("zstd").args(["-19", "--long=27", "-q", "-f", "--rm"]).arg(&lime_path).status()?;
    if !st.success() {
        return Err("zstd failed".into());
    }
    std::fs::write(out.join(format!("{snapshot}.truth.json")), truth_text)?;
    eprintln!(
        "kept {} pages ({} KiB) in {} ranges: {}.zst",
        pages.len(),
        pages.len() * 4,
        runs.len(),
        lime_path.display()
    );
    Ok(())
}
