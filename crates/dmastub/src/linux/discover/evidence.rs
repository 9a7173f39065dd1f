//! What the kernel keeps about itself, read once its symbols are known: VMCOREINFO, the
//! `.BTF` section, strings; and whether a VMCOREINFO note agrees with memory.

use super::error::FailedReads;
use crate::addr::VirtAddr;
use crate::linux::btf::Btf;
use crate::linux::vmcoreinfo::{self, VmcoreInfo};
use crate::linux::vmlayout::{IMAGE_ALIGN, START_KERNEL_MAP};
use crate::linux::{Memory, Symbols, View};
use crate::mmu::{AddressSpace, MmuConfig, Paging};

/// Largest `.BTF` blob believed.
const MAX_BTF: u64 = 64 << 20;

pub(super) fn read_cstr(mem: &mut dyn Memory, addr: u64, max: usize) -> Option<String> {
    let mut buf = vec![0u8; max];
    mem.read(addr, &mut buf).ok()?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(max);
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// VMCOREINFO from RAM: `vmcoreinfo_data` points at the text, `vmcoreinfo_size` is its length.
pub(super) fn read_vmcoreinfo(mem: &mut dyn Memory, syms: &dyn Symbols) -> Option<(VmcoreInfo, u64)> {
    let ptr = mem.read_u64(syms.address("vmcoreinfo_data")?).ok()?;
    let size = syms.address("vmcoreinfo_size").and_then(|a| mem.read_u64(a).ok()).unwrap_or(4096);
    let mut buf = vec![0u8; size.clamp(1, vmcoreinfo::MAX_LEN as u64) as usize];
    mem.read(ptr, &mut buf).ok()?;
    let v = VmcoreInfo::parse(&buf);
    (!v.is_empty()).then_some((v, ptr))
}

/// Why the kernel's BTF was not taken.
#[derive(Debug)]
pub(super) enum BtfError {
    /// Reads of it failed: how many, and why.
    Unreadable(FailedReads),
    /// It was read, and is not BTF.
    Corrupt(String),
}

/// The kernel's `.BTF` section, between `__start_BTF` and `__stop_BTF`.
pub(super) fn read_btf(mem: &mut View, syms: &dyn Symbols) -> Result<Option<Btf>, BtfError> {
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
    if let Some(failed) = FailedReads::of(&results, &format!("of the BTF at {start:#x}..{stop:#x}")) {
        return Err(BtfError::Unreadable(failed));
    }
    Btf::parse(&blob, origin).map(Some).map_err(|e| BtfError::Corrupt(format!("at {start:#x}: {e}")))
}

/// Whether memory agrees with a VMCOREINFO note: its `phys_base` must put `swapper_pg_dir`
/// where the page tables there map it back to, and `_stext` where they map it; its
/// `KERNELOFFSET` must move `_stext` back into the kernel's link range. Says what disagrees.
pub(super) fn check_vmcoreinfo(space: &mut AddressSpace, v: &VmcoreInfo) -> Result<(), String> {
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
