//! Loaded modules, for frames outside vmlinux: the shared module reader
//! ([`crate::linux::modules`]) for the list and each module's own symbol table, and here each
//! module's ORC table.

use super::orc::{OrcLayout, OrcTable};
use super::*;
use crate::linux::TypeInfo;
use crate::linux::modules::{self as shared, ModuleError};

impl From<ModuleError> for UnwindError {
    fn from(e: ModuleError) -> Self {
        match e {
            ModuleError::Read { what, addr, source } => UnwindError::Read { what, addr, source },
            ModuleError::NoTypes => UnwindError::NoTypes,
            ModuleError::Layout(s) => UnwindError::Layout(s),
            other => UnwindError::Tables(other.to_string()),
        }
    }
}

/// Where the fields of `struct module` this module reads are: the shared layout, and the ORC
/// table's.
#[derive(Clone, Debug)]
pub(super) struct ModuleLayout {
    pub(super) shared: shared::ModuleLayout,
    pub(super) orc_ip: u64,
    pub(super) orc: u64,
    pub(super) num_orcs: (u64, u64),
}

impl ModuleLayout {
    pub(super) fn from_types(t: &dyn TypeInfo) -> Result<Self, UnwindError> {
        let origin = t.source();
        let m = |path: &str| {
            t.member("module", path).ok_or_else(|| {
                UnwindError::Layout(format!("the struct layout ({origin}) has no module.{path}"))
            })
        };
        let num = m("arch.num_orcs")?;
        Ok(Self {
            shared: shared::ModuleLayout::from_types(t)?,
            orc_ip: m("arch.orc_unwind_ip")?.offset,
            orc: m("arch.orc_unwind")?.offset,
            num_orcs: (num.offset, num.size),
        })
    }
}

/// A loaded module, as far as backtraces need it.
pub(super) struct Module {
    pub(super) module: shared::Module,
    pub(super) orc_at: (u64, u64, u64),
    /// Its ORC table, read when a frame first needs it.
    pub(super) table: Option<Result<OrcTable, UnwindError>>,
}

/// The modules, read when a frame is first outside vmlinux.
pub(super) struct Modules {
    pub(super) list: Option<Result<Vec<Module>, UnwindError>>,
}

impl Modules {
    pub(super) fn read(view: &mut dyn Memory, orc: &Orc) -> Result<Vec<Module>, UnwindError> {
        let (head, l) = orc.modules.as_ref().map_err(|e| e.clone())?;
        let list = shared::read_modules(view, *head, &l.shared)?;
        // A list that stops early (a loop, an unreadable entry) still names the modules before.
        if let Some(why) = &list.stopped {
            if list.modules.is_empty() {
                return Err(UnwindError::Tables(why.clone()));
            }
            log::warn!("backtrace: {why}");
        }
        let mut out = Vec::with_capacity(list.modules.len());
        for module in list.modules {
            let m = module.addr;
            let at = |off: u64| m.wrapping_add(off);
            let read = |view: &mut dyn Memory| -> Result<(u64, u64, u64), crate::mmu::MemError> {
                Ok((
                    view.read_u64(at(l.orc_ip))?,
                    view.read_u64(at(l.orc))?,
                    view.read_uint(at(l.num_orcs.0), l.num_orcs.1)?,
                ))
            };
            let orc_at = read(view).map_err(|e| {
                UnwindError::read(format!("module {} at {m:#x}: its ORC table", module.name), m, e)
            })?;
            out.push(Module { module, orc_at, table: None });
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
        Ok(list.iter_mut().find(|m| m.module.in_text(ip)))
    }
}

impl Module {
    pub(super) fn name(&self) -> &str {
        &self.module.name
    }

    pub(super) fn table(
        &mut self,
        view: &mut dyn Memory,
        layout: &OrcLayout,
    ) -> Result<&OrcTable, UnwindError> {
        let (ip_at, orc_at, count) = self.orc_at;
        let what = format!("module {}", self.module.name);
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
        self.module.symbol_at(view, &l.shared, ip)
    }
}
