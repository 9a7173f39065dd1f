//! What a dump says about the machine besides its memory: VMCOREINFO, a register note per CPU,
//! the kernel's `utsname`, and how each was found.

use crate::linux::{Kernel, Linux, Memory, Symbols, View, encode_prstatus};
use crate::mmu::{AddressSpace, Paging};
use crate::phys::kdump::header::{UTS_LEN, UtsName};
use crate::phys::{CoreNote, encode_note};

/// `NT_PRSTATUS`.
const NT_PRSTATUS: u32 = 1;

/// What the dump's notes and header say about the machine.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    /// The VMCOREINFO text, when known.
    pub vmcoreinfo: Option<Vec<u8>>,
    /// One `elf_prstatus` per CPU, in CPU order.
    pub cpu_notes: Vec<Vec<u8>>,
    /// The CPU that panicked (or the first), for the kdump header's `current_cpu`.
    pub current_cpu: u32,
    /// `uname` of the kernel.
    pub utsname: UtsName,
    /// The kernel's `phys_base`, for the kdump sub-header.
    pub phys_base: u64,
    /// Where each part came from, one line each, for the command's report.
    pub found: Vec<String>,
}

impl Machine {
    /// The notes as a core holds them, back to back: a CORE NT_PRSTATUS per CPU, then
    /// VMCOREINFO; and where the VMCOREINFO text is in them (offset, length).
    pub fn encode_notes(&self) -> (Vec<u8>, Option<(u64, u64)>) {
        let mut notes = Vec::new();
        for desc in &self.cpu_notes {
            encode_note(&mut notes, "CORE", NT_PRSTATUS, desc);
        }
        let vmcoreinfo = self.vmcoreinfo.as_ref().map(|text| {
            let at = encode_note(&mut notes, "VMCOREINFO", 0, text);
            (at as u64, text.len() as u64)
        });
        (notes, vmcoreinfo)
    }

    /// What the source itself carries (an ELF or kdump core's notes): the notes are copied as
    /// they are. Nothing is read from memory.
    pub fn from_source_notes(notes: &[CoreNote]) -> Self {
        let mut m = Machine::default();
        m.take_source_notes(notes);
        m
    }

    fn take_source_notes(&mut self, notes: &[CoreNote]) {
        if let Some(v) = notes.iter().find(|n| n.name == "VMCOREINFO") {
            self.vmcoreinfo = Some(v.desc.clone());
            self.found.push("VMCOREINFO: the source's note".to_string());
        }
        let cpus: Vec<Vec<u8>> = notes
            .iter()
            .filter(|n| n.name == "CORE" && n.n_type == NT_PRSTATUS)
            .map(|n| n.desc.clone())
            .collect();
        if !cpus.is_empty() {
            self.found.push(format!("registers: the source's {} NT_PRSTATUS notes", cpus.len()));
            self.cpu_notes = cpus;
        }
    }

    /// Everything the kernel in memory tells: the source's notes where it has them, else the
    /// kernel's own VMCOREINFO (rebuilt from discovery when the kernel keeps none), one register
    /// note per CPU with the registers dmastub knows, `utsname` and `phys_base`.
    pub fn from_linux(linux: &Linux, space: &mut AddressSpace) -> Self {
        let kernel = linux.kernel();
        let mut m = Machine::default();
        m.take_source_notes(space.mem().core_notes());
        if m.vmcoreinfo.is_none() {
            m.vmcoreinfo = Some(match &kernel.vmcoreinfo {
                Some(v) if !v.value.is_empty() => {
                    m.found.push("VMCOREINFO: the kernel's own (vmcoreinfo_data)".to_string());
                    v.value.entries.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>().into_bytes()
                }
                _ => {
                    m.found.push("VMCOREINFO: rebuilt from discovery (the kernel keeps none)".to_string());
                    rebuild_vmcoreinfo(kernel).into_bytes()
                }
            });
        }
        m.phys_base = kernel.phys_base.as_ref().map_or(0, |f| f.value);
        let mut view = View::new(space, kernel.cr3.value);
        m.utsname = read_utsname(&mut view, kernel);
        let threads = linux.threads(space);
        if let Ok(list) = &threads {
            let running: Vec<_> = list.threads.iter().filter_map(|t| t.running_on.map(|c| (c, t))).collect();
            if let Some(panicking) = list.threads.iter().find(|t| t.panicking).and_then(|t| t.running_on) {
                m.current_cpu = panicking;
            }
            if m.cpu_notes.is_empty() && !running.is_empty() {
                let cpus = running.iter().map(|(c, _)| *c).max().map_or(0, |c| c + 1);
                m.cpu_notes = (0..cpus)
                    .map(|cpu| match running.iter().find(|(c, _)| *c == cpu) {
                        Some((_, t)) => encode_prstatus(t.task.pid, &t.regs),
                        None => encode_prstatus(0, &Default::default()),
                    })
                    .collect();
                let known = running.iter().filter(|(_, t)| t.regs.pc().is_some()).count();
                m.found.push(format!(
                    "registers: {cpus} NT_PRSTATUS notes built from the per-CPU data ({known} with a known \
                     instruction pointer; registers not known are 0)"
                ));
            }
        }
        if let Err(e) = threads {
            m.found.push(format!("registers: none ({})", linux.explain(&e)));
        }
        m
    }
}

/// `init_uts_ns.name`, or a `utsname` with just the release discovery found.
fn read_utsname(view: &mut View, kernel: &Kernel) -> UtsName {
    let release = kernel.release.as_ref().map_or("", |r| r.value.as_str());
    let mut u = UtsName::new("Linux", "", release, "", "x86_64", "");
    let name_offset =
        kernel.types.as_ref().and_then(|t| t.member("uts_namespace", "name")).map_or(0, |m| m.offset);
    if let Some(at) = kernel.symbols.address("init_uts_ns") {
        let mut raw = [0u8; UTS_LEN * 6];
        if view.read(at + name_offset, &mut raw).is_ok() && raw.starts_with(b"Linux\0") {
            let fields = [
                &mut u.sysname,
                &mut u.nodename,
                &mut u.release,
                &mut u.version,
                &mut u.machine,
                &mut u.domainname,
            ];
            for (field, bytes) in fields.into_iter().zip(raw.chunks_exact(UTS_LEN)) {
                field.copy_from_slice(bytes);
                field[UTS_LEN - 1] = 0;
            }
        }
    }
    u
}

/// The VMCOREINFO lines crash and drgn need to place the kernel, from what discovery found.
fn rebuild_vmcoreinfo(kernel: &Kernel) -> String {
    let mut lines = Vec::new();
    if let Some(r) = &kernel.release {
        lines.push(format!("OSRELEASE={}", r.value));
    }
    lines.push(format!("PAGESIZE={}", crate::addr::PAGE_SIZE));
    for sym in
        ["init_uts_ns", "swapper_pg_dir", "init_top_pgt", "_stext", "node_online_map", "vmap_area_list"]
    {
        if let Some(a) = kernel.symbols.address(sym) {
            lines.push(format!("SYMBOL({sym})={a:x}"));
        }
    }
    if let Some(t) = &kernel.types {
        if let Some(s) = t.size_of("page") {
            lines.push(format!("SIZE(page)={s}"));
        }
        for field in ["flags", "_refcount", "mapping", "lru", "_mapcount", "private"] {
            if let Some(m) = t.member("page", field) {
                lines.push(format!("OFFSET(page.{field})={}", m.offset));
            }
        }
    }
    if let Some(p) = &kernel.phys_base {
        lines.push(format!("NUMBER(phys_base)={}", p.value as i64));
    }
    lines.push(format!("NUMBER(pgtable_l5_enabled)={}", (kernel.paging.value == Paging::Level5) as u8));
    lines.push(format!("KERNELOFFSET={:x}", kernel.slide.value));
    lines.iter().map(|l| format!("{l}\n")).collect()
}
