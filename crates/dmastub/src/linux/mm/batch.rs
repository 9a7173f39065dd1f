//! Reads asked for on demand and made together, a round at a time.
//!
//! Resolving a VMA's name is a chain of pointers (file → dentry → parent dentry → … → mount),
//! and a process has many VMAs. Each resolver asks for the bytes it needs next; whatever is
//! not read yet is queued, and one [`Batcher::round`] reads every queued object of every
//! resolver together. Over DMA the cost is the length of the longest chain in round trips, not
//! the number of pointers.

use crate::bytes::LeBytes;
use crate::linux::View;
use crate::mmu::MemError;
use std::collections::{HashMap, HashSet};

/// Most bytes kept at once: what a corrupt pointer chain could make it hold is bounded.
const MAX_CACHED: u64 = 64 << 20;

pub(crate) struct Batcher<'v, 'a> {
    pub view: &'v mut View<'a>,
    cache: HashMap<(u64, usize), Result<Vec<u8>, MemError>>,
    want: Vec<(u64, usize)>,
    wanted: HashSet<(u64, usize)>,
    cached_bytes: u64,
    /// Rounds of reads made.
    pub rounds: usize,
}

impl<'v, 'a> Batcher<'v, 'a> {
    pub fn new(view: &'v mut View<'a>) -> Self {
        Self {
            view,
            cache: HashMap::new(),
            want: Vec::new(),
            wanted: HashSet::new(),
            cached_bytes: 0,
            rounds: 0,
        }
    }

    /// The `len` bytes at `addr` if read (or why they could not be), else `None` and queued.
    pub fn get(&mut self, addr: u64, len: usize) -> Option<Result<&[u8], MemError>> {
        if self.cache.contains_key(&(addr, len)) {
            return self.cache.get(&(addr, len)).map(|r| r.as_ref().map(|v| &v[..]).map_err(Clone::clone));
        }
        if self.wanted.insert((addr, len)) {
            self.want.push((addr, len));
        }
        None
    }

    /// Whether reads are queued.
    pub fn pending(&self) -> bool {
        !self.want.is_empty()
    }

    /// Reads everything queued, together. False when nothing was queued, or when the bytes
    /// kept reached their bound (what is still queued then fails).
    pub fn round(&mut self) -> bool {
        if self.want.is_empty() {
            return false;
        }
        let want = std::mem::take(&mut self.want);
        self.wanted.clear();
        let total: u64 = want.iter().map(|w| w.1 as u64).sum();
        if self.cached_bytes + total > MAX_CACHED || self.view.check_budget("memory map").is_err() {
            return false;
        }
        self.cached_bytes += total;
        let mut bufs: Vec<Vec<u8>> = want.iter().map(|w| vec![0u8; w.1]).collect();
        let mut reads: Vec<(u64, &mut [u8])> =
            want.iter().zip(bufs.iter_mut()).map(|(w, b)| (w.0, &mut b[..])).collect();
        let results = self.view.read_together(&mut reads);
        for ((key, buf), r) in want.into_iter().zip(bufs).zip(results) {
            self.cache.insert(key, r.map(|()| buf));
        }
        self.rounds += 1;
        true
    }
}

/// The little-endian unsigned value of `size` bytes at `off` in `b`, if there.
pub(crate) fn uint(b: &[u8], off: u64, size: u64) -> Option<u64> {
    b.uint_at(usize::try_from(off).ok()?, (size as usize).clamp(1, 8))
}
