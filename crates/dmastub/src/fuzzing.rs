//! The fuzz harnesses: one function per target in `fuzz/fuzz_targets/`, each taking the
//! fuzzer's bytes and driving one path that untrusted input takes through dmastub.
//!
//! A harness panics only when dmastub breaks a promise: a panic inside it, or a read that
//! returns bytes other than the machine's. Error results are the expected answer to bad input.
//! The cargo-fuzz targets are one-line wrappers, and `tests/fuzz_corpora.rs` calls the same
//! functions on every file of `fuzz/corpus/TARGET/` with the stable toolchain, so CI replays the
//! corpora (and every input a fuzzer once crashed on) without nightly.
//!
//! Targets that need "real memory" use the trimmed images in `tests/fixtures` (always in the
//! repository); the walkers also use the full 6.1 post-panic image of the shared fixtures when
//! it is there, whose tasks have registers to unwind. Their inputs do not carry memory: they
//! carry mutations (which bytes of the memory a clean run read, and what to write there), so
//! the corpus stays small and every mutation lands somewhere a walker looks.

use crate::addr::{PhysAddr, VirtAddr};
use crate::linux::btf::Btf;
use crate::linux::commands::Linux;
use crate::linux::discover::{Hints, discover};
use crate::linux::tasks::TaskLayout;
use crate::linux::threads::ThreadLayout;
use crate::linux::unwind::{self, Orc, OrcLayout};
use crate::linux::{Hint, render};
use crate::linux::{Memory, TypeInfo, View, kallsyms};
use crate::mmu::walk::{DirectReader, walk, walk_trace};
use crate::mmu::{AddressSpace, MemError, MmuConfig, Paging};
use crate::phys::buffer::BufferMem;
use crate::phys::nettlp::wire::{self, Completion, CplStatus, MemRequest, RequesterId, Tlp};
use crate::phys::nettlp::{NetTlpConfig, NetTlpMem};
use crate::phys::{FileMem, Format, OpenOptions, PhysError, PhysMem, RamRange, Segment, SourceKind};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A harness: the fuzzer's bytes in; panics only on a broken promise.
pub type Harness = fn(&[u8]);

/// Every harness by target name, as `fuzz/fuzz_targets/NAME.rs` and `fuzz/corpus/NAME/` call it.
pub const TARGETS: &[(&str, Harness)] = &[
    ("image", image),
    ("btf", btf),
    ("kallsyms", kallsyms),
    ("walkers", walkers),
    ("page_walk", page_walk),
    ("monitor", monitor),
    ("nettlp", nettlp),
    ("protocol", protocol),
];

/// Little-endian fields taken off the front of the input; missing bytes read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> u64 {
        let n = n.min(8);
        let mut b = [0u8; 8];
        let k = n.min(self.0.len());
        b[..k].copy_from_slice(&self.0[..k]);
        self.0 = &self.0[k..];
        u64::from_le_bytes(b)
    }
    fn u8(&mut self) -> u8 {
        self.take(1) as u8
    }
    fn u16(&mut self) -> u16 {
        self.take(2) as u16
    }
    fn u32(&mut self) -> u32 {
        self.take(4) as u32
    }
    fn u64(&mut self) -> u64 {
        self.take(8)
    }
}

// ---------------------------------------------------------------------------------------------
// Image files: format detection, ELF core and LiME parsing, reads through the ranges.

/// The input as a memory image file: detected, then forced to each format, and read.
pub fn image(data: &[u8]) {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "dmastub-fuzz-{}-{}.img",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    for format in [None, Some(Format::Elf), Some(Format::Lime), Some(Format::Raw)] {
        let opts = OpenOptions { format, ..OpenOptions::default() };
        if let Ok(mut mem) = FileMem::open(&path, &opts) {
            check_file_mem(&mut mem, data);
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Reads the edges of every range and checks them against the file's bytes.
fn check_file_mem(mem: &mut FileMem, file: &[u8]) {
    let _ = mem.describe();
    for note in mem.core_notes() {
        let _ = crate::linux::threads::parse_prstatus(&note.desc);
        let _ = crate::linux::vmcoreinfo::VmcoreInfo::parse(&note.desc);
    }
    let ranges = mem.ranges().to_vec();
    let mut buf = [0u8; 64];
    for r in &ranges {
        let ends = [r.phys_start, r.phys_start + r.len.saturating_sub(64), r.phys_start + r.len - 1];
        for addr in ends {
            let n = (r.phys_start + r.len - addr).min(64) as usize;
            let got = mem.read(PhysAddr(addr), &mut buf[..n]);
            assert!(got.is_ok(), "a read inside range {r:?} at {addr:#x} failed: {got:?}");
            for (i, &b) in buf[..n].iter().enumerate() {
                let off = addr - r.phys_start + i as u64;
                let want = if off < r.file_len { file[(r.file_offset + off) as usize] } else { 0 };
                assert_eq!(b, want, "phys {:#x} in range {r:?}", addr + i as u64);
            }
            if let Some(lent) = mem.bytes_at(PhysAddr(addr), n as u64) {
                assert_eq!(lent, &buf[..n], "bytes_at and read disagree at {addr:#x}");
            }
        }
        // Just past the range: an error unless the next range starts there.
        let end = r.phys_start.saturating_add(r.len);
        let next_starts = ranges.iter().any(|o| o.phys_start == end);
        if !next_starts && mem.read(PhysAddr(end), &mut buf[..1]).is_ok() {
            panic!("phys {end:#x} past range {r:?} read as RAM");
        }
    }
    let _ = mem.read(PhysAddr(u64::MAX - 3), &mut buf[..8]);
}

// ---------------------------------------------------------------------------------------------
// Fixture memory, read clean once, then with mutations.

/// A trimmed real image from `tests/fixtures` (or a shared fixture), unpacked once per process
/// and held in memory: its source (for RAM ranges and notes) and the bytes of each range.
struct Image {
    name: String,
    mem: Arc<FileMem>,
    ranges: Vec<(u64, Vec<u8>)>,
}

impl Image {
    /// The bytes at `[addr, addr + len)` when one range holds them all.
    fn bytes_at(&self, addr: u64, len: u64) -> Option<&[u8]> {
        self.ranges.iter().find_map(|(start, bytes)| {
            let from = usize::try_from(addr.checked_sub(*start)?).ok()?;
            bytes.get(from..from.checked_add(usize::try_from(len).ok()?)?)
        })
    }
}

fn unpack(src: &Path, name: &str) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join("dmastub-fuzz-fixtures");
    std::fs::create_dir_all(&dir).ok()?;
    let dst = dir.join(name);
    if dst.exists() {
        return Some(dst);
    }
    let tmp = dir.join(format!("{name}.{}.part", std::process::id()));
    let ok = std::process::Command::new("zstd")
        .args(["-d", "-q", "-f"])
        .arg(src)
        .arg("-o")
        .arg(&tmp)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("fuzzing: cannot unpack {} with zstd", src.display());
        return None;
    }
    std::fs::rename(&tmp, &dst).ok()?;
    Some(dst)
}

/// The images: the trimmed ones in the repository, then the full 6.1 post-panic image when the
/// shared fixtures are there.
fn images() -> &'static [Image] {
    static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        // The repository: two levels above this crate.
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let mut wanted: Vec<(PathBuf, String)> = ["linux-6.1-la57-trimmed", "linux-6.12.117-la57-trimmed"]
            .iter()
            .map(|d| (root.join("tests/fixtures").join(d).join("post-panic.lime.zst"), format!("{d}.lime")))
            .collect();
        let shared = std::env::var_os("DMASTUB_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../shared/fixtures"));
        let full = shared.join("linux-6.1-kaslr/post-panic.raw.zst");
        if full.exists() && std::env::var_os("DMASTUB_FUZZ_TRIMMED_ONLY").is_none() {
            wanted.push((full, "linux-6.1-kaslr-post-panic.raw".to_string()));
        }
        let mut out = Vec::new();
        for (src, name) in wanted {
            let Some(path) = unpack(&src, &name) else { continue };
            match FileMem::open(&path, &OpenOptions::default()) {
                Ok(mut mem) => {
                    let spans: Vec<(u64, u64)> =
                        mem.ranges().iter().map(|r| (r.phys_start, r.file_len)).collect();
                    let mut ranges = Vec::new();
                    for (start, len) in spans {
                        let mut bytes = vec![0u8; len as usize];
                        match mem.read(PhysAddr(start), &mut bytes) {
                            Ok(()) => ranges.push((start, bytes)),
                            Err(e) => eprintln!("fuzzing: {e}"),
                        }
                    }
                    out.push(Image { name, mem: Arc::new(mem), ranges })
                }
                Err(e) => eprintln!("fuzzing: {e}"),
            }
        }
        assert!(!out.is_empty(), "fuzzing: no fixture image (tests/fixtures, zstd)");
        out
    })
}

/// Every read an [`Overlay`] served: `(phys, len)`.
type ReadLog = Arc<Mutex<Vec<(u64, u64)>>>;

/// Physical memory = an image's bytes, with some bytes changed; optionally logs every read.
struct Overlay {
    image: &'static Image,
    base: Arc<FileMem>,
    patches: BTreeMap<u64, u8>,
    log: Option<ReadLog>,
}

impl Overlay {
    fn new(image: &'static Image) -> Self {
        Self { image, base: image.mem.clone(), patches: BTreeMap::new(), log: None }
    }
}

impl PhysMem for Overlay {
    fn name(&self) -> &str {
        self.base.name()
    }
    fn kind(&self) -> SourceKind {
        self.base.kind()
    }
    fn ram(&self) -> &[RamRange] {
        self.base.ram()
    }
    fn core_notes(&self) -> &[crate::phys::CoreNote] {
        self.base.core_notes()
    }
    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        if let Some(log) = &self.log {
            log.lock().unwrap_or_else(|e| e.into_inner()).push((addr.0, buf.len() as u64));
        }
        let len = buf.len() as u64;
        let not_ram = || PhysError::NotRam { addr, len, source_name: self.base.name().into() };
        let end = addr.0.checked_add(len).ok_or_else(not_ram)?;
        // Page by page: the trimmed LiME images hold each run of pages as its own range.
        let mut at = addr.0;
        while at < end {
            let n = (0x1000 - at % 0x1000).min(end - at);
            let bytes = self.image.bytes_at(at, n).ok_or_else(not_ram)?;
            let o = (at - addr.0) as usize;
            buf[o..o + n as usize].copy_from_slice(bytes);
            at += n;
        }
        for (&a, &v) in self.patches.range(addr.0..end) {
            buf[(a - addr.0) as usize] = v;
        }
        Ok(())
    }
}

/// A clean run's reads: `(phys, len)`, each range once.
fn spots_of(log: &Mutex<Vec<(u64, u64)>>) -> Vec<(u64, u64)> {
    let mut v = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    v.sort_unstable();
    v.dedup();
    v
}

/// Applies the input's mutations (15 bytes each: which read spot, where in it, what) to `mem`.
/// Ops: set, xor, add a value of 1, 2, 4 or 8 bytes, or copy 8 bytes from another spot (the
/// image's own pointers, which is what list walks follow).
fn mutate(mem: &mut Overlay, spots: &[(u64, u64)], input: &mut Input) {
    if spots.is_empty() {
        return;
    }
    let mut n = 0;
    while !input.0.is_empty() && n < 64 {
        n += 1;
        let (spot, off, op, value) = (input.u16(), input.u32(), input.u8(), input.u64());
        let (addr, len) = spots[usize::from(spot) % spots.len()];
        let at = addr + u64::from(off) % len.max(1);
        let width = 1usize << (op & 3);
        let mut cur = [0u8; 8];
        if mem.read(PhysAddr(at), &mut cur[..width]).is_err() {
            continue;
        }
        let old = u64::from_le_bytes(cur);
        let new = match (op >> 2) & 3 {
            0 => value,
            1 => old ^ value,
            2 => old.wrapping_add(value),
            _ => {
                let (from, flen) = spots[(value as usize) % spots.len()];
                let src = from + (value >> 32) % flen.max(1);
                let mut w = [0u8; 8];
                if mem.read(PhysAddr(src & !7), &mut w).is_err() {
                    continue;
                }
                u64::from_le_bytes(w)
            }
        };
        for (i, b) in new.to_le_bytes()[..width].iter().enumerate() {
            mem.patches.insert(at + i as u64, *b);
        }
    }
}

/// A fixture image with its kernel found (clean), and where its walkers and discovery read.
struct Machine {
    image: &'static Image,
    linux: Linux,
    config: MmuConfig,
    walk_spots: Vec<(u64, u64)>,
    discover_spots: Vec<(u64, u64)>,
}

thread_local! {
    static MACHINES: RefCell<Vec<Machine>> = const { RefCell::new(Vec::new()) };
}

fn with_machines<R>(f: impl FnOnce(&[Machine]) -> R) -> R {
    MACHINES.with(|m| {
        if m.borrow().is_empty() {
            let built: Vec<Machine> = images().iter().filter_map(machine).collect();
            assert!(!built.is_empty(), "fuzzing: no kernel found in any fixture image");
            *m.borrow_mut() = built;
        }
        f(&m.borrow())
    })
}

fn machine(image: &'static Image) -> Option<Machine> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut o = Overlay::new(image);
    o.log = Some(log.clone());
    let mut space = AddressSpace::new(Box::new(o), MmuConfig::default());
    let kernel = match discover(&mut space, Hints::default()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("fuzzing: {}: {e}", image.name);
            return None;
        }
    };
    let discover_spots = spots_of(&log);
    log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let config = space.config();
    let linux = Linux::new(kernel);
    run_walkers(&linux, &mut space);
    let walk_spots = spots_of(&log);
    eprintln!(
        "fuzzing: {}: kernel found; discovery read {} ranges, the walkers {}",
        image.name,
        discover_spots.len(),
        walk_spots.len()
    );
    Some(Machine { image, linux, config, walk_spots, discover_spots })
}

/// What `monitor ps -t`, `dmesg`, `threads` and `bt` do, over whatever memory `space` reads.
fn run_walkers(linux: &Linux, space: &mut AddressSpace) {
    if let Ok(list) = linux.tasks(space, true) {
        let _ = render::ps(&list);
    }
    if let Ok(log) = linux.log(space) {
        let _ = render::dmesg(&log, None);
    }
    let Ok(list) = linux.threads(space) else { return };
    let _ = render::threads(&list);
    let with_regs: Vec<_> = list.threads.iter().filter(|t| unwind::no_registers(t).is_none()).collect();
    if with_regs.is_empty() {
        return;
    }
    let k = &linux.kernel;
    let mut view = View::new(space, k.cr3.value);
    let types = k.types.as_deref().map(|t| t as &dyn TypeInfo);
    let Ok(orc) = Orc::load(&mut view, &k.symbols, types) else { return };
    // The panicking thread and a few others: each unwind reads its whole stack.
    for t in with_regs.iter().filter(|t| t.panicking).chain(with_regs.iter().take(3)) {
        let _ = unwind::render(t, unwind::backtrace(&mut view, &k.symbols, &orc, t));
    }
}

/// The task list, kernel log, thread list and backtraces over fixture memory with the input's
/// mutations in the places a clean run of them read. First byte: which image.
pub fn walkers(data: &[u8]) {
    let mut input = Input(data);
    let which = input.u8();
    with_machines(|ms| {
        let m = &ms[usize::from(which) % ms.len()];
        let mut o = Overlay::new(m.image);
        mutate(&mut o, &m.walk_spots, &mut input);
        let mut space = AddressSpace::new(Box::new(o), m.config);
        run_walkers(&m.linux, &mut space);
    });
}

// ---------------------------------------------------------------------------------------------
// BTF and kallsyms.

/// The fixture's own `.BTF`, found in the 6.1 trimmed image by its header.
fn real_btf() -> &'static [u8] {
    static BLOB: OnceLock<Vec<u8>> = OnceLock::new();
    BLOB.get_or_init(|| {
        let image = &images()[0];
        let mut mem = Overlay::new(image);
        for (start, bytes) in &image.ranges {
            let magic = [0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
            for at in (0..bytes.len().saturating_sub(24)).step_by(4) {
                if bytes[at..at + 8] != magic {
                    continue;
                }
                let Ok(len) = Btf::blob_len(&bytes[at..at + 24]) else { continue };
                let mut blob = vec![0u8; len];
                if mem.read(PhysAddr(start + at as u64), &mut blob).is_ok()
                    && Btf::parse(&blob, "fixture").is_ok()
                {
                    return blob;
                }
            }
        }
        panic!("fuzzing: no .BTF in {}", image.name);
    })
}

/// Parses the input as BTF (first byte even) or the fixture's real BTF with the input's
/// mutations (odd: 4-byte offset, op, 8-byte value, like [`walkers`]); then asks it for every
/// layout dmastub uses.
pub fn btf(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    let blob: Vec<u8> = if mode & 1 == 0 {
        input.0.to_vec()
    } else {
        let mut blob = real_btf().to_vec();
        let cut = input.u32() as usize;
        if mode & 2 != 0 && cut < blob.len() {
            blob.truncate(cut);
        }
        let mut n = 0;
        while !input.0.is_empty() && n < 64 {
            n += 1;
            let (off, op, value) = (input.u32() as usize, input.u8(), input.u64());
            if blob.is_empty() {
                break;
            }
            let at = off % blob.len();
            let width = (1usize << (op & 3)).min(blob.len() - at);
            let mut cur = [0u8; 8];
            cur[..width].copy_from_slice(&blob[at..at + width]);
            let new = match (op >> 2) & 3 {
                0 => value,
                1 => u64::from_le_bytes(cur) ^ value,
                _ => u64::from_le_bytes(cur).wrapping_add(value),
            };
            blob[at..at + width].copy_from_slice(&new.to_le_bytes()[..width]);
        }
        blob
    };
    let _ = Btf::blob_len(&blob);
    let Ok(b) = Btf::parse(&blob, "fuzz") else { return };
    let _ = b.type_count();
    for ty in ["task_struct", "list_head", "printk_ringbuffer", "orc_entry", "module", "mm_struct"] {
        let _ = b.members(ty);
        let _ = b.size_of(ty);
    }
    let _ = b.member("task_struct", "thread.sp");
    let _ = b.enum_value(None, "PIDTYPE_PID");
    let _ = b.enum_value(Some("pid_type"), "PIDTYPE_TGID");
    if let Ok(tl) = TaskLayout::from_types(&b) {
        let _ = ThreadLayout::from_types(&b, &tl);
    }
    let _ = OrcLayout::from_types(&b);
}

/// Flat kernel-virtual memory at `base`, for kallsyms over bytes the fuzzer wrote.
struct Flat<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl Memory for Flat<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = addr.wrapping_sub(self.base);
        let src = usize::try_from(off)
            .ok()
            .and_then(|o| self.bytes.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| {
                MemError::Phys(PhysError::NotRam {
                    addr: PhysAddr(addr),
                    len: buf.len() as u64,
                    source_name: "fuzz".into(),
                })
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// kallsyms: the input as kernel memory holding the tables (first byte even), or discovery
/// (which finds the kernel and decodes its kallsyms, BTF and VMCOREINFO) over a fixture image
/// with the input's mutations where a clean discovery read (odd: then as in [`walkers`]).
pub fn kallsyms(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    if mode & 1 == 0 {
        let base = 0xffff_ffff_8200_0000u64;
        let mut flat = Flat { base, bytes: input.0 };
        let len = input.0.len() as u64;
        let samples: Vec<u64> = (0..len.div_ceil(4096)).map(|p| base + p * 4096).collect();
        if let Ok(k) = kallsyms::find(&mut flat, &samples, base..base + len) {
            let _ = k.len();
            let first: Vec<(String, u64)> = k.iter().take(16).map(|(n, a)| (n.to_string(), a)).collect();
            for (_, a) in first {
                let _ = k.lookup_sized(a.wrapping_add(1));
            }
        }
        return;
    }
    with_machines(|ms| {
        let m = &ms[usize::from(mode >> 1) % ms.len()];
        let mut o = Overlay::new(m.image);
        mutate(&mut o, &m.discover_spots, &mut input);
        let mut space = AddressSpace::new(Box::new(o), MmuConfig::default());
        if let Ok(k) = discover(&mut space, Hints::default()) {
            let _ = render::kernel_report(&k, Hint::describe);
            let _ = render::kernel_summary(&k, Hint::describe);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Page walks over random tables.

/// The input as physical memory holding page tables (after a header: paging depth, physical
/// width, CR3). Walks the addresses the memory's own words name, checking that the direct walk,
/// the traced walk and the cached [`AddressSpace`] agree, and that a translated read returns
/// the bytes at the physical address.
pub fn page_walk(data: &[u8]) {
    let mut input = Input(data);
    let (flags, phys_bits, cr3) = (input.u8(), input.u8(), input.u64());
    let paging = if flags & 1 == 0 { Paging::Level4 } else { Paging::Level5 };
    let config = MmuConfig { paging, phys_bits };
    let mut ram = input.0.to_vec();
    ram.resize(ram.len().next_multiple_of(4096).max(4096), 0);
    let words: Vec<u64> =
        ram.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
    let mut virts: Vec<u64> = words.iter().copied().filter(|w| *w != 0).take(24).collect();
    virts.extend([0, 0xffff_ffff_8100_0000, 0xff11_0000_0000_0000, 0x7fff_ffff_f000, u64::MAX]);
    let mut direct_mem = BufferMem::new("fuzz", ram.clone());
    let mut space = AddressSpace::new(Box::new(BufferMem::new("fuzz", ram.clone())), config);
    for &v in &virts {
        let virt = VirtAddr(v);
        let direct = walk(&mut DirectReader::new(&mut direct_mem), config, cr3, virt, None);
        let traced = walk_trace(&mut DirectReader::new(&mut direct_mem), config, cr3, virt);
        assert_eq!(direct, traced.result, "walk and walk_trace disagree on {v:#x}");
        let cached = space.translate_in(cr3, virt);
        assert_eq!(direct, cached, "the cached walk disagrees on {v:#x}");
        let _ = space.vtop_in(cr3, virt);
        let mut buf = [0u8; 24];
        let read = space.read_virt_in(cr3, virt, &mut buf);
        if let (Ok(t), Ok(())) = (&direct, &read) {
            // The first byte is at the translated address, whatever the rest spans.
            let p = usize::try_from(t.phys.0).ok();
            assert_eq!(p.and_then(|p| ram.get(p)), Some(&buf[0]), "read of {v:#x} at {:#x}", t.phys.0);
        }
        if read.is_ok() {
            // Every byte of a successful read is the byte its own page translates to.
            for (i, b) in buf.iter().enumerate() {
                let vi = VirtAddr(v.wrapping_add(i as u64));
                let t = walk(&mut DirectReader::new(&mut direct_mem), config, cr3, vi, None);
                let at = t.ok().and_then(|t| usize::try_from(t.phys.0).ok()).and_then(|p| ram.get(p));
                assert_eq!(at, Some(b), "byte {i} of a read at {v:#x}");
            }
        }
    }
    let mut a = [0u8; 16];
    let mut b = [0u8; 4100];
    let mut many: Vec<(VirtAddr, &mut [u8])> =
        vec![(VirtAddr(virts[0]), &mut a), (VirtAddr(virts[0]), &mut b)];
    let _ = space.read_virt_many_in(cr3, &mut many);
}

// ---------------------------------------------------------------------------------------------
// The monitor grammar and commands.

thread_local! {
    static MONITOR: RefCell<Option<crate::gdb::DmaTarget>> = const { RefCell::new(None) };
}

/// Each line of the input (up to 8) as a `monitor` command: parsed, and run against a target
/// over the 6.1 trimmed image with its kernel found.
pub fn monitor(data: &[u8]) {
    let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let _ = crate::gdb::monitor::parse_number(&text);
    MONITOR.with(|t| {
        let mut t = t.borrow_mut();
        let target = t.get_or_insert_with(|| {
            let image = &images()[0];
            let mut space = AddressSpace::new(Box::new(Overlay::new(image)), MmuConfig::default());
            let kernel = discover(&mut space, Hints::default()).expect("fuzzing: discovery on the 6.1 image");
            crate::gdb::DmaTarget::new(space, false).with_linux(Linux::new(kernel))
        });
        // Each input starts from the kernel's page tables in virtual mode.
        if let Some(cr3) = target.linux().map(|l| l.kernel.cr3.value) {
            target.set_cr3(cr3, "fuzz");
        }
        let _ = target.run_command(crate::gdb::monitor::Command::Virt);
        for line in text.lines().take(8) {
            if let Ok(cmd) = crate::gdb::monitor::parse(line) {
                let _ = target.run_command(cmd);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// NetTLP: datagram parsing, and the client's reassembly of completions from a hostile adapter.

/// The byte an adapter returns for physical address `a` (so any byte out of place shows).
fn pattern(a: u64) -> u8 {
    (a ^ (a >> 8) ^ (a >> 17)).wrapping_mul(0x9d) as u8 ^ 0x5a
}

/// How the fake adapter answers: one action per request, in turn.
#[derive(Default)]
struct Script {
    open: bool,
    /// The client of this input: requests from an earlier input's client (a late one still
    /// queued at the adapter) go unanswered, as they would from any other host.
    client: Option<Ipv4Addr>,
    actions: Vec<[u8; 4]>,
    garbage: Vec<u8>,
    next: usize,
}

struct FakeAdapter {
    adapter: Ipv4Addr,
    /// 127.X.Y.0: each input's client takes the next address in it.
    local: [u8; 3],
    script: Arc<Mutex<Script>>,
}

/// Loopback addresses of our own (127.X.Y.2 for the adapter, others for the clients), so that
/// parallel processes and the project's NetTLP tests never share a port.
fn fake_adapter() -> &'static FakeAdapter {
    static ADAPTER: OnceLock<FakeAdapter> = OnceLock::new();
    ADAPTER.get_or_init(|| {
        let pid = std::process::id();
        let x = 100 + (pid % 100) as u8;
        let y = (pid / 100) as u8;
        let adapter = Ipv4Addr::new(127, x, y, 2);
        let local = [127, x, y];
        let script = Arc::new(Mutex::new(Script::default()));
        for tag in 0..wire::MAX_TAGS {
            let sock = UdpSocket::bind(SocketAddrV4::new(adapter, wire::port_for_tag(tag)))
                .expect("fuzzing: bind the fake NetTLP adapter");
            let script = script.clone();
            std::thread::spawn(move || serve_fake(sock, script));
        }
        FakeAdapter { adapter, local, script }
    })
}

fn serve_fake(sock: UdpSocket, script: Arc<Mutex<Script>>) {
    let mut buf = vec![0u8; wire::MAX_DATAGRAM + 64];
    let mut out = Vec::new();
    loop {
        let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) else { continue };
        let Ok(Tlp::MemRead(req)) = wire::parse(&buf[..n]) else { continue };
        // Answers are sent with the script locked, so none outlives its input.
        let mut s = script.lock().unwrap_or_else(|e| e.into_inner());
        if !s.open || s.client != Some(*from.ip()) {
            continue;
        }
        let action = if s.actions.is_empty() { [0; 4] } else { s.actions[s.next % s.actions.len()] };
        s.next += 1;
        for d in answers(&req, action, &s.garbage, &mut out) {
            let _ = sock.send_to(d, from);
        }
    }
}

/// One completion of `n` bytes from the request's byte `start`, its fields changed by `fields`
/// (byte count + `fields[0] & 0xf`, requester and tag xor `fields[1]`, lower address xor
/// `fields[2]`). The payload is what the machine holds where the completion's own fields say its
/// bytes go, so a client that puts them there gets the machine's bytes whatever it accepts.
fn completion(req: &MemRequest, start: u32, n: u32, fields: [u8; 3], out: &mut Vec<u8>) {
    let byte_count = ((req.len - start) as u16).saturating_add(u16::from(fields[0] & 0xf)).min(4096);
    let claimed = (req.addr + u64::from(req.len)).wrapping_sub(u64::from(byte_count));
    let lower_addr = (claimed as u8 ^ fields[2]) & 0x7f;
    let skip = u64::from(lower_addr & 3);
    let dws = (skip + u64::from(n)).div_ceil(4);
    let payload: Vec<u8> =
        (0..dws * 4).map(|i| pattern(claimed.wrapping_sub(skip).wrapping_add(i))).collect();
    let c = Completion {
        completer: RequesterId(0x0100),
        status: CplStatus::Success,
        byte_count,
        requester: RequesterId(req.requester.0 ^ u16::from(fields[1] >> 4)),
        tag: req.tag ^ (fields[1] & 0xf),
        lower_addr,
        payload: &payload,
    };
    wire::encode_completion(&c, out);
}

/// The datagrams answering `req` under `action` (kind, then three parameters).
fn answers<'a>(req: &MemRequest, action: [u8; 4], garbage: &[u8], out: &'a mut Vec<u8>) -> Vec<&'a [u8]> {
    out.clear();
    let mut ends = Vec::new();
    let [kind, p1, p2, p3] = action;
    let piece = (u32::from(p1 & 0x1f) + 1) * 4;
    let pieces = |len: u32| -> Vec<(u32, u32)> {
        let mut v = Vec::new();
        let mut s = 0;
        while s < len {
            let n = piece.min(len - s);
            v.push((s, n));
            s += n;
        }
        v
    };
    let emit = |out: &mut Vec<u8>, ends: &mut Vec<usize>, start: u32, n: u32, fields: [u8; 3]| {
        completion(req, start, n, fields, out);
        ends.push(out.len());
    };
    match kind % 9 {
        0 => emit(out, &mut ends, 0, req.len, [0; 3]),
        1 => pieces(req.len).into_iter().for_each(|(s, n)| emit(out, &mut ends, s, n, [0; 3])),
        2 => pieces(req.len).into_iter().rev().for_each(|(s, n)| emit(out, &mut ends, s, n, [0; 3])),
        3 => pieces(req.len).into_iter().for_each(|(s, n)| {
            emit(out, &mut ends, s, n, [0; 3]);
            emit(out, &mut ends, s, n.min(u32::from(p2) + 1), [0; 3]);
        }),
        4 => {} // no answer: the client times out and sends again
        5 => {
            let status = [CplStatus::UnsupportedRequest, CplStatus::CompleterAbort][usize::from(p1 & 1)];
            let c = Completion {
                completer: RequesterId(0x0100),
                status,
                byte_count: req.len as u16,
                requester: req.requester,
                tag: req.tag,
                lower_addr: req.addr as u8 & 0x7f,
                payload: &[],
            };
            wire::encode_completion(&c, out);
            ends.push(out.len());
        }
        6 => {
            // Fields that do not fit the request, then the right answer.
            let start = u32::from(p3) % req.len;
            emit(out, &mut ends, start, req.len - start, [p2 | 1, p1, p3]);
            emit(out, &mut ends, 0, req.len, [0; 3]);
        }
        7 => {
            out.extend_from_slice(garbage);
            ends.push(out.len());
            emit(out, &mut ends, 0, req.len, [0; 3]);
        }
        _ => {
            // A payload shorter than its byte count says: only part of the request.
            let n = (u32::from(p1) * 4).min(req.len);
            emit(out, &mut ends, 0, n, [0; 3]);
            if n < req.len {
                emit(out, &mut ends, n, req.len - n, [0; 3]);
            }
        }
    }
    let mut v = Vec::with_capacity(ends.len());
    let mut rest: &'a [u8] = out;
    let mut prev = 0;
    for e in ends {
        let (d, r) = rest.split_at(e - prev);
        v.push(d);
        rest = r;
        prev = e;
    }
    v
}

/// The input as one datagram for the parser (first byte even), or as a read through the real
/// NetTLP client from a fake adapter on the loopback that answers as the input says (odd):
/// split, reordered, duplicated, dropped, errors, fields that fit no request, garbage. A read
/// that succeeds must hold exactly the machine's bytes.
pub fn nettlp(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    if mode & 1 == 0 {
        if let Ok(Tlp::Completion(c)) = wire::parse(input.0) {
            let _ = c.data();
            let mut out = Vec::new();
            wire::encode_completion(&c, &mut out);
            // A completion encodes back to a datagram that parses to the same completion.
            assert_eq!(wire::parse(&out), Ok(Tlp::Completion(c)), "completion round trip");
        } else if let Ok(Tlp::MemRead(r)) = wire::parse(input.0) {
            let mut out = Vec::new();
            wire::encode_read(&r, &mut out);
        }
        return;
    }
    let (tags, mrrs, retries) = (input.u8(), input.u8(), input.u8());
    let mut segs: Vec<(u64, usize)> = Vec::new();
    for _ in 0..1 + (mode >> 1) % 3 {
        let addr = u64::from(input.u32()) << (input.u8() % 20);
        let len = usize::from(input.u16() % 8193);
        segs.push((addr, len));
    }
    let glen = usize::from(input.u8());
    let garbage = input.0[..glen.min(input.0.len())].to_vec();
    input.0 = &input.0[garbage.len()..];
    let actions: Vec<[u8; 4]> = input.0.chunks_exact(4).take(64).map(|c| [c[0], c[1], c[2], c[3]]).collect();

    let fake = fake_adapter();
    static CLIENTS: AtomicU64 = AtomicU64::new(0);
    let [a, b, c] = fake.local;
    let local = Ipv4Addr::new(a, b, c, 10 + (CLIENTS.fetch_add(1, Ordering::Relaxed) % 240) as u8);
    let config = NetTlpConfig {
        adapter: fake.adapter,
        local,
        tags: 1 + tags % wire::MAX_TAGS,
        mrrs: 128 << (mrrs % 6),
        timeout: Duration::from_millis(2),
        retries: u32::from(retries % 3),
        ..NetTlpConfig::default()
    };
    let Ok(mut mem) = NetTlpMem::connect(config) else { return };
    *fake.script.lock().unwrap_or_else(|e| e.into_inner()) =
        Script { open: true, client: Some(local), actions, garbage, next: 0 };
    let mut bufs: Vec<Vec<u8>> = segs.iter().map(|&(_, len)| vec![0u8; len]).collect();
    let mut segments: Vec<Segment> =
        segs.iter().zip(bufs.iter_mut()).map(|(&(a, _), b)| Segment { addr: PhysAddr(a), buf: b }).collect();
    let result = mem.read_segments(&mut segments);
    fake.script.lock().unwrap_or_else(|e| e.into_inner()).open = false;
    let good = match &result {
        Ok(()) => segs.len(),
        Err(e) => e.index,
    };
    for (i, (&(addr, _), buf)) in segs.iter().zip(&bufs).enumerate().take(good) {
        for (j, &b) in buf.iter().enumerate() {
            let a = addr + j as u64;
            assert_eq!(b, pattern(a), "segment {i}: byte at phys {a:#x} is not the machine's ({result:?})");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The remote protocol: gdbstub over an in-memory connection, with the real target.

/// A gdb that sends the input's bytes, then hangs up; what the stub answers is counted.
struct MemStream {
    input: Vec<u8>,
    at: usize,
    sent: u64,
}

impl std::io::Read for MemStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.input.get(self.at..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl std::io::Write for MemStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sent += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the right checksum after every `$…#` packet (so mutations reach the packet parsers
/// rather than dying at the checksum).
fn fix_checksums(mut bytes: Vec<u8>) -> Vec<u8> {
    let mut i = 0;
    while let Some(start) = bytes[i..].iter().position(|&b| b == b'$').map(|p| p + i) {
        let Some(hash) = bytes[start + 1..].iter().position(|&b| b == b'#').map(|p| p + start + 1) else {
            break;
        };
        let sum = bytes[start + 1..hash].iter().fold(0u8, |s, &b| s.wrapping_add(b));
        let hex = format!("{sum:02x}");
        bytes.resize(bytes.len().max(hash + 3), b'0');
        bytes[hash + 1..hash + 3].copy_from_slice(hex.as_bytes());
        i = hash + 3;
    }
    bytes
}

thread_local! {
    static TARGETS_FOR_GDB: RefCell<Vec<crate::gdb::DmaTarget>> = const { RefCell::new(Vec::new()) };
}

/// A gdb session whose bytes are the input (after a first byte: bit 0, which target; bit 1,
/// fix the checksums): gdbstub's packet parser, every protocol extension dmastub implements,
/// the monitor and the thread list, against (0) the 6.1 trimmed image with its kernel found,
/// read-only, or (1) the synthetic machine with writes allowed.
pub fn protocol(data: &[u8]) {
    let mut input = Input(data);
    let mode = input.u8();
    let bytes = if mode & 2 != 0 { fix_checksums(input.0.to_vec()) } else { input.0.to_vec() };
    TARGETS_FOR_GDB.with(|t| {
        let mut t = t.borrow_mut();
        if t.is_empty() {
            let image = &images()[0];
            let mut space = AddressSpace::new(Box::new(Overlay::new(image)), MmuConfig::default());
            let kernel = discover(&mut space, Hints::default()).expect("fuzzing: discovery on the 6.1 image");
            t.push(crate::gdb::DmaTarget::new(space, false).with_linux(Linux::new(kernel)));
            let (ram, facts) = crate::testing::synthetic::synthetic_machine().expect("the synthetic machine");
            let space = AddressSpace::new(
                Box::new(BufferMem::new("synthetic", ram).writable()),
                MmuConfig::default(),
            );
            t.push(crate::gdb::DmaTarget::new(space, true).with_cr3(facts.cr3, "fuzz"));
        }
        let target = &mut t[usize::from(mode & 1)];
        let cr3 = target.linux().map(|l| l.kernel.cr3.value).or(target.state().cr3());
        if let Some(cr3) = cr3 {
            target.set_cr3(cr3, "fuzz");
        }
        let _ = target.run_command(crate::gdb::monitor::Command::Virt);
        target.on_connect();
        let conn = crate::gdb::conn::BufferedConn::over(MemStream { input: bytes, at: 0, sent: 0 });
        // The session may end when the bytes end, or on bytes no gdb sends (a bad checksum, a
        // packet that does not parse); never on the target's side: a gdb that can send the
        // packets would lose its session.
        if let Err(crate::gdb::session::SessionError::Protocol { message, kind }) =
            crate::gdb::session::run(target, conn)
        {
            let target_side =
                ["TargetError", "Missing", "UnsupportedStopReason", "ImplicitSwBreakpoints", "Tracepoint"];
            assert!(
                !target_side.iter().any(|k| kind.contains(k)),
                "the session ended on the target's side: {message}"
            );
        }
    });
}
