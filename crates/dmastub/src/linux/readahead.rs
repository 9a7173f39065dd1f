//! The one read-ahead mechanism of the Linux layer: bytes read ahead in windows (a task's
//! struct, a whole kernel stack, chunks of the log's rings), and every other read falling
//! through to the memory underneath.
//!
//! A read may be a DMA round trip of ~10 µs, so the parsers read what they will need in one
//! go and then pick fields out of it through the same [`Memory`] interface they would use
//! anyway: the code that reads a field does not care whether it was read ahead.

use super::Memory;
use crate::mmu::MemError;

/// Bytes read ahead at one address; parts that could not be read are holes that fail with
/// the error they failed with, rather than being read again.
struct Window {
    base: u64,
    bytes: Vec<u8>,
    /// `[start, end)` offsets in `bytes` that could not be read, and why.
    holes: Vec<(usize, usize, MemError)>,
}

impl Window {
    fn end(&self) -> u64 {
        self.base.saturating_add(self.bytes.len() as u64)
    }
}

/// Memory with read-ahead windows over a wrapped [`Memory`]: a read wholly inside the windows
/// is answered from them; any other read goes to the wrapped memory. Counts the bytes it
/// reads from the wrapped memory.
pub(crate) struct ReadAhead<'m, M: Memory + ?Sized = dyn Memory + 'm> {
    mem: &'m mut M,
    /// Sorted by base, not overlapping.
    windows: Vec<Window>,
    bytes_read: u64,
}

impl<'m, M: Memory + ?Sized> ReadAhead<'m, M> {
    /// No windows yet: every read falls through (and is counted).
    pub fn new(mem: &'m mut M) -> Self {
        Self { mem, windows: Vec::new(), bytes_read: 0 }
    }

    /// Adds `bytes` already read at `base` as a window (e.g. from a batch of reads). A window
    /// overlapping an earlier one replaces it.
    pub fn insert(&mut self, base: u64, bytes: Vec<u8>) {
        self.insert_window(Window { base, bytes, holes: Vec::new() });
    }

    fn insert_window(&mut self, w: Window) {
        let end = w.end();
        self.windows.retain(|o| o.end() <= w.base || o.base >= end);
        let at = self.windows.partition_point(|o| o.base < w.base);
        self.windows.insert(at, w);
    }

    /// Reads `len` bytes at `base` in one read and keeps them as a window; on failure nothing
    /// is kept and the error is returned.
    pub fn fetch(&mut self, base: u64, len: usize) -> Result<(), MemError> {
        let mut bytes = vec![0u8; len];
        self.bytes_read += len as u64;
        self.mem.read(base, &mut bytes)?;
        self.insert(base, bytes);
        Ok(())
    }

    /// Reads `len` bytes at `base` in one read, or page by page when that fails, and keeps
    /// them as a window whose unreadable pages are holes (failing with their error through [`Memory::read`]). Returns how many bytes are holes.
    pub fn fetch_pages(&mut self, base: u64, len: usize) -> usize {
        let mut bytes = vec![0u8; len];
        let mut holes = Vec::new();
        self.bytes_read += len as u64;
        if self.mem.read(base, &mut bytes).is_err() {
            let mut p = 0usize;
            while p < len {
                let addr = base.wrapping_add(p as u64);
                let n = ((0x1000 - (addr & 0xfff)) as usize).min(len - p);
                self.bytes_read += n as u64;
                let page = &mut bytes[p..p + n];
                if let Err(e) = self.mem.read(addr, page) {
                    page.fill(0);
                    holes.push((p, p + n, e));
                }
                p += n;
            }
        }
        let lost = holes.iter().map(|(s, e, _)| e - s).sum();
        self.insert_window(Window { base, bytes, holes });
        lost
    }

    /// Whether `[addr, addr + len)` lies wholly inside the windows (holes included).
    pub fn covers(&self, addr: u64, len: usize) -> bool {
        let mut pos = addr;
        let Some(end) = addr.checked_add(len as u64) else { return false };
        while pos < end {
            match self.containing(pos) {
                Some(w) => pos = w.end(),
                None => return false,
            }
        }
        true
    }

    /// The first hole in `[addr, addr + len)`: where the unreadable bytes start (`addr` at
    /// the earliest), and why they are unreadable.
    pub fn hole_in(&self, addr: u64, len: usize) -> Option<(u64, &MemError)> {
        let end = addr.checked_add(len as u64)?;
        let mut pos = addr;
        while pos < end {
            let w = self.containing(pos)?;
            let at = (pos - w.base) as usize;
            let take = (w.end().min(end) - pos) as usize;
            if let Some((s, _, e)) = w.holes.iter().find(|(s, e, _)| *s < at + take && *e > at) {
                return Some((w.base + (*s).max(at) as u64, e));
            }
            pos += take as u64;
        }
        None
    }

    fn containing(&self, addr: u64) -> Option<&Window> {
        let i = self.windows.partition_point(|w| w.base <= addr).checked_sub(1)?;
        let w = &self.windows[i];
        (addr < w.end()).then_some(w)
    }

    /// Bytes read from the wrapped memory so far (windows and reads that fell through).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Copies `[addr, addr + buf.len())` from the windows: `None` when some of it is outside
    /// them, the hole's error when some of it is a hole.
    fn copy_from_windows(&self, addr: u64, buf: &mut [u8]) -> Option<Result<(), MemError>> {
        let end = addr.checked_add(buf.len() as u64)?;
        let mut pos = addr;
        while pos < end {
            let w = self.containing(pos)?;
            let at = (pos - w.base) as usize;
            let take = (w.end().min(end) - pos) as usize;
            if let Some((_, _, e)) = w.holes.iter().find(|(s, e, _)| *s < at + take && *e > at) {
                return Some(Err(e.clone()));
            }
            let out = (pos - addr) as usize;
            buf[out..out + take].copy_from_slice(&w.bytes[at..at + take]);
            pos += take as u64;
        }
        Some(Ok(()))
    }
}

impl<M: Memory + ?Sized> Memory for ReadAhead<'_, M> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if let Some(r) = self.copy_from_windows(addr, buf) {
            return r;
        }
        self.bytes_read += buf.len() as u64;
        self.mem.read(addr, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeMemory;

    fn memory() -> FakeMemory {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(0x3000).collect();
        FakeMemory::new()
            .with_region(0x1000, bytes[..0x1000].to_vec())
            .with_region(0x3000, bytes[0x2000..].to_vec())
    }

    #[test]
    fn reads_inside_a_window_do_not_reach_memory() {
        let mut m = memory();
        let mut ra = ReadAhead::new(&mut m);
        ra.fetch(0x1000, 0x100).unwrap();
        assert_eq!(ra.bytes_read(), 0x100);
        assert_eq!(ra.read_u32(0x1010).unwrap(), u32::from_le_bytes([0x10, 0x11, 0x12, 0x13]));
        assert_eq!(ra.bytes_read(), 0x100);
        // Across the window's end: read from memory, whole.
        assert_eq!(ra.read_u16(0x10ff).unwrap(), u16::from_le_bytes([0xff, 0x00]));
        assert_eq!(ra.bytes_read(), 0x102);
    }

    #[test]
    fn adjacent_windows_answer_together_and_holes_fail_without_rereading() {
        let mut m = memory();
        let mut ra = ReadAhead::new(&mut m);
        ra.insert(0x100, vec![1, 2]);
        ra.insert(0x102, vec![3, 4]);
        assert_eq!(ra.read_u32(0x100).unwrap(), 0x0403_0201);
        assert_eq!(ra.bytes_read(), 0);
        // 0x1000..0x4000 with the page at 0x2000 missing.
        assert_eq!(ra.fetch_pages(0x1000, 0x3000), 0x1000);
        let read = ra.bytes_read();
        assert!(ra.read_u64(0x2ffc).is_err());
        assert_eq!(ra.bytes_read(), read);
        assert_eq!(ra.hole_in(0x1000, 0x3000).map(|(at, _)| at), Some(0x2000));
        assert!(ra.covers(0x1000, 0x3000));
        assert!(!ra.covers(0x3fff, 2));
        assert_eq!(ra.read_u16(0x3ffe).unwrap(), u16::from_le_bytes([0xfe, 0xff]));
    }
}
