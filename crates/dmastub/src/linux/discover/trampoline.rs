//! The real-mode trampoline below 1 MiB: a root that maps the kernel image, the kernel's entry
//! point and the CR4 its CPUs run with.

use super::error::{FailedReads, TrampolineError};
use crate::addr::{PhysAddr, VirtAddr};
use crate::bytes::LeBytes;
use crate::linux::vmlayout::START_KERNEL_MAP;
use crate::mmu::{AddressSpace, MmuConfig, Paging};
use crate::phys::find_range;

/// The real-mode trampoline's facts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trampoline {
    /// Physical address of `struct real_mode_header`.
    pub header: u64,
    /// `trampoline_pgd`: a root that maps the kernel image (and low memory, not the direct map).
    pub root: u64,
    /// `trampoline_header->start`: the kernel's virtual entry point for secondary CPUs.
    pub entry: u64,
    /// Whether the CPUs run with 5-level paging (CR4.LA57).
    pub la57: bool,
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
    let failures = FailedReads::of(&results, "below 1 MiB");
    if let Some(failed) = &failures
        && !readable.contains(&true)
    {
        return Err(TrampolineError::Unreadable(failed.clone()));
    }
    for ((&page, h), _) in pages.iter().zip(&heads).zip(&readable).filter(|(_, ok)| **ok) {
        if let Some(t) = header_at(space, page, h) {
            return Ok(t);
        }
    }
    let read = readable.iter().filter(|ok| **ok).count();
    Err(match failures {
        Some(failed) => TrampolineError::AbsentWhereRead { read, failed },
        None => TrampolineError::Absent { pages: checked },
    })
}

/// The trampoline whose `real_mode_header` may start `page`, given its first 64 bytes.
fn header_at(space: &mut AddressSpace, page: u64, head: &[u8; 64]) -> Option<Trampoline> {
    let f: Vec<u64> = (0..16).map(|i| head.u32_at(i * 4).map_or(0, u64::from)).collect();
    let near = |v: u64| v > page && v < page + 0x1_0000;
    // text_start, ro_end, trampoline_start: in order, within the blob.
    if !(near(f[0]) && f[0].is_multiple_of(4096) && near(f[1]) && f[1] > f[0] && (f[0]..f[1]).contains(&f[2]))
    {
        return None;
    }
    for &th in f[3..12].iter().filter(|v| near(**v)) {
        let mut t = [0u8; 24];
        if space.read_phys(PhysAddr(th), &mut t).is_err() {
            continue;
        }
        let (entry, efer, cr4) = (t.u64_at(0)?, t.u64_at(8)?, t.u32_at(16)?);
        // A kernel entry address, EFER.LME, CR4.PAE.
        if entry < START_KERNEL_MAP || efer & (1 << 8) == 0 || efer > 0xffff || cr4 & (1 << 5) == 0 {
            continue;
        }
        let la57 = cr4 & (1 << 12) != 0;
        let saved = space.config();
        space.set_config(MmuConfig { paging: if la57 { Paging::Level5 } else { Paging::Level4 }, ..saved });
        let root = f[3..12]
            .iter()
            .copied()
            .filter(|v| near(*v) && v.is_multiple_of(4096) && *v != f[0])
            .find(|&pgd| space.translate_in(pgd, VirtAddr(entry)).is_ok());
        space.set_config(saved);
        if let Some(root) = root {
            return Some(Trampoline { header: page, root, entry, la57 });
        }
    }
    None
}
