//! Memory images: the file sources on fuzzed files, and the Linux walkers on real images with fuzzed mutations.

use super::*;

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
    // kdump-compressed and flattened files: read the edges of every range; any answer but a
    // panic is fine (excluded pages and bad descriptors are errors).
    for format in [Format::Kdump, Format::Flattened] {
        let opts = OpenOptions { format: Some(format), ..OpenOptions::default() };
        if let Ok(mut mem) = crate::phys::open_file(&path, &opts) {
            let _ = mem.describe();
            let ranges = mem.ram().to_vec();
            let mut buf = [0u8; 64];
            for r in ranges.iter().take(64) {
                for addr in [r.start.0, r.end().saturating_sub(64), r.end().saturating_sub(1)] {
                    let _ = mem.read(PhysAddr(addr), &mut buf);
                }
            }
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
pub(super) struct Image {
    pub(super) name: String,
    pub(super) mem: Arc<FileMem>,
    pub(super) ranges: Vec<(u64, Vec<u8>)>,
}

impl Image {
    /// The bytes at `[addr, addr + len)` when one range holds them all.
    pub(super) fn bytes_at(&self, addr: u64, len: u64) -> Option<&[u8]> {
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
pub(super) fn test_images() -> &'static [Image] {
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
pub(super) struct Overlay {
    pub(super) image: &'static Image,
    pub(super) base: Arc<FileMem>,
    pub(super) patches: BTreeMap<u64, u8>,
    pub(super) log: Option<ReadLog>,
}

impl Overlay {
    pub(super) fn new(image: &'static Image) -> Self {
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
pub(super) fn mutate(mem: &mut Overlay, spots: &[(u64, u64)], input: &mut Input) {
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
pub(super) struct Machine {
    pub(super) image: &'static Image,
    pub(super) linux: Linux,
    pub(super) config: MmuConfig,
    pub(super) walk_spots: Vec<(u64, u64)>,
    pub(super) discover_spots: Vec<(u64, u64)>,
}

thread_local! {
    static MACHINES: RefCell<Vec<Machine>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn with_machines<R>(f: impl FnOnce(&[Machine]) -> R) -> R {
    MACHINES.with(|m| {
        if m.borrow().is_empty() {
            let built: Vec<Machine> = test_images().iter().filter_map(machine).collect();
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
        let _ = render::backtrace(
            t,
            unwind::backtrace(&mut view, &k.symbols, &orc, t).map_err(Into::into),
            Hint::describe,
        );
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
