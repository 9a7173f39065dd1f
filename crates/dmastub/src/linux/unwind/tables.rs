//! The kernel's unwind tables as one: vmlinux's ORC table, where its text is, and how to find
//! each module's own table.

use super::modules::ModuleLayout;
use super::orc::{OrcLayout, OrcTable};
use super::*;
use crate::linux::{Symbols, TypeInfo};

/// The kernel's unwind tables, read once per discovery.
pub struct Orc {
    pub(super) layout: OrcLayout,
    pub(super) vmlinux: OrcTable,
    /// vmlinux's text: what its table covers (`_stext`..`_etext`, `_sinittext`..`_einittext`).
    pub(super) text: Vec<(u64, u64)>,
    /// How to find modules, or why that is not possible.
    pub(super) modules: Result<(u64, ModuleLayout), UnwindError>,
    /// `ret_from_fork` (and 6.5's `ret_from_fork_asm`): a new task's switch frame returns
    /// there exactly, not after a call.
    pub(super) ret_from_fork: Vec<u64>,
}

impl Orc {
    /// Reads vmlinux's ORC tables, found by their kallsyms symbols; `types` gives the layout of
    /// `struct orc_entry` and `struct module`.
    pub fn load(
        mem: &mut dyn Memory,
        symbols: &Kallsyms,
        types: Option<&dyn TypeInfo>,
    ) -> Result<Self, UnwindError> {
        let sym = |n: &str| symbols.address(n);
        let types = types.ok_or(UnwindError::NoTypes)?;
        let layout = OrcLayout::from_types(types)?;
        let (Some(ip_start), Some(ip_stop), Some(orc_start)) =
            (sym("__start_orc_unwind_ip"), sym("__stop_orc_unwind_ip"), sym("__start_orc_unwind"))
        else {
            return Err(UnwindError::NoOrcSymbols);
        };
        let bytes = ip_stop.checked_sub(ip_start).filter(|b| b % 4 == 0).ok_or_else(|| {
            UnwindError::Tables(format!("__stop_orc_unwind_ip {ip_stop:#x} is not 4-byte entries after __start_orc_unwind_ip {ip_start:#x}"))
        })?;
        let count = bytes / 4;
        if let Some(orc_stop) = sym("__stop_orc_unwind")
            && orc_stop.checked_sub(orc_start) != Some(count.saturating_mul(layout.size as u64))
        {
            return Err(UnwindError::Tables(format!(
                "vmlinux's ORC tables disagree: {count} addresses at {ip_start:#x}, but {orc_start:#x}..{orc_stop:#x} \
                 is not {count} entries of {} bytes",
                layout.size
            )));
        }
        let vmlinux = OrcTable::read(mem, &layout, ip_start, orc_start, count, "vmlinux")?;
        let mut text = Vec::new();
        for (lo, hi) in
            [(sym("_stext").or_else(|| sym("_text")), sym("_etext")), (sym("_sinittext"), sym("_einittext"))]
        {
            if let (Some(lo), Some(hi)) = (lo, hi)
                && lo < hi
            {
                text.push((lo, hi));
            }
        }
        if text.is_empty() {
            return Err(UnwindError::Tables(
                "no _stext/_etext symbols: where kernel text is, is unknown".to_string(),
            ));
        }
        let modules = match sym("modules") {
            Some(head) => ModuleLayout::from_types(types).map(|l| (head, l)),
            None => Err(UnwindError::Tables("no `modules` symbol".to_string())),
        };
        let ret_from_fork = ["ret_from_fork", "ret_from_fork_asm"].into_iter().filter_map(sym).collect();
        Ok(Self { layout, vmlinux, text, modules, ret_from_fork })
    }

    pub(super) fn in_vmlinux_text(&self, ip: u64) -> bool {
        self.text.iter().any(|&(lo, hi)| ip >= lo && ip < hi)
    }
}
