//! Loaded modules, for frames outside vmlinux: the `modules` list, each module's ORC table
//! and its own symbol table.

use super::orc::{OrcLayout, OrcTable};
use super::*;
use crate::bytes::LeBytes;
use crate::linux::{Member, TypeInfo};

/// Where the fields of `struct module` this module reads are.
#[derive(Clone, Debug)]
pub(super) struct ModuleLayout {
    pub(super) list: u64,
    pub(super) name: (u64, u64),
    /// The text's base pointer and its size field (offset, size).
    pub(super) text_base: u64,
    pub(super) text_size: (u64, u64),
    pub(super) orc_ip: u64,
    pub(super) orc: u64,
    pub(super) num_orcs: (u64, u64),
    /// `kallsyms` and, in `struct mod_kallsyms`, `symtab`, `num_symtab` (offset, size), `strtab`.
    pub(super) kallsyms: Option<(u64, u64, (u64, u64), u64)>,
}

impl ModuleLayout {
    pub(super) fn from_types(t: &dyn TypeInfo) -> Result<Self, UnwindError> {
        let origin = t.source();
        let m = |ty: &str, path: &str| {
            t.member(ty, path).ok_or_else(|| {
                UnwindError::Layout(format!("the struct layout ({origin}) has no {ty}.{path}"))
            })
        };
        let sized = |mm: Member| (mm.offset, mm.size);
        // Before 6.4: core_layout.{base,text_size}; from 6.4: mem[MOD_TEXT].{base,size}, and
        // MOD_TEXT is 0.
        let (text_base, text_size) = match (t.member("module", "core_layout.base"), t.member("module", "mem"))
        {
            (Some(base), _) => {
                let size = t
                    .member("module", "core_layout.text_size")
                    .map_or_else(|| m("module", "core_layout.size").map(sized), |s| Ok(sized(s)))?;
                (base.offset, size)
            }
            (None, Some(mem)) => {
                let base = m("module_memory", "base")?;
                let size = m("module_memory", "size")?;
                (mem.offset + base.offset, (mem.offset + size.offset, size.size))
            }
            (None, None) => {
                return Err(UnwindError::Layout(format!(
                    "the struct layout ({origin}) has no module text layout"
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
        Ok(Self {
            list: m("module", "list")?.offset,
            name: sized(m("module", "name")?),
            text_base,
            text_size,
            orc_ip: m("module", "arch.orc_unwind_ip")?.offset,
            orc: m("module", "arch.orc_unwind")?.offset,
            num_orcs: sized(m("module", "arch.num_orcs")?),
            kallsyms,
        })
    }
}

/// A loaded module, as far as backtraces need it.
pub(super) struct Module {
    pub(super) name: String,
    pub(super) text: (u64, u64),
    pub(super) orc_at: (u64, u64, u64),
    /// Its ORC table, read when a frame first needs it.
    pub(super) table: Option<Result<OrcTable, UnwindError>>,
    pub(super) kallsyms: Option<u64>,
}

/// The modules, read when a frame is first outside vmlinux.
pub(super) struct Modules {
    pub(super) list: Option<Result<Vec<Module>, UnwindError>>,
}

impl Modules {
    pub(super) fn read(view: &mut dyn Memory, orc: &Orc) -> Result<Vec<Module>, UnwindError> {
        let (head, l) = orc.modules.as_ref().map_err(|e| e.clone())?;
        let mut out = Vec::new();
        let mut node = view
            .read_u64(*head)
            .map_err(|e| UnwindError::read(format!("the modules list at {head:#x}"), *head, e))?;
        let mut seen = std::collections::HashSet::new();
        while node != *head {
            if out.len() >= MAX_MODULES || !seen.insert(node) {
                return Err(UnwindError::Tables(format!(
                    "the modules list at {head:#x} loops or is corrupt (at {node:#x})"
                )));
            }
            let m = node.wrapping_sub(l.list);
            let field =
                |view: &mut dyn Memory, (off, size): (u64, u64)| view.read_uint(m.wrapping_add(off), size);
            let read = |view: &mut dyn Memory| -> Result<Module, crate::mmu::MemError> {
                let mut name = vec![0u8; l.name.1.min(64) as usize];
                view.read(m.wrapping_add(l.name.0), &mut name)?;
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                let name: String =
                    name[..end].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect();
                let base = view.read_u64(m.wrapping_add(l.text_base))?;
                let size = field(view, l.text_size)?;
                let orc_at = (
                    view.read_u64(m.wrapping_add(l.orc_ip))?,
                    view.read_u64(m.wrapping_add(l.orc))?,
                    field(view, l.num_orcs)?,
                );
                let kallsyms = match l.kallsyms {
                    Some((off, ..)) => Some(view.read_u64(m.wrapping_add(off))?),
                    None => None,
                };
                Ok(Module { name, text: (base, base.wrapping_add(size)), orc_at, table: None, kallsyms })
            };
            out.push(read(view).map_err(|e| UnwindError::read(format!("module at {m:#x}"), m, e))?);
            node = view
                .read_u64(node)
                .map_err(|e| UnwindError::read(format!("the modules list at {node:#x}"), node, e))?;
        }
        Ok(out)
    }

    pub(super) fn find<'m>(
        &'m mut self,
        view: &mut dyn Memory,
        orc: &Orc,
        ip: u64,
    ) -> Result<Option<&'m mut Module>, UnwindError> {
        let list = self.list.get_or_insert_with(|| Self::read(view, orc));
        let list = list.as_mut().map_err(|e| e.clone())?;
        Ok(list.iter_mut().find(|m| ip >= m.text.0 && ip < m.text.1))
    }
}

impl Module {
    pub(super) fn table(
        &mut self,
        view: &mut dyn Memory,
        layout: &OrcLayout,
    ) -> Result<&OrcTable, UnwindError> {
        let (ip_at, orc_at, count) = self.orc_at;
        let what = format!("module {}", self.name);
        self.table
            .get_or_insert_with(|| OrcTable::read(view, layout, ip_at, orc_at, count, &what))
            .as_ref()
            .map_err(|e| e.clone())
    }

    /// The function symbol of this module at or below `ip`: name, start and size.
    pub(super) fn symbol(
        &self,
        view: &mut dyn Memory,
        l: &ModuleLayout,
        ip: u64,
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
            if s.u8_at(4)? & 0xf == STT_FUNC && value <= ip && best.is_none_or(|b| value > b.1) {
                best = Some((name, value, size));
            }
        }
        let (name_off, start, size) = best?;
        let mut name = vec![0u8; MAX_NAME];
        view.read(strtab.wrapping_add(u64::from(name_off)), &mut name).ok()?;
        let end = name.iter().position(|&b| b == 0)?;
        let name = String::from_utf8_lossy(&name[..end]).into_owned();
        Some((name, start, size))
    }
}
