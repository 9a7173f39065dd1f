//! The kernel image in the top 2 GiB: where it starts, and its read-only data by page
//! permissions.

use super::error::ImageError;
use crate::addr::VirtAddr;
use crate::linux::kallsyms::SAMPLE_STRIDE;
use crate::linux::vmlayout::{IMAGE_ALIGN, START_KERNEL_MAP};
use crate::mmu::AddressSpace;

/// Largest kernel image believed (text, data and bss).
const MAX_IMAGE: u64 = 1 << 30;

/// `_text`: the lowest 2 MiB slot of the mapped run that holds `hint`, or without a hint the
/// first mapped slot of the top 2 GiB (which map nothing but the kernel image).
pub(super) fn find_text(space: &mut AddressSpace, cr3: u64, hint: Option<u64>) -> Result<u64, ImageError> {
    let mapped = |space: &mut AddressSpace, a: u64| space.translate_in(cr3, VirtAddr(a)).is_ok();
    match hint {
        Some(h) => {
            let mut slot = h & !(IMAGE_ALIGN - 1);
            if !mapped(space, slot) {
                return Err(ImageError::EntryUnmapped(h));
            }
            for _ in 0..64 {
                match slot.checked_sub(IMAGE_ALIGN) {
                    Some(below) if below >= START_KERNEL_MAP && mapped(space, below) => slot = below,
                    _ => return Ok(slot),
                }
            }
            Err(ImageError::TooLong(h))
        }
        None => (START_KERNEL_MAP..=u64::MAX - (IMAGE_ALIGN - 1))
            .step_by(IMAGE_ALIGN as usize)
            .find(|&a| mapped(space, a))
            .ok_or(ImageError::NothingMapped),
    }
}

/// The kernel image split by page permissions.
#[derive(Debug, Default)]
pub(super) struct ImageLayout {
    /// Sample addresses in read-only, non-executable data, `SAMPLE_STRIDE` apart.
    pub(super) rodata_samples: Vec<u64>,
    /// First unmapped address after the image.
    pub(super) end: u64,
}

pub(super) fn image_layout(space: &mut AddressSpace, cr3: u64, text: u64) -> ImageLayout {
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
