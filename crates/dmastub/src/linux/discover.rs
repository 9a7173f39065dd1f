//! Finding the kernel with no hints: its page tables, KASLR slide, symbols and struct layouts.
//!
//! The order, cheapest and surest first:
//! 1. The VMCOREINFO note of an ELF core (free: it is in the file's headers).
//! 2. The real-mode trampoline below 1 MiB, which every x86-64 SMP kernel keeps: its header
//!    points at a page-table root that maps the kernel image, at the kernel's virtual entry
//!    point, and at the CR4 the CPUs run with (LA57). Reading 64 bytes of each low page finds it.
//! 3. From the entry point, the start of the kernel image (`_text`): the top 2 GiB map only the
//!    image, so `_text` is the lowest mapped 2 MiB slot of the run that holds the entry.
//! 4. The image's page permissions split it into text, read-only data and data; the kallsyms
//!    tables are in the read-only data, found by sampling it (see [`kallsyms`](super::kallsyms)).
//! 5. With symbols: the kernel's CR3 (`init_top_pgt`), `phys_base`, `page_offset_base`, the
//!    paging depth, the release (`linux_banner`), `init_task`, VMCOREINFO and the `.BTF` blob.
//!
//! What the user gives (`--cr3`, `--kaslr`, a System.map or vmlinux, `--btf`, `--profile`)
//! replaces what would be found. Every fact keeps where it came from, for `monitor kernel`.

use super::kallsyms::{self, Kallsyms, SAMPLE_STRIDE};
use super::profile::Profile;
use super::vmcoreinfo::VmcoreInfo;
use super::{Memory, Symbols, TypeInfo, View, btf::Btf};
use crate::addr::{PhysAddr, VirtAddr};
use crate::mmu::{AddressSpace, MemError, MmuConfig, Paging};
use crate::phys::find_range;
use std::fmt;

/// `__START_KERNEL_map`: where the kernel image is mapped, before the slide.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// `_text` at link time on x86-64 (`__START_KERNEL_map + CONFIG_PHYSICAL_START`, 16 MiB).
pub const DEFAULT_TEXT_LINK: u64 = 0xffff_ffff_8100_0000;
/// The direct map's base without memory KASLR, for 4- and 5-level paging.
pub const DEFAULT_PAGE_OFFSET: [u64; 2] = [0xffff_8880_0000_0000, 0xff11_0000_0000_0000];
/// The kernel image is mapped at 2 MiB granularity within the top 2 GiB.
const IMAGE_ALIGN: u64 = 2 << 20;
/// Largest kernel image believed (text, data and bss).
const MAX_IMAGE: u64 = 1 << 30;
/// Largest `.BTF` blob believed.
const MAX_BTF: u64 = 64 << 20;

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found<T> {
    pub value: T,
    pub source: String,
}

impl<T> Found<T> {
    pub fn new(value: T, source: impl Into<String>) -> Self {
        Self { value, source: source.into() }
    }
}

/// What the user tells us instead of letting us look.
#[derive(Default)]
pub struct Hints {
    pub cr3: Option<u64>,
    pub kaslr: Option<u64>,
    /// Symbols at their link addresses (System.map, vmlinux, profile) and where they came from.
    pub link_symbols: Option<(Kallsyms, String)>,
    /// A layout that replaces the in-memory BTF (`--btf`, `--profile`).
    pub types: Option<Box<dyn TypeInfo + Send>>,
}

/// The real-mode trampoline's facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trampoline {
    /// Physical address of `struct real_mode_header`.
    pub header: u64,
    /// `trampoline_pgd`: a root that maps the kernel image (and low memory, not the direct map).
    pub root: u64,
    /// `trampoline_header->start`: the kernel's virtual entry point for secondary CPUs.
    pub entry: u64,
    pub la57: bool,
}

/// Everything discovery found.
pub struct Kernel {
    pub release: Option<Found<String>>,
    pub text: Found<u64>,
    pub slide: Found<u64>,
    pub phys_base: Option<Found<u64>>,
    /// The kernel's page-table root (`init_top_pgt`/`swapper_pg_dir`), as a CR3.
    pub cr3: Found<u64>,
    pub paging: Found<Paging>,
    pub page_offset_base: Found<u64>,
    pub init_task: Option<Found<u64>>,
    pub symbols: Kallsyms,
    pub symbols_source: String,
    pub vmcoreinfo: Option<Found<VmcoreInfo>>,
    pub types: Option<Box<dyn TypeInfo + Send>>,
    pub trampoline: Option<Trampoline>,
    /// The kernel's BTF is in memory but reads of it failed: how many, and why (so that a
    /// missing layout is not blamed on a kernel without BTF).
    pub btf_unreadable: Option<String>,
    /// Bytes of target memory read (data and page-table pages).
    pub bytes_read: u64,
    /// Steps that failed along the way, and what was used instead.
    pub notes: Vec<String>,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("release", &self.release)
            .field("text", &self.text)
            .field("slide", &self.slide)
            .field("cr3", &self.cr3)
            .field("paging", &self.paging)
            .field("bytes_read", &self.bytes_read)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(
        "no kernel page tables found: {why}. Give the kernel's CR3 with --cr3 (e.g. from a register \
         dump), or --system-map/--vmlinux with --kaslr"
    )]
    NoRoot { why: String },
    #[error("no kernel image found under CR3 {cr3:#x}: {why}. Give --kaslr SLIDE, or a correct --cr3")]
    NoImage { cr3: u64, why: String },
    /// The source failed as a device (no adapter, timeouts): no hint would help. Says how
    /// many reads failed, and the first error.
    #[error("the memory cannot be read: {0}")]
    Unreadable(String),
}

/// Why the real-mode trampoline was not found.
#[derive(Debug, thiserror::Error)]
pub enum TrampolineError {
    /// Memory was read, and holds no trampoline.
    #[error("no real-mode trampoline below 1 MiB: {0}")]
    Absent(String),
    /// The source itself failed: how many reads, and the first error.
    #[error("the memory below 1 MiB cannot be read: {0}")]
    Unreadable(String),
}

/// Whether a failed read says the device failed, or that the data is not there: for messages
/// that must not pass one off as the other.
pub fn failure_kind(e: &MemError) -> &'static str {
    if e.is_device_failure() { "device" } else { "not in memory" }
}

/// "`failed` of `total` reads `what` failed: the first error (device)", when any failed.
pub fn failed_reads(results: &[Result<(), MemError>], what: &str) -> Option<String> {
    let first = results.iter().find_map(|r| r.as_ref().err())?;
    let failed = results.iter().filter(|r| r.is_err()).count();
    Some(format!("{failed} of {} reads {what} failed: {first} ({})", results.len(), failure_kind(first)))
}

fn bytes_so_far(space: &AddressSpace) -> u64 {
    let s = space.stats();
    s.data_bytes + s.table_reads * 4096
}

/// Finds the kernel in `space`'s memory. Sets the space's paging depth to the kernel's.
pub fn discover(space: &mut AddressSpace, hints: Hints) -> Result<Kernel, DiscoverError> {
    let before = bytes_so_far(space);
    let mut notes = Vec::new();
    let mut note_vmci = space
        .mem()
        .core_notes()
        .iter()
        .find(|n| n.name == "VMCOREINFO")
        .map(|n| VmcoreInfo::parse(&n.desc))
        .filter(|v| !v.is_empty());
    // A note is a copy: believed only when memory agrees with it.
    if let Some(v) = &note_vmci
        && hints.cr3.is_none()
        && let Err(why) = check_vmcoreinfo(space, v)
    {
        let msg = format!(
            "the core's VMCOREINFO note is not believed: {why}; the kernel is found from memory instead"
        );
        log::warn!("{msg}");
        notes.push(msg);
        note_vmci = None;
    }

    // Paging depth and a root that maps the kernel image. The trampoline is read even with a
    // --cr3 given: its CR4 says whether that root is 4- or 5-level.
    let mut trampoline = None;
    if note_vmci.is_none() {
        match find_trampoline(space) {
            Ok(t) => trampoline = Some(t),
            Err(TrampolineError::Absent(why)) => notes.push(format!("real-mode trampoline: {why}")),
            Err(TrampolineError::Unreadable(e)) => return Err(DiscoverError::Unreadable(e)),
        }
    }
    let mut paging = match (&note_vmci, &trampoline) {
        (Some(v), _) if v.number("pgtable_l5_enabled").is_some() => Found::new(
            if v.number("pgtable_l5_enabled") == Some(1) { Paging::Level5 } else { Paging::Level4 },
            "VMCOREINFO",
        ),
        (_, Some(t)) => Found::new(if t.la57 { Paging::Level5 } else { Paging::Level4 }, "trampoline CR4"),
        _ => Found::new(space.paging(), "--paging"),
    };
    space.set_config(MmuConfig { paging: paging.value, ..space.config() });

    let vmci_root = note_vmci.as_ref().and_then(|v| {
        let pgd = v.symbol("swapper_pg_dir").or_else(|| v.symbol("init_top_pgt"))?;
        let phys_base = v.number("phys_base")? as u64;
        Some(pgd.wrapping_sub(START_KERNEL_MAP).wrapping_add(phys_base))
    });
    let root = match (hints.cr3, vmci_root, &trampoline) {
        (Some(c), _, _) => Found::new(c, "--cr3"),
        (None, Some(c), _) => Found::new(c, "VMCOREINFO (swapper_pg_dir, phys_base)"),
        (None, None, Some(t)) => {
            Found::new(t.root, format!("trampoline_pgd (real-mode header at {:#x})", t.header))
        }
        (None, None, None) => {
            let why = if notes.is_empty() { "nothing to start from".to_string() } else { notes.join("; ") };
            return Err(DiscoverError::NoRoot { why });
        }
    };

    // The kernel image.
    let entry_hint = note_vmci
        .as_ref()
        .and_then(|v| v.symbol("_stext"))
        .map(|a| (a, "VMCOREINFO _stext"))
        .or(trampoline.map(|t| (t.entry, "the trampoline's entry point, start of its mapping")))
        .or(hints.kaslr.map(|k| (DEFAULT_TEXT_LINK.wrapping_add(k), "--kaslr")));
    let text_source = entry_hint.map_or("first mapping of the top 2 GiB", |(_, s)| s);
    let entry_hint = entry_hint.map(|(a, _)| a);
    let text = find_text(space, root.value, entry_hint)
        .map_err(|why| DiscoverError::NoImage { cr3: root.value, why })?;
    let layout = image_layout(space, root.value, text);
    log::debug!("kernel image at {text:#x}: {layout:?}");

    // Symbols.
    let (symbols, symbols_source, link_text) = match hints.link_symbols {
        Some((syms, origin)) => {
            let link_text = syms.address("_text").or(syms.address("_stext"));
            (syms, origin, link_text)
        }
        None => {
            let mut view = View::new(space, root.value);
            match kallsyms::find(&mut view, &layout.rodata_samples, text..layout.end) {
                Ok(k) => {
                    let src =
                        format!("kallsyms in memory ({} symbols, tables at {:#x})", k.len(), k.table_addr);
                    (k, src, None)
                }
                Err(e) => {
                    notes.push(format!("kallsyms: {e}"));
                    (Kallsyms::default(), "none".to_string(), None)
                }
            }
        }
    };
    let slide = if let Some(k) = hints.kaslr {
        Found::new(k, "--kaslr")
    } else if let Some(k) = note_vmci.as_ref().and_then(VmcoreInfo::kernel_offset) {
        Found::new(k, "VMCOREINFO KERNELOFFSET")
    } else if let Some(link) = link_text {
        Found::new(text.wrapping_sub(link), format!("_text at {text:#x} minus its link address"))
    } else {
        Found::new(
            text.wrapping_sub(DEFAULT_TEXT_LINK),
            format!("_text at {text:#x} minus {DEFAULT_TEXT_LINK:#x}"),
        )
    };
    // File symbols are link addresses; move them by the slide.
    let symbols = if link_text.is_some() { symbols.slid(slide.value) } else { symbols };
    let sym = |name: &str| symbols.address(name);

    // The kernel's own root, which maps the direct map too (the trampoline's does not).
    let cr3 = if hints.cr3.is_some() || vmci_root.is_some() {
        root.clone()
    } else if let Some(pgd) = sym("init_top_pgt").or(sym("swapper_pg_dir")).or(sym("init_level4_pgt")) {
        match space.translate_in(root.value, VirtAddr(pgd)) {
            Ok(t) => Found::new(t.phys.0, "init_top_pgt, translated"),
            Err(e) => {
                notes.push(format!("init_top_pgt at {pgd:#x}: {e}"));
                root.clone()
            }
        }
    } else {
        notes.push(
            "no init_top_pgt symbol: the trampoline's root maps the image but not the direct map".into(),
        );
        root.clone()
    };
    let mut view = View::new(space, cr3.value);
    let read_u64 = |view: &mut View, name: &str| sym(name).and_then(|a| view.read_u64(a).ok());

    let vmcoreinfo = match note_vmci {
        Some(v) => Some(Found::new(v, "ELF core note")),
        None => read_vmcoreinfo(&mut view, &symbols)
            .map(|(v, at)| Found::new(v, format!("vmcoreinfo_data at {at:#x}"))),
    };
    let vmci = vmcoreinfo.as_ref().map(|f| &f.value);

    // What the page tables say, against which VMCOREINFO is checked.
    let mapped_base =
        view.translate(text).ok().map(|tp| tp.wrapping_sub(text.wrapping_sub(START_KERNEL_MAP)));
    let phys_base = match (vmci.and_then(|v| v.number("phys_base")), mapped_base) {
        (Some(p), Some(m)) if p as u64 != m => {
            let msg = format!(
                "VMCOREINFO's NUMBER(phys_base)={p} ({:#x}) does not put _text {text:#x} where the page tables do \
                 (phys {:#x}): using phys_base {m:#x} from _text's page",
                p as u64,
                text.wrapping_sub(START_KERNEL_MAP).wrapping_add(m)
            );
            log::warn!("{msg}");
            notes.push(msg);
            Some(Found::new(m, "_text's page (VMCOREINFO disagreed)"))
        }
        (Some(p), _) => Some(Found::new(p as u64, "VMCOREINFO")),
        (None, m) => match read_u64(&mut view, "phys_base") {
            Some(p) => Some(Found::new(p, "phys_base variable")),
            None => m.map(|m| Found::new(m, "_text's page")),
        },
    };

    if let Some(a) = sym("__pgtable_l5_enabled").or(sym("pgtable_l5_enabled"))
        && let Ok(v) = view.read_u32(a)
    {
        let p = if v == 1 { Paging::Level5 } else { Paging::Level4 };
        if p != paging.value {
            notes.push(format!("__pgtable_l5_enabled says {p}, but {} said {}", paging.source, paging.value));
        }
        paging = Found::new(p, "__pgtable_l5_enabled");
    }
    let level_idx = (paging.value == Paging::Level5) as usize;
    let page_offset_base = match read_u64(&mut view, "page_offset_base") {
        Some(p) if p >= 0xff00_0000_0000_0000 => Found::new(p, "page_offset_base variable"),
        _ => Found::new(DEFAULT_PAGE_OFFSET[level_idx], "default (no memory KASLR)"),
    };

    let release = sym("linux_banner")
        .and_then(|a| read_cstr(&mut view, a, 256))
        .and_then(|b| b.strip_prefix("Linux version ").map(|r| r.split(' ').next().unwrap_or("").to_string()))
        .map(|r| Found::new(r, "linux_banner"))
        .or_else(|| {
            vmci.and_then(|v| v.release()).map(|r| Found::new(r.to_string(), "VMCOREINFO OSRELEASE"))
        });
    let init_task = sym("init_task").map(|a| Found::new(a, "symbol init_task"));

    // The user's layout, else the kernel's BTF, else a built-in profile for this release, else
    // what VMCOREINFO tells (enough for dmesg, not for ps).
    let fallback = |notes: &mut Vec<String>| -> Option<Box<dyn TypeInfo + Send>> {
        let release = release.as_ref().map(|r| r.value.as_str());
        if let Some(p) = release.and_then(Profile::built_in_for) {
            notes.push(format!("no BTF in memory: using the built-in profile {}", p.name));
            return Some(Box::new(p.types()));
        }
        vmci.map(|v| Box::new(v.types()) as Box<dyn TypeInfo + Send>)
    };
    let mut btf_unreadable = None;
    let types: Option<Box<dyn TypeInfo + Send>> = match hints.types {
        Some(t) => Some(t),
        None => match read_btf(&mut view, &symbols) {
            Ok(Some(btf)) => Some(Box::new(btf)),
            Ok(None) => fallback(&mut notes),
            Err(BtfError::Corrupt(e)) => {
                notes.push(format!("in-memory BTF: {e}"));
                fallback(&mut notes)
            }
            Err(BtfError::Unreadable(e)) => {
                notes.push(format!("in-memory BTF: {e}"));
                btf_unreadable = Some(e);
                fallback(&mut notes)
            }
        },
    };
    // Bytes lent in place by the source were not counted by the address space.
    let lent = view.lent_bytes();
    space.set_config(MmuConfig { paging: paging.value, ..space.config() });

    Ok(Kernel {
        release,
        text: Found::new(text, text_source),
        slide,
        phys_base,
        cr3,
        paging,
        page_offset_base,
        init_task,
        symbols,
        symbols_source,
        vmcoreinfo,
        types,
        trampoline,
        btf_unreadable,
        bytes_read: bytes_so_far(space) - before + lent,
        notes,
    })
}

fn read_cstr(mem: &mut dyn Memory, addr: u64, max: usize) -> Option<String> {
    let mut buf = vec![0u8; max];
    mem.read(addr, &mut buf).ok()?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(max);
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// VMCOREINFO from RAM: `vmcoreinfo_data` points at the text, `vmcoreinfo_size` is its length.
fn read_vmcoreinfo(mem: &mut dyn Memory, syms: &dyn Symbols) -> Option<(VmcoreInfo, u64)> {
    let ptr = mem.read_u64(syms.address("vmcoreinfo_data")?).ok()?;
    let size = syms.address("vmcoreinfo_size").and_then(|a| mem.read_u64(a).ok()).unwrap_or(4096);
    let mut buf = vec![0u8; size.clamp(1, super::vmcoreinfo::MAX_LEN as u64) as usize];
    mem.read(ptr, &mut buf).ok()?;
    let v = VmcoreInfo::parse(&buf);
    (!v.is_empty()).then_some((v, ptr))
}

/// Why the kernel's BTF was not taken.
#[derive(Debug)]
enum BtfError {
    /// Reads of it failed: how many, and why.
    Unreadable(String),
    /// It was read, and is not BTF.
    Corrupt(String),
}

/// The kernel's `.BTF` section, between `__start_BTF` and `__stop_BTF`.
fn read_btf(mem: &mut View, syms: &dyn Symbols) -> Result<Option<Btf>, BtfError> {
    let (Some(start), Some(stop)) = (syms.address("__start_BTF"), syms.address("__stop_BTF")) else {
        return Ok(None);
    };
    if stop <= start || stop - start > MAX_BTF {
        return Err(BtfError::Corrupt(format!(
            "__start_BTF {start:#x} .. __stop_BTF {stop:#x} is not a plausible section"
        )));
    }
    let origin = format!("in-memory BTF ({} KiB at {start:#x})", (stop - start) / 1024);
    // A dump lends the blob in place (saving a 4+ MiB copy); other sources are read.
    if let Some(blob) = mem.borrow(start, stop - start) {
        return Btf::parse(blob, origin)
            .map(Some)
            .map_err(|e| BtfError::Corrupt(format!("at {start:#x}: {e}")));
    }
    // Page by page, all asked for together: a failure then says how much failed.
    let mut blob = vec![0u8; (stop - start) as usize];
    let mut reads: Vec<(u64, &mut [u8])> = Vec::new();
    let (mut rest, mut at): (&mut [u8], u64) = (&mut blob, start);
    while !rest.is_empty() {
        let n = ((0x1000 - (at & 0xfff)) as usize).min(rest.len());
        let (piece, tail) = std::mem::take(&mut rest).split_at_mut(n);
        reads.push((at, piece));
        (rest, at) = (tail, at + n as u64);
    }
    let results = mem.read_together(&mut reads);
    if let Some(why) = failed_reads(&results, &format!("of the BTF at {start:#x}..{stop:#x}")) {
        return Err(BtfError::Unreadable(why));
    }
    Btf::parse(&blob, origin).map(Some).map_err(|e| BtfError::Corrupt(format!("at {start:#x}: {e}")))
}

/// Whether memory agrees with a VMCOREINFO note: its `phys_base` must put `swapper_pg_dir`
/// where the page tables there map it back to, and `_stext` where they map it; its
/// `KERNELOFFSET` must move `_stext` back into the kernel's link range. Says what disagrees.
fn check_vmcoreinfo(space: &mut AddressSpace, v: &VmcoreInfo) -> Result<(), String> {
    if let (Some(off), Some(stext)) = (v.kernel_offset(), v.symbol("_stext")) {
        let link = stext.wrapping_sub(off);
        if !off.is_multiple_of(IMAGE_ALIGN)
            || !(START_KERNEL_MAP..START_KERNEL_MAP + (1 << 30)).contains(&link)
        {
            return Err(format!("KERNELOFFSET={off:x} puts _stext {stext:#x} at link address {link:#x}"));
        }
    }
    let (Some(pgd), Some(base)) =
        (v.symbol("swapper_pg_dir").or_else(|| v.symbol("init_top_pgt")), v.number("phys_base"))
    else {
        return Ok(());
    };
    let base = base as u64;
    let phys_of = |virt: u64| virt.wrapping_sub(START_KERNEL_MAP).wrapping_add(base);
    let root = phys_of(pgd);
    let saved = space.config();
    let l5 = v.number("pgtable_l5_enabled") == Some(1);
    space.set_config(MmuConfig { paging: if l5 { Paging::Level5 } else { Paging::Level4 }, ..saved });
    let mut check = |what: &str, virt: u64| match space.translate_in(root, VirtAddr(virt)) {
        Ok(t) if t.phys.0 == phys_of(virt) => Ok(()),
        Ok(t) => Err(format!("{what} {virt:#x} maps to phys {:#x}, not {:#x}", t.phys.0, phys_of(virt))),
        Err(e) => Err(format!("{e}")),
    };
    let r = check("swapper_pg_dir", pgd).and_then(|()| match v.symbol("_stext") {
        Some(stext) => check("_stext", stext),
        None => Ok(()),
    });
    space.set_config(saved);
    r.map_err(|why| {
        format!(
            "its NUMBER(phys_base)={} puts the kernel's page tables at phys {root:#x}, and under them {why}",
            base as i64
        )
    })
}

/// Scans the first MiB for `struct real_mode_header` and checks what it points at.
pub fn find_trampoline(space: &mut AddressSpace) -> Result<Trampoline, TrampolineError> {
    let ram = space.mem().ram().to_vec();
    let pages: Vec<u64> = (0x1000..0x10_0000u64)
        .step_by(4096)
        .filter(|&p| find_range(&ram, PhysAddr(p), 64).is_some())
        .collect();
    // The first 64 bytes of every page, asked for together (one batch over DMA); a page that
    // fails is skipped.
    let mut heads = vec![[0u8; 64]; pages.len()];
    let mut reads: Vec<(PhysAddr, &mut [u8])> =
        pages.iter().zip(&mut heads).map(|(&p, h)| (PhysAddr(p), &mut h[..])).collect();
    let results = space.read_phys_many(&mut reads);
    let readable: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    let checked = pages.len();
    let failures = failed_reads(&results, "below 1 MiB");
    if let Some(why) = &failures
        && !readable.contains(&true)
    {
        // The device itself failing (a timeout, no adapter): nothing to search.
        return Err(if results.iter().any(|r| r.as_ref().is_err_and(MemError::is_device_failure)) {
            TrampolineError::Unreadable(why.clone())
        } else {
            TrampolineError::Absent(why.clone())
        });
    }
    for ((&page, h), _) in pages.iter().zip(&heads).zip(&readable).filter(|(_, ok)| **ok) {
        let f: Vec<u64> = h.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64).collect();
        let near = |v: u64| v > page && v < page + 0x1_0000;
        // text_start, ro_end, trampoline_start: in order, within the blob.
        if !(near(f[0])
            && f[0].is_multiple_of(4096)
            && near(f[1])
            && f[1] > f[0]
            && (f[0]..f[1]).contains(&f[2]))
        {
            continue;
        }
        for &th in f[3..12].iter().filter(|v| near(**v)) {
            let mut t = [0u8; 24];
            if space.read_phys(PhysAddr(th), &mut t).is_err() {
                continue;
            }
            let entry = u64::from_le_bytes(t[0..8].try_into().unwrap_or_default());
            let efer = u64::from_le_bytes(t[8..16].try_into().unwrap_or_default());
            let cr4 = u32::from_le_bytes(t[16..20].try_into().unwrap_or_default());
            // A kernel entry address, EFER.LME, CR4.PAE.
            if entry < START_KERNEL_MAP || efer & (1 << 8) == 0 || efer > 0xffff || cr4 & (1 << 5) == 0 {
                continue;
            }
            let la57 = cr4 & (1 << 12) != 0;
            let saved = space.config();
            space.set_config(MmuConfig {
                paging: if la57 { Paging::Level5 } else { Paging::Level4 },
                ..saved
            });
            for &pgd in f[3..12].iter().filter(|v| near(**v) && v.is_multiple_of(4096) && **v != f[0]) {
                if space.translate_in(pgd, VirtAddr(entry)).is_ok() {
                    space.set_config(saved);
                    return Ok(Trampoline { header: page, root: pgd, entry, la57 });
                }
            }
            space.set_config(saved);
        }
    }
    let read = readable.iter().filter(|ok| **ok).count();
    Err(TrampolineError::Absent(match failures {
        Some(why) => {
            format!("no real-mode header in the {read} RAM pages below 1 MiB that could be read; {why}")
        }
        None => format!("no real-mode header in the {checked} RAM pages below 1 MiB"),
    }))
}

/// `_text`: the lowest 2 MiB slot of the mapped run that holds `hint`, or without a hint the
/// first mapped slot of the top 2 GiB (which map nothing but the kernel image).
fn find_text(space: &mut AddressSpace, cr3: u64, hint: Option<u64>) -> Result<u64, String> {
    let mapped = |space: &mut AddressSpace, a: u64| space.translate_in(cr3, VirtAddr(a)).is_ok();
    match hint {
        Some(h) => {
            let mut slot = h & !(IMAGE_ALIGN - 1);
            if !mapped(space, slot) {
                return Err(format!("the entry point {h:#x} is not mapped"));
            }
            for _ in 0..64 {
                match slot.checked_sub(IMAGE_ALIGN) {
                    Some(below) if below >= START_KERNEL_MAP && mapped(space, below) => slot = below,
                    _ => return Ok(slot),
                }
            }
            Err(format!("more than 128 MiB mapped below the entry point {h:#x}"))
        }
        None => (START_KERNEL_MAP..=u64::MAX - (IMAGE_ALIGN - 1))
            .step_by(IMAGE_ALIGN as usize)
            .find(|&a| mapped(space, a))
            .ok_or_else(|| "nothing mapped in the top 2 GiB".to_string()),
    }
}

/// The kernel image split by page permissions.
#[derive(Debug, Default)]
struct ImageLayout {
    /// Sample addresses in read-only, non-executable data, `SAMPLE_STRIDE` apart.
    rodata_samples: Vec<u64>,
    /// First unmapped address after the image.
    end: u64,
}

fn image_layout(space: &mut AddressSpace, cr3: u64, text: u64) -> ImageLayout {
    let mut out = ImageLayout { end: text, ..Default::default() };
    let mut a = text;
    while a < text.saturating_add(MAX_IMAGE) {
        match space.translate_in(cr3, VirtAddr(a)) {
            Ok(t) => {
                // Read-only data (and, after it, `__ro_after_init` data): where kallsyms is.
                if t.nx && !t.writable {
                    out.rodata_samples.push(a);
                }
                out.end = a.saturating_add(SAMPLE_STRIDE);
            }
            // The image is contiguous; bss may have holes only at page granularity.
            Err(_) if a >= out.end.saturating_add(IMAGE_ALIGN) => break,
            Err(_) => {}
        }
        let Some(next) = a.checked_add(SAMPLE_STRIDE) else { break };
        a = next;
    }
    out
}

impl Kernel {
    /// Where vmlinux's first two load segments are in the running kernel: text (`_text`) and
    /// data (`_sdata`), for gdb's `qOffsets`.
    pub fn segment_bases(&self) -> (u64, u64) {
        let text = self.text.value;
        let data = self.symbols.address("_sdata").unwrap_or(text);
        (text, data)
    }

    /// One line for the server's banner.
    pub fn summary(&self) -> String {
        let release = self.release.as_ref().map_or("unknown release", |r| r.value.as_str());
        let layout =
            self.types.as_ref().map_or("no struct layout (give --btf or --profile)".to_string(), |t| {
                format!("layout from {}", t.source())
            });
        format!(
            "Linux {release}, KASLR slide {:#x}, {} paging, kernel CR3 {:#x}, {} symbols, {layout}; discovery read {} KiB",
            self.slide.value,
            self.paging.value,
            self.cr3.value,
            self.symbols.len(),
            self.bytes_read.div_ceil(1024)
        )
    }

    /// `symbol-file` arguments that put every section of vmlinux where this kernel has it.
    pub fn symbol_file_command(&self, vmlinux: &str) -> String {
        format!("symbol-file {vmlinux} -o {:#x}", self.slide.value)
    }

    /// What was found and where each value came from, for `monitor kernel` and `dmastub kernel`.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String, src: &str| s.push_str(&format!("{k:<17} {v:<22} ({src})\n"));
        match &self.release {
            Some(r) => line("release", r.value.clone(), &r.source),
            None => line("release", "unknown".into(), "no linux_banner symbol and no VMCOREINFO"),
        }
        line("kaslr slide", format!("{:#x}", self.slide.value), &self.slide.source);
        line("_text", format!("{:#x}", self.text.value), &self.text.source);
        match &self.phys_base {
            Some(p) => line("phys_base", format!("{:#x}", p.value), &p.source),
            None => line("phys_base", "unknown".into(), "not found"),
        }
        line("kernel cr3", format!("{:#x}", self.cr3.value), &self.cr3.source);
        line("paging", self.paging.value.to_string(), &self.paging.source);
        line(
            "page_offset_base",
            format!("{:#x}", self.page_offset_base.value),
            &self.page_offset_base.source,
        );
        match &self.init_task {
            Some(t) => line("init_task", format!("{:#x}", t.value), &t.source),
            None => line("init_task", "unknown".into(), "no symbol: give --system-map or --vmlinux"),
        }
        line("symbols", format!("{}", self.symbols.len()), &self.symbols_source);
        match &self.types {
            Some(t) => line("struct layout", "found".into(), &t.source()),
            None => line("struct layout", "none".into(), "give --btf FILE or --profile NAME"),
        }
        if let Some(v) = &self.vmcoreinfo {
            line("vmcoreinfo", format!("{} entries", v.value.entries.len()), &v.source);
        }
        s.push_str(&format!("discovery read {} bytes of target memory\n", self.bytes_read));
        for n in &self.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        s.push_str(&format!(
            "gdb: `target remote` relocates vmlinux by its segments (qOffsets), all but the per-CPU section.\n\
             every section in place, per-CPU at its link address as KASLR leaves it:\n  \
             symbol-file\n  add-symbol-file VMLINUX -o {:#x} -s .data..percpu 0\n\
             (or `dmastub-symbols VMLINUX` from gdb-scripts/dmastub.py; `{}` moves per-CPU too)\n",
            self.slide.value,
            self.symbol_file_command("VMLINUX")
        ));
        s
    }
}
