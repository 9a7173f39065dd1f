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
//! What the user gives ([`Hints`]: a CR3, the slide, a System.map or vmlinux, a layout)
//! replaces what would be found. Every fact keeps where it came from ([`Origin`]).

mod error;
mod evidence;
mod image;
mod trampoline;

pub use error::{DiscoverError, FailedReads, ImageError, TrampolineError};
pub use trampoline::{Trampoline, find_trampoline};

use super::kallsyms::{self, Kallsyms};
use super::origin::{Found, Hint};
use super::profile::Profile;
use super::vmcoreinfo::VmcoreInfo;
use super::vmlayout::{DEFAULT_PAGE_OFFSET, DEFAULT_TEXT_LINK, START_KERNEL_MAP};
use super::{Memory, Symbols, TypeInfo, View};
use crate::addr::VirtAddr;
use crate::mmu::{AddressSpace, MmuConfig, Paging};
use evidence::{BtfError, check_vmcoreinfo, read_btf, read_cstr, read_vmcoreinfo};
use image::{ImageLayout, find_text, image_layout};
use std::fmt;

/// What the user tells us instead of letting us look.
#[derive(Default)]
pub struct Hints {
    /// The kernel's page-table root.
    pub cr3: Option<u64>,
    /// The KASLR slide.
    pub kaslr: Option<u64>,
    /// Symbols at their link addresses (System.map, vmlinux, profile) and where they came from.
    pub link_symbols: Option<(Kallsyms, String)>,
    /// A layout that replaces the in-memory BTF (a BTF file, a profile).
    pub types: Option<Box<dyn TypeInfo + Send + Sync>>,
}

/// Everything discovery found: the kernel, as data.
pub struct Kernel {
    /// The kernel release (`6.1.0-13-amd64`).
    pub release: Option<Found<String>>,
    /// `_text`: where the kernel image starts.
    pub text: Found<u64>,
    /// The KASLR slide of the image.
    pub slide: Found<u64>,
    /// The physical address the image was loaded at, less its link offset.
    pub phys_base: Option<Found<u64>>,
    /// The kernel's page-table root (`init_top_pgt`/`swapper_pg_dir`), as a CR3.
    pub cr3: Found<u64>,
    /// The paging depth.
    pub paging: Found<Paging>,
    /// The base of the direct map.
    pub page_offset_base: Found<u64>,
    /// The address of `init_task`, the head of the task list.
    pub init_task: Option<Found<u64>>,
    /// The kernel's symbols, KASLR applied.
    pub symbols: Kallsyms,
    /// Where the symbols came from.
    pub symbols_source: String,
    /// The kernel's VMCOREINFO, from the core's note or from memory.
    pub vmcoreinfo: Option<Found<VmcoreInfo>>,
    /// The struct layout: the user's, the kernel's BTF, a built-in profile or VMCOREINFO's.
    pub types: Option<Box<dyn TypeInfo + Send + Sync>>,
    /// The real-mode trampoline, when it was read.
    pub trampoline: Option<Trampoline>,
    /// The kernel's BTF is in memory but reads of it failed (so that a missing layout is not
    /// blamed on a kernel without BTF).
    pub btf_unreadable: Option<FailedReads>,
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

impl Kernel {
    /// Where vmlinux's first two load segments are in the running kernel: text (`_text`) and
    /// data (`_sdata`), for gdb's `qOffsets`.
    pub fn segment_bases(&self) -> (u64, u64) {
        let text = self.text.value;
        let data = self.symbols.address("_sdata").unwrap_or(text);
        (text, data)
    }

    /// `symbol-file` arguments that put every section of vmlinux where this kernel has it.
    pub fn symbol_file_command(&self, vmlinux: &str) -> String {
        format!("symbol-file {vmlinux} -o {:#x}", self.slide.value)
    }
}

fn bytes_so_far(space: &AddressSpace) -> u64 {
    let s = space.stats();
    s.data_bytes + s.table_reads * 4096
}

/// Finds the kernel in `space`'s memory. Sets the space's paging depth to the kernel's.
pub fn discover(space: &mut AddressSpace, hints: Hints) -> Result<Kernel, DiscoverError> {
    let before = bytes_so_far(space);
    let mut notes = Vec::new();
    let note_vmci = believed_note(space, hints.cr3.is_some(), &mut notes);

    // Paging depth and a root that maps the kernel image. The trampoline is read even with a
    // CR3 given: its CR4 says whether that root is 4- or 5-level.
    let (trampoline, trampoline_error) = match note_vmci {
        Some(_) => (None, None),
        None => match find_trampoline(space) {
            Ok(t) => (Some(t), None),
            Err(TrampolineError::Unreadable(f)) if f.is_device_failure() => {
                return Err(DiscoverError::Unreadable(f));
            }
            Err(e) => (None, Some(e)),
        },
    };
    let paging = first_paging(space, note_vmci.as_ref(), trampoline.as_ref());
    space.set_config(MmuConfig { paging: paging.value, ..space.config() });

    let vmci_root = note_vmci.as_ref().and_then(vmcoreinfo_root);
    let root = match (hints.cr3, vmci_root, &trampoline) {
        (Some(c), _, _) => Found::hint(c, Hint::Cr3),
        (None, Some(c), _) => Found::evidence(c, "VMCOREINFO (swapper_pg_dir, phys_base)"),
        (None, None, Some(t)) => {
            Found::evidence(t.root, format!("trampoline_pgd (real-mode header at {:#x})", t.header))
        }
        (None, None, None) => return Err(DiscoverError::NoRoot { notes, trampoline: trampoline_error }),
    };
    if let Some(e) = &trampoline_error {
        notes.push(format!("real-mode trampoline: {e}"));
    }

    let text = find_image(space, root.value, note_vmci.as_ref(), trampoline.as_ref(), hints.kaslr)?;
    let layout = image_layout(space, root.value, text.value);
    log::debug!("kernel image at {:#x}: {layout:?}", text.value);

    let (symbols, symbols_source, link_text) =
        find_symbols(space, root.value, hints.link_symbols, text.value, &layout, &mut notes);
    let slide = find_slide(text.value, hints.kaslr, note_vmci.as_ref(), link_text);
    // File symbols are link addresses; move them by the slide.
    let symbols = if link_text.is_some() { symbols.slid(slide.value) } else { symbols };

    // The kernel's own root, which maps the direct map too (the trampoline's does not).
    let cr3 = if hints.cr3.is_some() || vmci_root.is_some() {
        root
    } else {
        kernel_root(space, root, &symbols, &mut notes)
    };
    let mut view = View::new(space, cr3.value);
    let vmcoreinfo = match note_vmci {
        Some(v) => Some(Found::evidence(v, "ELF core note")),
        None => read_vmcoreinfo(&mut view, &symbols)
            .map(|(v, at)| Found::evidence(v, format!("vmcoreinfo_data at {at:#x}"))),
    };
    let vmci = vmcoreinfo.as_ref().map(|f| &f.value);
    let phys_base = find_phys_base(&mut view, &symbols, vmci, text.value, &mut notes);
    let paging = confirm_paging(&mut view, &symbols, paging, &mut notes);
    let page_offset_base = find_page_offset_base(&mut view, &symbols, paging.value);
    let release = find_release(&mut view, &symbols, vmci);
    let init_task = symbols.address("init_task").map(|a| Found::evidence(a, "symbol init_task"));
    let (types, btf_unreadable) =
        find_types(&mut view, &symbols, hints.types, release.as_ref(), vmci, &mut notes);
    // Bytes lent in place by the source were not counted by the address space.
    let lent = view.lent_bytes();
    space.set_config(MmuConfig { paging: paging.value, ..space.config() });

    Ok(Kernel {
        release,
        text,
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

/// The core's VMCOREINFO note, when memory agrees with it (a note is a copy). With a CR3 given,
/// the note is not checked against the page tables.
fn believed_note(space: &mut AddressSpace, cr3_given: bool, notes: &mut Vec<String>) -> Option<VmcoreInfo> {
    let v = space
        .mem()
        .core_notes()
        .iter()
        .find(|n| n.name == "VMCOREINFO")
        .map(|n| VmcoreInfo::parse(&n.desc))
        .filter(|v| !v.is_empty())?;
    if cr3_given {
        return Some(v);
    }
    match check_vmcoreinfo(space, &v) {
        Ok(()) => Some(v),
        Err(why) => {
            let msg = format!(
                "the core's VMCOREINFO note is not believed: {why}; the kernel is found from memory instead"
            );
            log::warn!("{msg}");
            notes.push(msg);
            None
        }
    }
}

/// The paging depth before symbols: VMCOREINFO's, the trampoline's CR4, else the space's own.
fn first_paging(space: &AddressSpace, vmci: Option<&VmcoreInfo>, t: Option<&Trampoline>) -> Found<Paging> {
    match (vmci.and_then(|v| v.number("pgtable_l5_enabled")), t) {
        (Some(l5), _) => Found::evidence(if l5 == 1 { Paging::Level5 } else { Paging::Level4 }, "VMCOREINFO"),
        (None, Some(t)) => {
            Found::evidence(if t.la57 { Paging::Level5 } else { Paging::Level4 }, "trampoline CR4")
        }
        (None, None) => Found::hint(space.paging(), Hint::Paging),
    }
}

/// The root VMCOREINFO implies: `swapper_pg_dir`'s physical address by `phys_base`.
fn vmcoreinfo_root(v: &VmcoreInfo) -> Option<u64> {
    let pgd = v.symbol("swapper_pg_dir").or_else(|| v.symbol("init_top_pgt"))?;
    let phys_base = v.number("phys_base")? as u64;
    Some(pgd.wrapping_sub(START_KERNEL_MAP).wrapping_add(phys_base))
}

/// `_text`, from an entry point VMCOREINFO, the trampoline or the user's slide points at.
fn find_image(
    space: &mut AddressSpace,
    root: u64,
    vmci: Option<&VmcoreInfo>,
    trampoline: Option<&Trampoline>,
    kaslr: Option<u64>,
) -> Result<Found<u64>, DiscoverError> {
    let from_vmci = vmci.and_then(|v| v.symbol("_stext")).map(|a| (a, "VMCOREINFO _stext"));
    let from_trampoline = trampoline.map(|t| (t.entry, "the trampoline's entry point, start of its mapping"));
    let text = |space: &mut AddressSpace, hint| {
        find_text(space, root, hint).map_err(|source| DiscoverError::NoImage { cr3: root, source })
    };
    Ok(match from_vmci.or(from_trampoline) {
        Some((entry, how)) => Found::evidence(text(space, Some(entry))?, how),
        None => match kaslr {
            Some(k) => Found::hint(text(space, Some(DEFAULT_TEXT_LINK.wrapping_add(k)))?, Hint::Kaslr),
            None => Found::evidence(text(space, None)?, "first mapping of the top 2 GiB"),
        },
    })
}

/// The user's symbols (with their link `_text`), else kallsyms from memory.
fn find_symbols(
    space: &mut AddressSpace,
    root: u64,
    given: Option<(Kallsyms, String)>,
    text: u64,
    layout: &ImageLayout,
    notes: &mut Vec<String>,
) -> (Kallsyms, String, Option<u64>) {
    if let Some((syms, origin)) = given {
        let link_text = syms.address("_text").or(syms.address("_stext"));
        return (syms, origin, link_text);
    }
    let mut view = View::new(space, root);
    match kallsyms::find(&mut view, &layout.rodata_samples, text..layout.end) {
        Ok(k) => {
            let src = format!("kallsyms in memory ({} symbols, tables at {:#x})", k.len(), k.table_addr);
            (k, src, None)
        }
        Err(e) => {
            notes.push(format!("kallsyms: {e}"));
            (Kallsyms::default(), "none".to_string(), None)
        }
    }
}

fn find_slide(
    text: u64,
    kaslr: Option<u64>,
    vmci: Option<&VmcoreInfo>,
    link_text: Option<u64>,
) -> Found<u64> {
    if let Some(k) = kaslr {
        Found::hint(k, Hint::Kaslr)
    } else if let Some(k) = vmci.and_then(VmcoreInfo::kernel_offset) {
        Found::evidence(k, "VMCOREINFO KERNELOFFSET")
    } else if let Some(link) = link_text {
        Found::evidence(text.wrapping_sub(link), format!("_text at {text:#x} minus its link address"))
    } else {
        Found::evidence(
            text.wrapping_sub(DEFAULT_TEXT_LINK),
            format!("_text at {text:#x} minus {DEFAULT_TEXT_LINK:#x}"),
        )
    }
}

/// `init_top_pgt` translated under the image's root, else that root.
fn kernel_root(
    space: &mut AddressSpace,
    root: Found<u64>,
    syms: &Kallsyms,
    notes: &mut Vec<String>,
) -> Found<u64> {
    let sym = |name: &str| syms.address(name);
    let Some(pgd) = sym("init_top_pgt").or(sym("swapper_pg_dir")).or(sym("init_level4_pgt")) else {
        notes.push(
            "no init_top_pgt symbol: the trampoline's root maps the image but not the direct map".into(),
        );
        return root;
    };
    match space.translate_in(root.value, VirtAddr(pgd)) {
        Ok(t) => Found::evidence(t.phys.0, "init_top_pgt, translated"),
        Err(e) => {
            notes.push(format!("init_top_pgt at {pgd:#x}: {e}"));
            root
        }
    }
}

fn read_sym_u64(view: &mut View, syms: &Kallsyms, name: &str) -> Option<u64> {
    syms.address(name).and_then(|a| view.read_u64(a).ok())
}

/// `phys_base`: VMCOREINFO's when the page tables agree, else the variable, else `_text`'s page.
fn find_phys_base(
    view: &mut View,
    syms: &Kallsyms,
    vmci: Option<&VmcoreInfo>,
    text: u64,
    notes: &mut Vec<String>,
) -> Option<Found<u64>> {
    let mapped_base =
        view.translate(text).ok().map(|tp| tp.wrapping_sub(text.wrapping_sub(START_KERNEL_MAP)));
    match (vmci.and_then(|v| v.number("phys_base")), mapped_base) {
        (Some(p), Some(m)) if p as u64 != m => {
            let msg = format!(
                "VMCOREINFO's NUMBER(phys_base)={p} ({:#x}) does not put _text {text:#x} where the page tables do \
                 (phys {:#x}): using phys_base {m:#x} from _text's page",
                p as u64,
                text.wrapping_sub(START_KERNEL_MAP).wrapping_add(m)
            );
            log::warn!("{msg}");
            notes.push(msg);
            Some(Found::evidence(m, "_text's page (VMCOREINFO disagreed)"))
        }
        (Some(p), _) => Some(Found::evidence(p as u64, "VMCOREINFO")),
        (None, m) => match read_sym_u64(view, syms, "phys_base") {
            Some(p) => Some(Found::evidence(p, "phys_base variable")),
            None => m.map(|m| Found::evidence(m, "_text's page")),
        },
    }
}

/// The paging depth as the kernel's own `__pgtable_l5_enabled` says, when it can be read.
fn confirm_paging(
    view: &mut View,
    syms: &Kallsyms,
    paging: Found<Paging>,
    notes: &mut Vec<String>,
) -> Found<Paging> {
    let Some(a) = syms.address("__pgtable_l5_enabled").or(syms.address("pgtable_l5_enabled")) else {
        return paging;
    };
    let Ok(v) = view.read_u32(a) else { return paging };
    let p = if v == 1 { Paging::Level5 } else { Paging::Level4 };
    if p != paging.value {
        notes.push(format!("__pgtable_l5_enabled says {p}, but {} said {}", paging.origin, paging.value));
    }
    Found::evidence(p, "__pgtable_l5_enabled")
}

fn find_page_offset_base(view: &mut View, syms: &Kallsyms, paging: Paging) -> Found<u64> {
    match read_sym_u64(view, syms, "page_offset_base") {
        Some(p) if p >= 0xff00_0000_0000_0000 => Found::evidence(p, "page_offset_base variable"),
        _ => Found::default_because(
            DEFAULT_PAGE_OFFSET[(paging == Paging::Level5) as usize],
            "no memory KASLR",
        ),
    }
}

fn find_release(view: &mut View, syms: &Kallsyms, vmci: Option<&VmcoreInfo>) -> Option<Found<String>> {
    syms.address("linux_banner")
        .and_then(|a| read_cstr(view, a, 256))
        .and_then(|b| b.strip_prefix("Linux version ").map(|r| r.split(' ').next().unwrap_or("").to_string()))
        .map(|r| Found::evidence(r, "linux_banner"))
        .or_else(|| {
            vmci.and_then(|v| v.release()).map(|r| Found::evidence(r.to_string(), "VMCOREINFO OSRELEASE"))
        })
}

/// The user's layout, else the kernel's BTF, else a built-in profile for this release, else
/// what VMCOREINFO tells (enough for dmesg, not for ps); and whether the BTF failed to read.
fn find_types(
    view: &mut View,
    syms: &Kallsyms,
    given: Option<Box<dyn TypeInfo + Send + Sync>>,
    release: Option<&Found<String>>,
    vmci: Option<&VmcoreInfo>,
    notes: &mut Vec<String>,
) -> (Option<Box<dyn TypeInfo + Send + Sync>>, Option<FailedReads>) {
    if given.is_some() {
        return (given, None);
    }
    let fallback = |notes: &mut Vec<String>| -> Option<Box<dyn TypeInfo + Send + Sync>> {
        if let Some(p) = release.and_then(|r| Profile::built_in_for(&r.value)) {
            notes.push(format!("no BTF in memory: using the built-in profile {}", p.name));
            return Some(Box::new(p.types()));
        }
        vmci.map(|v| Box::new(v.types()) as Box<dyn TypeInfo + Send + Sync>)
    };
    match read_btf(view, syms) {
        Ok(Some(btf)) => (Some(Box::new(btf)), None),
        Ok(None) => (fallback(notes), None),
        Err(BtfError::Corrupt(e)) => {
            notes.push(format!("in-memory BTF: {e}"));
            (fallback(notes), None)
        }
        Err(BtfError::Unreadable(e)) => {
            notes.push(format!("in-memory BTF: {e}"));
            (fallback(notes), Some(e))
        }
    }
}
