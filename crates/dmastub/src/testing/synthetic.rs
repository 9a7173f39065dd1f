//! The synthetic machine: a few MiB of "physical memory" built in this process, with real x86-64
//! page tables and known contents, for tests, fuzzing and the demo that runs anywhere (no dump,
//! VM or DMA adapter). It is clearly not a Linux machine, and says so.

use crate::addr::{PhysAddr, VirtAddr};
use crate::mmu::{PageSize, Paging, bits};
use crate::testing::page_tables::{BuildError, PageTableBuilder};

/// Physical memory of the synthetic machine.
pub const RAM_BYTES: usize = 32 << 20;

/// What the synthetic machine holds, and where.
#[derive(Clone, Debug)]
pub struct SyntheticFacts {
    /// The page-table root of its one "process".
    pub cr3: u64,
    /// A NUL-terminated greeting in the process's data page.
    pub greeting_virt: u64,
    /// The greeting's text.
    pub greeting: &'static str,
    /// A u64 with a known value right after the greeting's page start + 0x100.
    pub counter_virt: u64,
    /// The counter's physical address.
    pub counter_phys: u64,
    /// The counter's value.
    pub counter_value: u64,
    /// The same counter seen through a 2 MiB-page direct map of all RAM.
    pub direct_map_base: u64,
    /// A "kernel" banner mapped by a 2 MiB page in the top 2 GiB.
    pub banner_virt: u64,
    /// The banner's text.
    pub banner: &'static str,
    /// A 1 GiB page whose first 32 MiB are RAM and the rest is not.
    pub gib_page_virt: u64,
    /// Physical address of the page-table entry (PT level) that maps the counter's page.
    pub counter_pte_phys: u64,
    /// A spare physical page holding `spare_value` at the counter's page offset, for tests
    /// that remap the counter's page.
    pub spare_page_phys: u64,
    /// The value on the spare page.
    pub spare_value: u64,
}

/// Builds the synthetic machine: its RAM bytes (physical address = offset) and its facts.
pub fn synthetic_machine() -> Result<(Vec<u8>, SyntheticFacts), BuildError> {
    const DATA_PHYS: u64 = 0x0020_3000;
    const TEXT_PHYS: u64 = 0x0020_0000;
    const STACK_PHYS: u64 = 0x0020_8000;
    const SPARE_PHYS: u64 = 0x0021_0000;
    const KERNEL_PHYS: u64 = 0x0100_0000;
    const DATA_VIRT: u64 = 0x0060_1000;
    const TEXT_VIRT: u64 = 0x0040_0000;
    const STACK_VIRT: u64 = 0x7ffc_9745_c000;
    const DIRECT_MAP: u64 = 0xffff_8880_0000_0000;
    const KERNEL_VIRT: u64 = 0xffff_ffff_8100_0000;
    const GIB_VIRT: u64 = 0xffff_c900_0000_0000;
    let greeting = "Hello from dmastub's SYNTHETIC demo machine (not a real Linux)";
    let banner = "Synthetic machine 1.0 (dmastub demo): real x86-64 page tables, made-up contents";
    let counter_value = 0x6920_f3a1;
    let spare_value = 0x5eed_0000_0000_0001;

    let mut b = PageTableBuilder::new(Paging::Level4, RAM_BYTES);
    let user = bits::WRITABLE | bits::USER;
    b.map(VirtAddr(TEXT_VIRT), PhysAddr(TEXT_PHYS), PageSize::Size4K, bits::USER)?;
    b.map(VirtAddr(DATA_VIRT), PhysAddr(DATA_PHYS), PageSize::Size4K, user | bits::NX)?;
    b.map(VirtAddr(STACK_VIRT), PhysAddr(STACK_PHYS), PageSize::Size4K, user | bits::NX)?;
    b.map_range(
        VirtAddr(DIRECT_MAP),
        PhysAddr(0),
        RAM_BYTES as u64,
        PageSize::Size2M,
        bits::WRITABLE | bits::NX,
    )?;
    b.map(VirtAddr(KERNEL_VIRT), PhysAddr(KERNEL_PHYS), PageSize::Size2M, bits::GLOBAL)?;
    b.map(VirtAddr(GIB_VIRT), PhysAddr(0), PageSize::Size1G, bits::WRITABLE | bits::NX)?;

    let mut text = vec![0x90u8; 16]; // nop sled, then `jmp .`
    text.extend_from_slice(&[0xeb, 0xfe]);
    b.write_bytes(PhysAddr(TEXT_PHYS), &text)?;
    let mut g = greeting.as_bytes().to_vec();
    g.push(0);
    b.write_bytes(PhysAddr(DATA_PHYS), &g)?;
    b.write_u64(PhysAddr(DATA_PHYS + 0x100), counter_value)?;
    b.write_u64(PhysAddr(STACK_PHYS + 0x9c0), counter_value)?;
    b.write_u64(PhysAddr(SPARE_PHYS + 0x100), spare_value)?;
    let mut k = banner.as_bytes().to_vec();
    k.push(0);
    b.write_bytes(PhysAddr(KERNEL_PHYS), &k)?;

    let counter_pte_phys = b
        .entry_addr(VirtAddr(DATA_VIRT), crate::mmu::Level::Pt)
        .ok_or(BuildError::OutsideMemory { addr: PhysAddr(DATA_PHYS), len: 8 })?
        .0;
    let facts = SyntheticFacts {
        cr3: b.root(),
        greeting_virt: DATA_VIRT,
        greeting,
        counter_virt: DATA_VIRT + 0x100,
        counter_phys: DATA_PHYS + 0x100,
        counter_value,
        direct_map_base: DIRECT_MAP,
        banner_virt: KERNEL_VIRT,
        banner,
        gib_page_virt: GIB_VIRT,
        counter_pte_phys,
        spare_page_phys: SPARE_PHYS,
        spare_value,
    };
    Ok((b.into_bytes(), facts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmu::{AddressSpace, MmuConfig};
    use crate::phys::PhysMem;
    use crate::phys::buffer::BufferMem;

    #[test]
    fn the_synthetic_machine_translates_as_documented() {
        let (bytes, f) = synthetic_machine().unwrap();
        let mem: Box<dyn PhysMem> = Box::new(BufferMem::new("demo", bytes));
        let mut space = AddressSpace::new(mem, MmuConfig::new(Paging::Level4));
        let mut v = [0u8; 8];
        space.read_virt_in(f.cr3, VirtAddr(f.counter_virt), &mut v).unwrap();
        assert_eq!(u64::from_le_bytes(v), f.counter_value);
        space.read_virt_in(f.cr3, VirtAddr(f.direct_map_base + f.counter_phys), &mut v).unwrap();
        assert_eq!(u64::from_le_bytes(v), f.counter_value);
        space.read_virt_in(f.cr3, VirtAddr(f.gib_page_virt + f.counter_phys), &mut v).unwrap();
        assert_eq!(u64::from_le_bytes(v), f.counter_value);
        assert!(space.read_virt_in(f.cr3, VirtAddr(f.gib_page_virt + (64 << 20)), &mut v).is_err());
        let t = space.translate_in(f.cr3, VirtAddr(f.counter_virt)).unwrap();
        assert_eq!(t.phys.0, f.counter_phys);
        let mut pte = [0u8; 8];
        space.read_phys(PhysAddr(f.counter_pte_phys), &mut pte).unwrap();
        assert_eq!(u64::from_le_bytes(pte) & 0x000f_ffff_ffff_f000, f.counter_phys & !0xfff);
    }
}
