//! The one fake memory of the tests: byte regions placed at addresses, read as physical memory
//! ([`PhysMem`]) or as a kernel's virtual memory ([`Memory`], addresses taken as they are).
//! Reads outside every region fail as unmapped memory would, never with zeros.

use crate::addr::PhysAddr;
use crate::linux::Memory;
use crate::mmu::MemError;
use crate::phys::PhysMem;
use crate::phys::buffer::BufferMem;

/// Regions of bytes at addresses; see the module docs.
pub struct FakeMemory {
    regions: BufferMem,
}

impl FakeMemory {
    /// No regions yet.
    pub fn new() -> Self {
        FakeMemory { regions: BufferMem::empty("fake memory").writable() }
    }

    /// Adds a region of `bytes` at `addr` (regions must not overlap).
    pub fn with_region(mut self, addr: u64, bytes: Vec<u8>) -> Self {
        self.add_region(addr, bytes);
        self
    }

    /// Adds a region of `bytes` at `addr` (regions must not overlap).
    pub fn add_region(&mut self, addr: u64, bytes: Vec<u8>) {
        self.regions.add_range(PhysAddr(addr), bytes);
    }

    /// Overwrites the bytes at `addr`, which must lie inside one region.
    ///
    /// # Panics
    /// When they do not: a mistake in the test that built the memory.
    pub fn put(&mut self, addr: u64, bytes: &[u8]) {
        if let Err(e) = self.regions.write(PhysAddr(addr), bytes) {
            panic!("FakeMemory::put at {addr:#x}: {e}");
        }
    }

    /// Overwrites the little-endian `u64` at `addr`.
    pub fn put_u64(&mut self, addr: u64, value: u64) {
        self.put(addr, &value.to_le_bytes());
    }

    /// The regions as a physical memory source.
    pub fn into_phys(self) -> BufferMem {
        self.regions
    }
}

impl Default for FakeMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl Memory for FakeMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.regions.read(PhysAddr(addr), buf).map_err(MemError::Phys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_read_back_and_gaps_fail() {
        let mut m = FakeMemory::new().with_region(0x1000, vec![0; 16]);
        m.put_u64(0x1008, 0x1122_3344_5566_7788);
        assert_eq!(m.read_u64(0x1008).unwrap(), 0x1122_3344_5566_7788);
        assert!(m.read_u64(0x100c).is_err());
        assert!(m.read_u64(0x2000).is_err());
    }
}
