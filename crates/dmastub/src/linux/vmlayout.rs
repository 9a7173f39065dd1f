//! Where x86-64 Linux maps its image and its direct map: the constants discovery and the
//! symbol tables share (here, so that neither imports the other for them).

/// `__START_KERNEL_map`: where the kernel image is mapped, before the slide.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// `_text` at link time on x86-64 (`__START_KERNEL_map + CONFIG_PHYSICAL_START`, 16 MiB).
pub const DEFAULT_TEXT_LINK: u64 = 0xffff_ffff_8100_0000;
/// The direct map's base without memory KASLR, for 4- and 5-level paging.
pub const DEFAULT_PAGE_OFFSET: [u64; 2] = [0xffff_8880_0000_0000, 0xff11_0000_0000_0000];
/// The kernel image is mapped at 2 MiB granularity within the top 2 GiB.
pub(crate) const IMAGE_ALIGN: u64 = 2 << 20;
