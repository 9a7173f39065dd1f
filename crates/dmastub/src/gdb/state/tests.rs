//! The session state's choice of address space, over a real [`AddressSpace`].

use super::*;
use crate::mmu::{Level, MmuConfig, PageSize, Paging, Translation, bits};
use crate::phys::PhysError;
use crate::phys::buffer::BufferMem;
use crate::testing::page_tables::PageTableBuilder;

/// An address space and a session's state over it, read as gdb's packets read it.
struct Session {
    space: AddressSpace,
    state: SessionState,
}

impl Session {
    fn new(space: AddressSpace) -> Self {
        Self { space, state: SessionState::new() }
    }
    fn mode(&self) -> Mode {
        self.state.mode()
    }
    fn set_mode(&mut self, mode: Mode) -> Result<(), TranslateError> {
        self.state.set_mode(mode)
    }
    fn cr3(&self) -> Option<u64> {
        self.state.cr3()
    }
    fn set_cr3(&mut self, cr3: u64) {
        self.state.set_cr3(cr3)
    }
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, MemError> {
        self.state.read(&mut self.space, addr, buf)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.state.write(&mut self.space, addr, data)
    }
    fn vtop(&mut self, virt: VirtAddr) -> WalkTrace {
        self.state.vtop(&mut self.space, virt)
    }
    /// Translation under the active CR3, whatever the mode.
    fn translate(&mut self, virt: VirtAddr) -> Result<Translation, TranslateError> {
        let cr3 = self.state.cr3().ok_or(TranslateError::NoCr3)?;
        self.space.translate_in(cr3, virt)
    }
    /// A whole read under the active CR3, whatever the mode.
    fn read_virt(&mut self, virt: VirtAddr, buf: &mut [u8]) -> Result<(), MemError> {
        let cr3 = self.state.cr3().ok_or(TranslateError::NoCr3)?;
        self.space.read_virt_in(cr3, virt, buf)
    }
}

#[test]
fn no_cr3_means_no_virtual_mode() {
    let mut s =
        Session::new(AddressSpace::new(Box::new(BufferMem::new("x", vec![1; 8192])), MmuConfig::default()));
    assert_eq!(s.mode(), Mode::Phys);
    assert_eq!(s.set_mode(Mode::Virt), Err(TranslateError::NoCr3));
    assert_eq!(s.translate(VirtAddr(0)), Err(TranslateError::NoCr3));
    let mut buf = [0u8; 4];
    assert_eq!(s.read_virt(VirtAddr(0), &mut buf), Err(MemError::Translate(TranslateError::NoCr3)));
    assert_eq!(s.read(0, &mut buf), Ok(4));
    s.set_cr3(0x1000);
    assert_eq!(s.mode(), Mode::Phys, "setting CR3 leaves the mode alone");
    s.set_mode(Mode::Virt).unwrap();
    assert_eq!(s.cr3(), Some(0x1000));
}

#[test]
fn vtop_without_cr3_says_so() {
    let mut no_cr3 =
        Session::new(AddressSpace::new(Box::new(BufferMem::new("x", vec![0; 4096])), MmuConfig::default()));
    let tr = no_cr3.vtop(VirtAddr(0x1000));
    assert_eq!(tr.result, Err(TranslateError::NoCr3));
    assert!(tr.to_string().contains("no page-table root"), "{tr}");
}

#[test]
fn the_mode_decides_what_an_address_means() {
    const MIB: u64 = 1 << 20;
    let mut b = PageTableBuilder::new(Paging::Level4, 2 * MIB as usize);
    let v = 0x5555_0000_0000u64;
    b.map(VirtAddr(v), PhysAddr(0x1000), PageSize::Size4K, bits::WRITABLE).unwrap();
    b.write_bytes(PhysAddr(0x1000), b"old page").unwrap();
    b.write_bytes(PhysAddr(0x2000), b"new page").unwrap();
    let pte = b.entry_addr(VirtAddr(v), Level::Pt).unwrap();
    let cr3 = b.root();
    let mut s = Session::new(AddressSpace::new(Box::new(b.into_mem("t").writable()), MmuConfig::default()));
    s.set_cr3(cr3);
    s.set_mode(Mode::Virt).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(v, &mut buf), Ok(8));
    assert_eq!(&buf, b"old page");
    s.write(v + 4, b"NEW!").unwrap();
    // Physical mode: the same bytes at their physical address; a page-table write through it
    // takes effect at once.
    s.set_mode(Mode::Phys).unwrap();
    assert_eq!(s.read(0x1000, &mut buf), Ok(8));
    assert_eq!(&buf, b"old NEW!");
    s.write(pte.0, &(0x2000 | bits::PRESENT | bits::WRITABLE).to_le_bytes()).unwrap();
    let end = 2 * MIB;
    let mut tail = vec![0u8; 0x100];
    assert_eq!(s.read(end - 0x10, &mut tail), Ok(0x10));
    assert!(matches!(s.read(end, &mut tail), Err(MemError::Phys(PhysError::NotRam { .. }))));
    s.set_mode(Mode::Virt).unwrap();
    assert_eq!(s.read(v, &mut buf), Ok(8));
    assert_eq!(&buf, b"new page");
    // Forgetting the CR3 goes back to physical mode.
    s.state.clear_cr3();
    assert_eq!((s.mode(), s.cr3()), (Mode::Phys, None));
}
