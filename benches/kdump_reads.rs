//! kdump-compressed files against the ELF core they came from: gdb's `dump binary memory` of
//! 64 MiB of the kernel's physical memory (from the kernel image up) served from (a) the 6.1
//! fixture's ELF core, (b) a zstd and (c) an lzo kdump file of the same memory, side by side in
//! one run, with the ratios kdump/ELF (target: within 2x).
//!
//! The two kdump files are built here from the ELF core at dump level 0 (every page) with the
//! library's own header and codec code, as `makedumpfile -z`/`-l -d 0` would lay them out.
//!
//! `cargo bench --bench kdump_reads` (needs gdb and the 6.1 fixture). Prints numbers; asserts
//! nothing about time.

#[path = "../tests/common/mod.rs"]
mod common;

use dmastub::gdb::{DmaTarget, Server, bind};
use dmastub::mmu::{AddressSpace, MmuConfig, Paging};
use dmastub::phys::kdump::header::{DUMP_DH_COMPRESSED_LZO, DUMP_DH_COMPRESSED_ZSTD, HEADER_VERSION};
use dmastub::phys::kdump::{Compression, DiskDumpHeader, PageDesc, SubHeader};
use dmastub::phys::{OpenOptions, open_file};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const DUMP: u64 = 64 << 20;
const PAGE: usize = 4096;

fn main() {
    if std::process::Command::new("gdb").arg("--version").output().is_err() {
        println!("gdb is not installed: nothing to measure (apt-get install gdb)");
        return;
    }
    let Some(dir) = common::fixture_dir("linux-6.1-kaslr") else { return };
    let elf = common::unpacked(&dir, "post-panic.elf.zst");
    let truth = common::truth(&dir, "post-panic");
    // The kernel image's physical start, rounded down to 2 MiB: text, data, page tables.
    let start = common::hex(&truth["kaslr"]["text_virt"])
        .wrapping_sub(0xffff_ffff_8000_0000)
        .wrapping_add(common::hex(&truth["kaslr"]["phys_base"]))
        & !0x1f_ffff;
    let out_dir = std::env::temp_dir().join(format!("dmastub-kdump-bench-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("temp dir");
    let mut files = vec![("ELF core".to_string(), elf.clone())];
    for c in [Compression::Zstd, Compression::Lzo] {
        let path = out_dir.join(format!("post-panic.kdump-d0-{c}"));
        let t = Instant::now();
        let size = write_kdump(&elf, &path, c);
        println!(
            "built {} kdump at dump level 0: {} MiB in {:.1} s",
            c,
            size >> 20,
            t.elapsed().as_secs_f64()
        );
        files.push((format!("kdump {c}"), path));
    }
    println!(
        "gdb dump binary memory of {} MiB at phys {start:#x} (the kernel image up), best of 3, alternating:",
        DUMP >> 20
    );
    let servers: Vec<(String, u16)> = files.iter().map(|(name, path)| (name.clone(), serve(path))).collect();
    let mut best = vec![Duration::MAX; servers.len()];
    let mut outputs: Vec<Vec<u8>> = vec![Vec::new(); servers.len()];
    for round in 0..4 {
        for (i, (_, port)) in servers.iter().enumerate() {
            let file = out_dir.join(format!("out{i}.bin"));
            let t = Instant::now();
            let out = common::gdb(
                *port,
                &[
                    "monitor phys",
                    &format!("dump binary memory {} {start:#x} {:#x}", file.display(), start + DUMP),
                ],
            );
            let took = t.elapsed();
            let bytes = std::fs::read(&file).unwrap_or_default();
            if bytes.len() as u64 != DUMP {
                println!(
                    "  {}: the dump came out short ({} bytes): gdb printed\n{out}",
                    servers[i].0,
                    bytes.len()
                );
                return;
            }
            // The first round warms the page cache and the servers; it is not counted.
            if round > 0 {
                best[i] = best[i].min(took);
            }
            outputs[i] = bytes;
        }
    }
    let same = outputs.iter().all(|o| *o == outputs[0]);
    let mbps = |d: Duration| DUMP as f64 / 1e6 / d.as_secs_f64();
    for (i, (name, _)) in servers.iter().enumerate() {
        println!(
            "  {name:<12} {:>7.0} ms  {:>7.1} MB/s  {:.2}x the ELF core's time",
            best[i].as_secs_f64() * 1e3,
            mbps(best[i]),
            best[i].as_secs_f64() / best[0].as_secs_f64()
        );
    }
    println!(
        "  (whole gdb runs: start, connect, dump; the three dumps are {})",
        if same { "identical" } else { "DIFFERENT" }
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// Serves the file in this process; its port.
fn serve(path: &Path) -> u16 {
    let mem = open_file(path, &OpenOptions::default()).expect("open");
    let space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
    let mut target = DmaTarget::new(space, false);
    let server = Server::new(bind("127.0.0.1:0").expect("bind"));
    let port = server.local_addr().expect("port").port();
    std::thread::spawn(move || server.serve_forever(&mut target));
    port
}

/// Writes every page of the ELF core's first RAM range as a kdump file (dump level 0) with
/// compression `c`; its size.
fn write_kdump(elf: &Path, out: &PathBuf, c: Compression) -> u64 {
    let mut mem = open_file(elf, &OpenOptions::default()).expect("open the ELF core");
    // The first range: the guest's RAM from 0 (the second is the BIOS ROM below 4 GiB).
    let max_pfn = mem.ram()[0].end() / PAGE as u64;
    let half = (max_pfn as usize).div_ceil(8).div_ceil(PAGE) * PAGE;
    let mut bitmap = vec![0u8; 2 * half];
    let mut pfns = Vec::new();
    for pfn in 0..max_pfn {
        if dmastub::phys::find_range(mem.ram(), dmastub::PhysAddr(pfn * PAGE as u64), PAGE as u64).is_some() {
            bitmap[(pfn / 8) as usize] |= 1 << (pfn % 8);
            bitmap[half + (pfn / 8) as usize] |= 1 << (pfn % 8);
            pfns.push(pfn);
        }
    }
    let header = DiskDumpHeader {
        header_version: HEADER_VERSION,
        status: if c == Compression::Zstd { DUMP_DH_COMPRESSED_ZSTD } else { DUMP_DH_COMPRESSED_LZO },
        block_size: PAGE as u32,
        sub_hdr_size: 1,
        bitmap_blocks: (2 * half / PAGE) as u32,
        max_mapnr: max_pfn as u32,
        nr_cpus: 2,
        ..DiskDumpHeader::default()
    };
    let sub = SubHeader { dump_level: 0, max_mapnr_64: max_pfn, ..SubHeader::default() };
    let mut f = header.to_bytes();
    f.resize(PAGE, 0);
    f.extend_from_slice(&sub.to_bytes());
    f.resize(2 * PAGE, 0);
    f.extend_from_slice(&bitmap);
    let data_at = (f.len() + pfns.len() * 24) as u64;
    let (mut descs, mut data) = (Vec::with_capacity(pfns.len() * 24), Vec::new());
    let (mut page, mut packed) = (vec![0u8; PAGE], Vec::new());
    for &pfn in &pfns {
        mem.read(dmastub::PhysAddr(pfn * PAGE as u64), &mut page).expect("read the ELF core");
        let offset = data_at + data.len() as u64;
        let d = if c.compress(&page, &mut packed) {
            data.extend_from_slice(&packed);
            PageDesc { offset, size: packed.len() as u32, flags: c.flag(), page_flags: 0 }
        } else {
            data.extend_from_slice(&page);
            PageDesc { offset, size: PAGE as u32, flags: 0, page_flags: 0 }
        };
        d.write_to(&mut descs);
    }
    f.extend_from_slice(&descs);
    f.extend_from_slice(&data);
    std::fs::write(out, &f).expect("write the kdump file");
    f.len() as u64
}
