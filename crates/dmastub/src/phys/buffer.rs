//! Physical memory held in this process: for tests, and for the synthetic demo machine.

use super::{PhysError, PhysMem, RamRange, SourceKind};
use crate::addr::PhysAddr;

/// RAM made of byte vectors placed at physical addresses.
pub struct BufferMem {
    name: String,
    ram: Vec<RamRange>,
    chunks: Vec<Vec<u8>>,
    writable: bool,
}

impl BufferMem {
    /// One RAM range of `bytes`, starting at physical 0.
    pub fn new(name: &str, bytes: Vec<u8>) -> Self {
        let mut m = Self::empty(name);
        m.add_range(PhysAddr(0), bytes);
        m
    }

    /// No RAM yet; add ranges with [`BufferMem::add_range`].
    pub fn empty(name: &str) -> Self {
        Self { name: name.to_string(), ram: Vec::new(), chunks: Vec::new(), writable: false }
    }

    /// Adds `bytes` as RAM at `start`.
    ///
    /// # Panics
    /// When the new range overlaps an existing one: a bug in the caller, who built the layout.
    pub fn add_range(&mut self, start: PhysAddr, bytes: Vec<u8>) {
        let new = RamRange { start, len: bytes.len() as u64 };
        assert!(
            self.ram.iter().all(|r| new.end() <= r.start.0 || r.end() <= start.0),
            "BufferMem range {new} overlaps another"
        );
        let i = self.ram.partition_point(|r| r.start < start);
        self.ram.insert(i, new);
        self.chunks.insert(i, bytes);
    }

    /// Lets [`PhysMem::write`] change the bytes.
    pub fn writable(mut self) -> Self {
        self.writable = true;
        self
    }

    fn locate(&self, addr: PhysAddr, len: usize) -> Result<(usize, usize), PhysError> {
        let i = self.ram.partition_point(|r| r.end() <= addr.0);
        match self.ram.get(i) {
            Some(r) if r.contains(addr, len as u64) => Ok((i, (addr.0 - r.start.0) as usize)),
            _ => Err(PhysError::NotRam { addr, len: len as u64, source_name: self.name.clone() }),
        }
    }
}

impl PhysMem for BufferMem {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Buffer
    }

    fn ram(&self) -> &[RamRange] {
        &self.ram
    }

    fn read(&mut self, addr: PhysAddr, buf: &mut [u8]) -> Result<(), PhysError> {
        let (i, off) = self.locate(addr, buf.len())?;
        buf.copy_from_slice(&self.chunks[i][off..off + buf.len()]);
        Ok(())
    }

    fn write(&mut self, addr: PhysAddr, data: &[u8]) -> Result<(), PhysError> {
        if !self.writable {
            return Err(PhysError::ReadOnly { source_name: self.name.clone() });
        }
        let (i, off) = self.locate(addr, data.len())?;
        self.chunks[i][off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_and_refuses_outside() {
        let mut m = BufferMem::new("t", (0..=255).collect());
        m.add_range(PhysAddr(0x1000), vec![7; 16]);
        let mut b = [0u8; 4];
        m.read(PhysAddr(4), &mut b).unwrap();
        assert_eq!(b, [4, 5, 6, 7]);
        m.read(PhysAddr(0x100c), &mut b).unwrap();
        assert_eq!(b, [7; 4]);
        assert!(matches!(m.read(PhysAddr(254), &mut b), Err(PhysError::NotRam { .. })));
        assert!(matches!(m.write(PhysAddr(0), &b), Err(PhysError::ReadOnly { .. })));
        let mut m = m.writable();
        m.write(PhysAddr(0), &[9, 9]).unwrap();
        m.read(PhysAddr(0), &mut b).unwrap();
        assert_eq!(b, [9, 9, 2, 3]);
    }
}
