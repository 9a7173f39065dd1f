//! The one fake memory of the tests: byte regions placed at addresses, read as physical memory
//! ([`PhysMem`]) or as a kernel's virtual memory ([`Memory`], addresses taken as they are).
//! Reads outside every region, or into a hole, fail as unmapped memory would, never with
//! zeros; reads as [`Memory`] are counted.

use crate::addr::PhysAddr;
use crate::linux::Memory;
use crate::mmu::MemError;
use crate::phys::buffer::BufferMem;
use crate::phys::{PhysError, PhysMem};

/// Regions of bytes at addresses; see the module docs.
pub struct FakeMemory {
    regions: BufferMem,
    /// `[start, end)` ranges that fail to read, as pages missing from a dump.
    holes: Vec<(u64, u64)>,
    reads: u64,
    bytes_read: u64,
}

impl FakeMemory {
    /// No regions yet.
    pub fn new() -> Self {
        FakeMemory {
            regions: BufferMem::empty("fake memory").writable(),
            holes: Vec::new(),
            reads: 0,
            bytes_read: 0,
        }
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

    /// Makes `[start, end)` fail to read as [`Memory`], as a page missing from a dump.
    pub fn add_hole(&mut self, start: u64, end: u64) {
        self.holes.push((start, end));
    }

    /// The `len` bytes at `addr`, not counted as a read.
    ///
    /// # Panics
    /// When they are not all inside one region: a mistake in the test.
    pub fn get(&mut self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        if let Err(e) = self.regions.read(PhysAddr(addr), &mut b) {
            panic!("FakeMemory::get at {addr:#x}: {e}");
        }
        b
    }

    /// Reads made as [`Memory`] so far.
    pub fn reads(&self) -> u64 {
        self.reads
    }

    /// Bytes asked for as [`Memory`] so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The regions as a physical memory source (without the holes).
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
        self.reads += 1;
        self.bytes_read += buf.len() as u64;
        let end = addr.saturating_add(buf.len() as u64);
        if self.holes.iter().any(|&(s, e)| s < end && e > addr) {
            let (addr, len) = (PhysAddr(addr), buf.len() as u64);
            return Err(MemError::Phys(PhysError::NotRam { addr, len, source_name: "fake memory".into() }));
        }
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
        m.add_hole(0x1008, 0x1009);
        assert!(m.read_u64(0x1008).is_err());
        assert_eq!(m.get(0x1008, 2), [0x88, 0x77]);
        assert_eq!((m.reads(), m.bytes_read()), (4, 32));
    }
}
