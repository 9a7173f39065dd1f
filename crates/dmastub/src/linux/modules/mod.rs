//! Loaded kernel modules, read from the `modules` list: what `/proc/modules` and `lsmod` show
//! (name, size, references, users, state, base, taint), each module's own symbol table (names
//! in module code, `func+0x1c/0x40 [mod]` as the kernel prints them) and its section addresses
//! (`/sys/module/NAME/sections`), which gdb needs to load a module's debug file.
//!
//! `struct module` changed in 6.4: `core_layout`/`init_layout` became `mem[MOD_MEM_NUM_TYPES]`.
//! Which one a kernel has is read from its BTF members. Memory is untrusted: the list, each
//! module's users, its symbol table and its sections are bounded, and every error names the
//! address it was reading.

mod libraries;
mod render;
#[cfg(test)]
mod tests;

pub use libraries::{KoIndex, KoSections, Library, library_list, segment_library_list};
pub use render::{lsmod, proc_modules};

use super::{Memory, Symbols, TypeInfo};
use crate::bytes::LeBytes;
use crate::mmu::MemError;
use std::collections::HashSet;

/// Most modules walked on the `modules` list (a distribution kernel with everything loaded has
/// a few hundred).
pub const MAX_MODULES: usize = 8192;
/// Most symbols believed in one module's symbol table.
pub const MAX_MODULE_SYMBOLS: u64 = 1 << 20;
/// Most sections believed in one module's `sect_attrs`.
pub const MAX_SECTIONS: u64 = 4096;
/// Longest symbol or section name read.
pub const MAX_NAME: usize = 256;
/// `sizeof(Elf64_Sym)`.
const ELF_SYM_SIZE: usize = 24;
/// `MODULE_REF_BASE`: `refcnt` holds one more than the references (`module_refcount`).
const MODULE_REF_BASE: i64 = 1;

/// Why the modules could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModuleError {
    /// No struct layout at all.
    #[error("no struct layout: struct module's layout comes from BTF or a profile")]
    NoTypes,
    /// kallsyms has no `modules` list head.
    #[error("no `modules` symbol: where the module list is, is unknown")]
    NoSymbol,
    /// The layout lacks a member this reader needs.
    #[error("{0}")]
    Layout(String),
    /// Memory could not be read; `what` names it and where it is.
    #[error("{what}: {source}")]
    Read {
        /// What was being read, and at which address.
        what: String,
        /// The address read.
        addr: u64,
        /// Why it could not be.
        #[source]
        source: MemError,
    },
    /// What was read is not believable (a loop, a count past the bound).
    #[error("{0}")]
    Corrupt(String),
}

impl ModuleError {
    fn read(what: String, addr: u64, source: MemError) -> Self {
        ModuleError::Read { what, addr, source }
    }

    /// Whether the device itself failed (see [`MemError::is_device_failure`]).
    pub fn is_device_failure(&self) -> bool {
        matches!(self, ModuleError::Read { source, .. } if source.is_device_failure())
    }
}

/// `enum module_state`, as `/proc/modules` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleState {
    /// `MODULE_STATE_LIVE`.
    Live,
    /// `MODULE_STATE_COMING`: its init is running.
    Loading,
    /// `MODULE_STATE_GOING`: being removed.
    Unloading,
    /// `MODULE_STATE_UNFORMED`: still being set up (`/proc/modules` leaves it out).
    Unformed,
    /// A value no kernel uses.
    Unknown(u64),
}

impl ModuleState {
    fn from_raw(v: u64) -> Self {
        match v {
            0 => ModuleState::Live,
            1 => ModuleState::Loading,
            2 => ModuleState::Unloading,
            3 => ModuleState::Unformed,
            v => ModuleState::Unknown(v),
        }
    }
}

impl std::fmt::Display for ModuleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleState::Live => f.write_str("Live"),
            ModuleState::Loading => f.write_str("Loading"),
            ModuleState::Unloading => f.write_str("Unloading"),
            ModuleState::Unformed => f.write_str("Unformed"),
            ModuleState::Unknown(v) => write!(f, "state {v}?"),
        }
    }
}

/// Where `struct module_sect_attrs` keeps each section's name and address.
#[derive(Clone, Debug)]
pub(crate) struct SectLayout {
    /// `module.sect_attrs` (a pointer).
    ptr: u64,
    /// `module_sect_attrs.nsections` (offset, size).
    nsections: (u64, u64),
    /// `module_sect_attrs.attrs`: the array, and the size of one element.
    attrs: u64,
    stride: u64,
    /// In one element: the name pointer (`battr.attr.name`, before 5.8 `name`) and `address`.
    name: u64,
    address: u64,
}

/// Where the fields of `struct module` (and the structs it points to) are.
#[derive(Clone, Debug)]
pub struct ModuleLayout {
    pub(crate) list: u64,
    pub(crate) name: (u64, u64),
    state: Option<(u64, u64)>,
    /// The text's base pointer, and its size field (offset, size).
    pub(crate) text_base: u64,
    pub(crate) text_size: (u64, u64),
    /// The size fields `/proc/modules` adds up (6.1: init_layout.size + core_layout.size;
    /// 6.4: every mem[].size).
    sizes: Vec<(u64, u64)>,
    refcnt: Option<(u64, u64)>,
    /// `module.source_list`, and in `struct module_use`: `source_list`, `source`.
    users: Option<(u64, u64, u64)>,
    /// `module.init` and `module.exit` (function pointers): `[permanent]` when only init is set.
    init_exit: Option<(u64, u64)>,
    taints: Option<(u64, u64)>,
    /// `kallsyms` and, in `struct mod_kallsyms`, `symtab`, `num_symtab` (offset, size), `strtab`.
    pub(crate) kallsyms: Option<(u64, u64, (u64, u64), u64)>,
    sections: Option<SectLayout>,
}

impl ModuleLayout {
    /// The layout from `t` (BTF or a profile): 6.4's `mem[]` or the older `core_layout`.
    pub fn from_types(t: &dyn TypeInfo) -> Result<Self, ModuleError> {
        let origin = t.source();
        let m = |ty: &str, path: &str| {
            t.member(ty, path).ok_or_else(|| {
                ModuleError::Layout(format!("the struct layout ({origin}) has no {ty}.{path}"))
            })
        };
        let sized = |mm: super::Member| (mm.offset, mm.size);
        let opt = |ty: &str, path: &str| t.member(ty, path).map(sized);
        let (text_base, text_size, sizes) =
            match (t.member("module", "core_layout.base"), t.member("module", "mem")) {
                (Some(base), _) => {
                    let core = opt("module", "core_layout.size");
                    let text = opt("module", "core_layout.text_size").or(core).ok_or_else(|| {
                        ModuleError::Layout(format!(
                            "the struct layout ({origin}) has no module.core_layout.size"
                        ))
                    })?;
                    // Without core_layout.size, the size is unknown (not the init part's alone).
                    let mut sizes: Vec<_> = core.into_iter().collect();
                    if core.is_some() {
                        sizes.extend(opt("module", "init_layout.size"));
                    }
                    // CONFIG_ARCH_WANTS_MODULES_DATA_IN_VMALLOC (not x86) adds a third.
                    sizes.extend(opt("module", "data_layout.size"));
                    (base.offset, text, sizes)
                }
                (None, Some(mem)) => {
                    // From 6.4: mem[MOD_TEXT] (0) is the text; /proc/modules adds every type's size.
                    let base = m("module_memory", "base")?;
                    let size = m("module_memory", "size")?;
                    let stride = t.size_of("module_memory").filter(|&s| s > 0).ok_or_else(|| {
                        ModuleError::Layout(format!(
                            "the struct layout ({origin}) has no size of module_memory"
                        ))
                    })?;
                    let count = (mem.size / stride).min(16);
                    let sizes =
                        (0..count).map(|i| (mem.offset + i * stride + size.offset, size.size)).collect();
                    (mem.offset + base.offset, (mem.offset + size.offset, size.size), sizes)
                }
                (None, None) => {
                    return Err(ModuleError::Layout(format!(
                        "the struct layout ({origin}) has neither module.core_layout nor module.mem"
                    )));
                }
            };
        let kallsyms = (|| {
            Some((
                t.member("module", "kallsyms")?.offset,
                t.member("mod_kallsyms", "symtab")?.offset,
                sized(t.member("mod_kallsyms", "num_symtab")?),
                t.member("mod_kallsyms", "strtab")?.offset,
            ))
        })();
        let users = (|| {
            Some((
                t.member("module", "source_list")?.offset,
                t.member("module_use", "source_list")?.offset,
                t.member("module_use", "source")?.offset,
            ))
        })();
        let sections = (|| {
            let stride = t.size_of("module_sect_attr").filter(|&s| s > 0)?;
            let name = t
                .member("module_sect_attr", "battr.attr.name")
                .or_else(|| t.member("module_sect_attr", "name"))?
                .offset;
            Some(SectLayout {
                ptr: t.member("module", "sect_attrs")?.offset,
                nsections: sized(t.member("module_sect_attrs", "nsections")?),
                attrs: t.member("module_sect_attrs", "attrs")?.offset,
                stride,
                name,
                address: t.member("module_sect_attr", "address")?.offset,
            })
        })();
        Ok(Self {
            list: m("module", "list")?.offset,
            name: sized(m("module", "name")?),
            state: opt("module", "state"),
            text_base,
            text_size,
            sizes,
            refcnt: opt("module", "refcnt.counter").or_else(|| opt("module", "refcnt")),
            users,
            init_exit: t
                .member("module", "init")
                .zip(t.member("module", "exit"))
                .map(|(i, e)| (i.offset, e.offset)),
            taints: opt("module", "taints"),
            kallsyms,
            sections,
        })
    }
}

/// One loaded module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Its name (`module.name`).
    pub name: String,
    /// Where its `struct module` is.
    pub addr: u64,
    /// Its state, when the layout has it.
    pub state: Option<ModuleState>,
    /// Its size as `/proc/modules` prints it, when the layout has the sizes.
    pub size: Option<u64>,
    /// Its base (`core_layout.base`, 6.4: `mem[MOD_TEXT].base`), as `/proc/modules` prints it.
    pub base: u64,
    /// Its text: `[start, end)`.
    pub text: (u64, u64),
    /// References (`module_refcount`), when the kernel counts them (CONFIG_MODULE_UNLOAD).
    pub refcount: Option<i64>,
    /// The modules that use it (`source_list`), when the layout has that list.
    pub users: Option<Vec<String>>,
    /// Whether it has an init and no exit: it cannot be removed (`[permanent]`).
    pub permanent: bool,
    /// `module.taints`, when the layout has it.
    pub taints: Option<u64>,
    /// Its `struct mod_kallsyms`, 0 when it has none.
    pub kallsyms: Option<u64>,
}

/// The modules as read from the list, and why the walk stopped early if it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleList {
    /// In list order (newest first, as `/proc/modules`).
    pub modules: Vec<Module>,
    /// Why the walk stopped before the list's end, if it did: the list is then incomplete.
    pub stopped: Option<String>,
}

/// A symbol of a module's own table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSymbol {
    /// Its name.
    pub name: String,
    /// Its address.
    pub value: u64,
    /// Its size (0 when unknown).
    pub size: u64,
    /// Whether it is a function (`STT_FUNC`).
    pub func: bool,
}

/// The `modules` list head, from kallsyms.
pub fn modules_head(symbols: &dyn Symbols) -> Result<u64, ModuleError> {
    symbols.address("modules").ok_or(ModuleError::NoSymbol)
}

/// A NUL-terminated name of at most `max` bytes at `addr`, non-printing bytes as `?`.
fn read_name(view: &mut dyn Memory, addr: u64, max: usize) -> Result<String, MemError> {
    let mut name = vec![0u8; max];
    // A string near the end of a mapping: read a shorter piece before giving up.
    let mut len = max;
    loop {
        match view.read(addr, &mut name[..len]) {
            Ok(()) => break,
            Err(e) => {
                let to_page = (0x1000 - (addr & 0xfff)) as usize;
                if len <= to_page.min(max) {
                    return Err(e);
                }
                len = to_page.min(max);
            }
        }
    }
    let end = name[..len].iter().position(|&b| b == 0).unwrap_or(len);
    Ok(name[..end].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect())
}

/// Reads the `modules` list at `head`: every module, at most [`MAX_MODULES`]. A list that
/// loops or cannot be read further ends the walk with the modules read so far and the reason.
pub fn read_modules(view: &mut dyn Memory, head: u64, l: &ModuleLayout) -> Result<ModuleList, ModuleError> {
    let mut out = ModuleList::default();
    let mut node = view
        .read_u64(head)
        .map_err(|e| ModuleError::read(format!("the modules list head at {head:#x}"), head, e))?;
    let mut seen = HashSet::new();
    while node != head {
        if out.modules.len() >= MAX_MODULES {
            out.stopped = Some(format!(
                "the modules list at {head:#x}: stopped after {MAX_MODULES} modules (the most believed)"
            ));
            break;
        }
        if !seen.insert(node) || node < l.list {
            out.stopped = Some(format!(
                "the modules list at {head:#x} loops back to {node:#x} after {} modules instead of returning to its head",
                out.modules.len()
            ));
            break;
        }
        let m = node - l.list;
        match read_module(view, m, l) {
            Ok(module) => out.modules.push(module),
            Err(e) => {
                out.stopped = Some(format!("stopped after {} modules: {e}", out.modules.len()));
                break;
            }
        }
        node = match view.read_u64(node) {
            Ok(n) => n,
            Err(e) => {
                out.stopped = Some(format!(
                    "the modules list: stopped after {} modules: reading the next pointer at {node:#x}: {e}",
                    out.modules.len()
                ));
                break;
            }
        };
    }
    Ok(out)
}

/// One `struct module` at `m`.
pub fn read_module(view: &mut dyn Memory, m: u64, l: &ModuleLayout) -> Result<Module, ModuleError> {
    let what = |field: &str| format!("module at {m:#x}: its {field}");
    let field = |view: &mut dyn Memory, (off, size): (u64, u64), name: &str| {
        let at = m.wrapping_add(off);
        view.read_uint(at, size).map_err(|e| ModuleError::read(what(name), at, e))
    };
    let name_at = m.wrapping_add(l.name.0);
    let name = read_name(view, name_at, l.name.1.clamp(1, 64) as usize)
        .map_err(|e| ModuleError::read(what("name"), name_at, e))?;
    let what_named = |field: &str| format!("module {name} at {m:#x}: its {field}");
    let base = field(view, (l.text_base, 8), "base")?;
    let text_size = field(view, l.text_size, "text size")?;
    let state = match l.state {
        Some(s) => Some(ModuleState::from_raw(field(view, s, "state")?)),
        None => None,
    };
    let mut size = None;
    if !l.sizes.is_empty() {
        let mut total = 0u64;
        for &s in &l.sizes {
            total = total.saturating_add(field(view, s, "size")?);
        }
        size = Some(total);
    }
    let refcount = match l.refcnt {
        // atomic_t: a signed int.
        Some(r) => Some(i64::from(field(view, r, "refcnt")? as u32 as i32) - MODULE_REF_BASE),
        None => None,
    };
    let permanent = match l.init_exit {
        Some((i, e)) => field(view, (i, 8), "init")? != 0 && field(view, (e, 8), "exit")? == 0,
        None => false,
    };
    let taints = match l.taints {
        Some(t) => Some(field(view, t, "taints")?),
        None => None,
    };
    let kallsyms = match l.kallsyms {
        Some((off, ..)) => Some(field(view, (off, 8), "kallsyms")?),
        None => None,
    };
    let users = match l.users {
        Some((list, use_list, use_source)) => {
            Some(read_users(view, m.wrapping_add(list), use_list, use_source, l).map_err(|e| match e {
                ModuleError::Read { what, addr, source } => {
                    ModuleError::Read { what: format!("{}: {what}", what_named("users")), addr, source }
                }
                other => other,
            })?)
        }
        None => None,
    };
    Ok(Module {
        name,
        addr: m,
        state,
        size,
        base,
        text: (base, base.wrapping_add(text_size)),
        refcount,
        users,
        permanent,
        taints,
        kallsyms,
    })
}

/// The names of the modules on `source_list` at `head` (`struct module_use`), bounded.
fn read_users(
    view: &mut dyn Memory,
    head: u64,
    use_list: u64,
    use_source: u64,
    l: &ModuleLayout,
) -> Result<Vec<String>, ModuleError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut node =
        view.read_u64(head).map_err(|e| ModuleError::read(format!("source_list at {head:#x}"), head, e))?;
    while node != head {
        if out.len() >= MAX_MODULES || !seen.insert(node) {
            return Err(ModuleError::Corrupt(format!(
                "source_list at {head:#x} loops back to {node:#x} after {} users",
                out.len()
            )));
        }
        let u = node.wrapping_sub(use_list);
        let src_at = u.wrapping_add(use_source);
        let src = view
            .read_u64(src_at)
            .map_err(|e| ModuleError::read(format!("module_use at {u:#x}"), src_at, e))?;
        let name_at = src.wrapping_add(l.name.0);
        out.push(read_name(view, name_at, l.name.1.clamp(1, 64) as usize).map_err(|e| {
            ModuleError::read(format!("the name of the user module at {src:#x}"), name_at, e)
        })?);
        node = view
            .read_u64(node)
            .map_err(|e| ModuleError::read(format!("source_list entry at {node:#x}"), node, e))?;
    }
    Ok(out)
}

impl Module {
    /// Whether `addr` is in its text.
    pub fn in_text(&self, addr: u64) -> bool {
        addr >= self.text.0 && addr < self.text.1
    }

    /// Its own symbol table (`mod->kallsyms`), at most [`MAX_MODULE_SYMBOLS`] entries.
    pub fn symbols(&self, view: &mut dyn Memory, l: &ModuleLayout) -> Result<Vec<ModuleSymbol>, ModuleError> {
        let name = &self.name;
        let (_, symtab_off, num_off, strtab_off) = l.kallsyms.ok_or_else(|| {
            ModuleError::Layout("the struct layout has no module.kallsyms / struct mod_kallsyms".to_string())
        })?;
        let ks = self.kallsyms.filter(|&k| k != 0).ok_or_else(|| {
            ModuleError::Corrupt(format!("module {name} has no symbol table (kallsyms is NULL)"))
        })?;
        let rd = |view: &mut dyn Memory, off: u64, size: u64, field: &str| {
            let at = ks.wrapping_add(off);
            view.read_uint(at, size)
                .map_err(|e| ModuleError::read(format!("module {name}'s mod_kallsyms.{field}"), at, e))
        };
        let symtab = rd(view, symtab_off, 8, "symtab")?;
        let num = rd(view, num_off.0, num_off.1, "num_symtab")?;
        let strtab = rd(view, strtab_off, 8, "strtab")?;
        if num > MAX_MODULE_SYMBOLS {
            return Err(ModuleError::Corrupt(format!(
                "module {name}'s symbol table at {symtab:#x} claims {num} symbols (at most {MAX_MODULE_SYMBOLS} believed)"
            )));
        }
        let mut raw = vec![0u8; num as usize * ELF_SYM_SIZE];
        view.read(symtab, &mut raw).map_err(|e| {
            ModuleError::read(format!("module {name}'s symbol table ({num} symbols)"), symtab, e)
        })?;
        let mut out = Vec::new();
        for s in raw.chunks_exact(ELF_SYM_SIZE) {
            const STT_FUNC: u8 = 2;
            const STT_OBJECT: u8 = 1;
            let (Some(name_off), Some(info), Some(value), Some(size)) =
                (s.u32_at(0), s.u8_at(4), s.u64_at(8), s.u64_at(16))
            else {
                continue;
            };
            let kind = info & 0xf;
            if name_off == 0 || value == 0 || !(kind == STT_FUNC || kind == STT_OBJECT) {
                continue;
            }
            let at = strtab.wrapping_add(u64::from(name_off));
            let sym = read_name(view, at, MAX_NAME)
                .map_err(|e| ModuleError::read(format!("module {name}'s symbol name"), at, e))?;
            out.push(ModuleSymbol { name: sym, value, size, func: kind == STT_FUNC });
        }
        Ok(out)
    }

    /// The function symbol at or below `addr` in this module: name, start and size. Only the
    /// names of symbols it may be in are read.
    pub fn symbol_at(
        &self,
        view: &mut dyn Memory,
        l: &ModuleLayout,
        addr: u64,
    ) -> Option<(String, u64, u64)> {
        let (_, symtab_off, num_off, strtab_off) = l.kallsyms?;
        let ks = self.kallsyms.filter(|&k| k != 0)?;
        let symtab = view.read_u64(ks.wrapping_add(symtab_off)).ok()?;
        let num = view.read_uint(ks.wrapping_add(num_off.0), num_off.1).ok()?;
        let strtab = view.read_u64(ks.wrapping_add(strtab_off)).ok()?;
        if num == 0 || num > MAX_MODULE_SYMBOLS {
            return None;
        }
        let mut raw = vec![0u8; num as usize * ELF_SYM_SIZE];
        view.read(symtab, &mut raw).ok()?;
        let mut best: Option<(u32, u64, u64)> = None;
        for s in raw.chunks_exact(ELF_SYM_SIZE) {
            const STT_FUNC: u8 = 2;
            let name = s.u32_at(0)?;
            let value = s.u64_at(8)?;
            let size = s.u64_at(16)?;
            if s.u8_at(4)? & 0xf == STT_FUNC && value <= addr && best.is_none_or(|b| value > b.1) {
                best = Some((name, value, size));
            }
        }
        let (name_off, start, size) = best?;
        let name = read_name(view, strtab.wrapping_add(u64::from(name_off)), MAX_NAME).ok()?;
        (!name.is_empty()).then_some((name, start, size))
    }

    /// `addr` as the kernel prints `%pS` in this module's text: `func+0x1c/0x40 [mod]`, or
    /// `[mod]+0x1c` past every symbol.
    pub fn name_address(&self, view: &mut dyn Memory, l: &ModuleLayout, addr: u64) -> String {
        match self.symbol_at(view, l, addr) {
            Some((name, start, size)) if size == 0 || addr - start < size => {
                format!("{name}+{:#x}/{size:#x} [{}]", addr - start, self.name)
            }
            _ => format!("[{}]+{:#x}", self.name, addr.wrapping_sub(self.text.0)),
        }
    }

    /// Its sections as `/sys/module/NAME/sections` lists them (`sect_attrs`): name and address,
    /// in the order of the module's file. Empty sections are not among them.
    pub fn sections(
        &self,
        view: &mut dyn Memory,
        l: &ModuleLayout,
    ) -> Result<Vec<(String, u64)>, ModuleError> {
        let name = &self.name;
        let s = l.sections.as_ref().ok_or_else(|| {
            ModuleError::Layout(
                "the struct layout has no module.sect_attrs / struct module_sect_attrs".to_string(),
            )
        })?;
        let ptr_at = self.addr.wrapping_add(s.ptr);
        let attrs = view
            .read_u64(ptr_at)
            .map_err(|e| ModuleError::read(format!("module {name}'s sect_attrs"), ptr_at, e))?;
        if attrs == 0 {
            return Err(ModuleError::Corrupt(format!(
                "module {name} has no section attributes (sect_attrs is NULL)"
            )));
        }
        let n_at = attrs.wrapping_add(s.nsections.0);
        let n = view
            .read_uint(n_at, s.nsections.1)
            .map_err(|e| ModuleError::read(format!("module {name}'s sect_attrs.nsections"), n_at, e))?;
        if n > MAX_SECTIONS {
            return Err(ModuleError::Corrupt(format!(
                "module {name}'s section attributes at {attrs:#x} claim {n} sections (at most {MAX_SECTIONS} believed)"
            )));
        }
        // The whole array in one read (one DMA request, not two per section).
        let array = attrs.wrapping_add(s.attrs);
        let mut raw = vec![0u8; (n * s.stride) as usize];
        view.read(array, &mut raw)
            .map_err(|e| ModuleError::read(format!("module {name}'s {n} section attributes"), array, e))?;
        let mut out = Vec::with_capacity(n as usize);
        for (i, a) in raw.chunks_exact(s.stride as usize).enumerate() {
            let word = |off: u64| a.u64_at(off as usize);
            let (Some(name_ptr), Some(addr)) = (word(s.name), word(s.address)) else {
                return Err(ModuleError::Layout(format!(
                    "module_sect_attr's name or address is past its size {:#x}",
                    s.stride
                )));
            };
            let sect = read_name(view, name_ptr, MAX_NAME)
                .map_err(|e| ModuleError::read(format!("module {name}'s section {i} name"), name_ptr, e))?;
            out.push((sect, addr));
        }
        Ok(out)
    }
}

/// `mod->taints` as `module_flags_taint` prints it: one letter per module taint, in bit order.
pub fn taint_letters(taints: u64) -> String {
    // (bit, letter) of the taints a module can carry (kernel/panic.c taint_flags[], .module).
    const MODULE_TAINTS: &[(u32, char)] = &[
        (0, 'P'),  // PROPRIETARY_MODULE
        (1, 'F'),  // FORCED_MODULE
        (10, 'C'), // CRAP (staging)
        (12, 'O'), // OOT_MODULE
        (13, 'E'), // UNSIGNED_MODULE
        (15, 'K'), // LIVEPATCH
        (16, 'X'), // AUX
        (17, 'T'), // RANDSTRUCT
        (18, 'N'), // TEST
    ];
    MODULE_TAINTS.iter().filter(|(bit, _)| taints & (1 << bit) != 0).map(|&(_, c)| c).collect()
}

/// Names an address in module text, reading the module list and the module's symbols:
/// `func+0x1c/0x40 [mod]`. None when no module's text holds it.
pub fn name_in_modules(
    view: &mut dyn Memory,
    list: &[Module],
    l: &ModuleLayout,
    addr: u64,
) -> Option<String> {
    let m = list.iter().find(|m| m.in_text(addr))?;
    Some(m.name_address(view, l, addr))
}

impl super::Linux {
    /// Where `struct module`'s fields are, from the kernel's struct layout.
    pub fn module_layout(&self) -> Result<ModuleLayout, ModuleError> {
        let types = self.kernel.types.as_deref().ok_or(ModuleError::NoTypes)?;
        ModuleLayout::from_types(types)
    }

    /// The loaded modules, read from the `modules` list.
    pub fn modules(&self, space: &mut crate::mmu::AddressSpace) -> Result<ModuleList, ModuleError> {
        let l = self.module_layout()?;
        let head = modules_head(&self.kernel.symbols)?;
        let mut view = super::View::new(space, self.kernel.cr3.value);
        read_modules(&mut view, head, &l)
    }

    /// The modules as gdb's library list (see [`library_list`]); `ko` finds a module's `.ko`
    /// file. A module whose sections cannot be read is left out, and logged.
    pub fn module_libraries(
        &self,
        space: &mut crate::mmu::AddressSpace,
        ko: &KoIndex,
    ) -> Result<String, ModuleError> {
        let l = self.module_layout()?;
        let head = modules_head(&self.kernel.symbols)?;
        let mut view = super::View::new(space, self.kernel.cr3.value);
        let list = read_modules(&mut view, head, &l)?;
        if let Some(why) = &list.stopped {
            log::warn!("libraries: the module list is incomplete: {why}");
        }
        let mut libs = Vec::new();
        for m in list.modules.iter().filter(|m| m.state != Some(ModuleState::Unformed)) {
            match m.sections(&mut view, &l) {
                Ok(sections) => {
                    let file = ko.find(&m.name).and_then(|p| {
                        KoSections::read(p).map_err(|e| log::warn!("libraries: module {}: {e}", m.name)).ok()
                    });
                    libs.push(Library { name: m.name.clone(), sections, file });
                }
                Err(e) => log::warn!("libraries: module {} left out: {e}", m.name),
            }
        }
        Ok(library_list(&libs))
    }
}
