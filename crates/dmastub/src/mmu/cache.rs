//! Bounded caches of page-table pages and of translations.
//!
//! A large virtual read walks the same few table pages over and over; reading each table page
//! once, whole, and remembering each translation, leaves about one backend read per data page.
//! Both caches have a fixed upper size (page tables come from the target and could be
//! arbitrarily large or cyclic) and both empty in O(1)-ish time, because the gdb layer flushes
//! at every stop.

use super::walk::Translation;
use super::{PageSize, PhysAddr, VirtAddr};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Bytes in a page-table page.
pub const TABLE_BYTES: usize = 4096;

/// How many table pages [`TableCache::new`] keeps by default: 4096 pages (16 MiB at most,
/// allocated only as used) hold the page tables for 8 GiB of 4 KiB-mapped space.
pub const DEFAULT_TABLE_PAGES: usize = 4096;

/// A multiply-fold hasher for the `u64` keys here: SipHash's DoS resistance buys nothing for
/// page addresses and costs time on every walk step.
#[derive(Default, Clone, Copy)]
pub struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let m = u128::from(self.0 ^ n) * 0x9e37_79b9_7f4a_7c15_u128;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FoldMap<K, V> = HashMap<K, V, BuildHasherDefault<FoldHasher>>;

/// Whole 4 KiB page-table pages keyed by physical address, replaced first-in first-out when
/// full.
pub struct TableCache {
    capacity: usize,
    index: FoldMap<u64, u32>,
    /// The page each slot holds (`u64::MAX`: none).
    keys: Vec<u64>,
    pages: Vec<Box<[u8; TABLE_BYTES]>>,
    /// Slots in use since the last flush (slots past it keep their memory for reuse).
    used: usize,
    /// The next slot to replace once all are used.
    victim: usize,
}

impl Default for TableCache {
    fn default() -> Self {
        Self::new(DEFAULT_TABLE_PAGES)
    }
}

impl TableCache {
    /// A cache of at most `capacity` pages (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            index: FoldMap::default(),
            keys: Vec::new(),
            pages: Vec::new(),
            used: 0,
            victim: 0,
        }
    }

    /// A copy of the pages held now (not of the memory kept for reuse).
    pub fn snapshot(&self) -> Self {
        let index: FoldMap<u64, u32> = self
            .index
            .iter()
            .filter(|&(_, &slot)| (slot as usize) < self.used)
            .map(|(&k, &v)| (k, v))
            .collect();
        Self {
            capacity: self.capacity,
            index,
            keys: self.keys[..self.used.min(self.keys.len())].to_vec(),
            pages: self.pages[..self.used.min(self.pages.len())].to_vec(),
            used: self.used.min(self.pages.len()),
            victim: self.victim,
        }
    }

    /// Pages currently held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The cached page at `table`, if any.
    pub fn get(&self, table: PhysAddr) -> Option<&[u8; TABLE_BYTES]> {
        let slot = *self.index.get(&table.0)?;
        self.pages.get(slot as usize).map(|p| &**p)
    }

    /// Entry `index` of the cached page at `table`, if that page is cached.
    pub fn entry(&self, table: PhysAddr, index: u16) -> Option<u64> {
        self.get(table).map(|p| entry_of(p, index))
    }

    /// Caches the page at `table` by letting `fill` read it into a slot. On error nothing is
    /// cached (the slot is left empty) and the error is returned.
    pub fn fill<E>(
        &mut self,
        table: PhysAddr,
        fill: impl FnOnce(&mut [u8; TABLE_BYTES]) -> Result<(), E>,
    ) -> Result<&[u8; TABLE_BYTES], E> {
        let slot = if let Some(&slot) = self.index.get(&table.0) {
            slot as usize
        } else if self.used < self.capacity {
            let slot = self.used;
            self.used += 1;
            if slot == self.pages.len() {
                self.pages.push(Box::new([0u8; TABLE_BYTES]));
                self.keys.push(u64::MAX);
            }
            slot
        } else {
            let slot = self.victim % self.capacity;
            self.victim = (slot + 1) % self.capacity;
            slot
        };
        if let Some(old) = self.keys.get_mut(slot) {
            if *old != u64::MAX {
                self.index.remove(old);
            }
            *old = u64::MAX;
        }
        let page = &mut self.pages[slot];
        fill(page)?;
        self.keys[slot] = table.0;
        self.index.insert(table.0, slot as u32);
        Ok(&self.pages[slot])
    }

    /// Forgets every page (the memory is kept for reuse).
    pub fn clear(&mut self) {
        self.index.clear();
        self.keys.iter_mut().for_each(|k| *k = u64::MAX);
        self.used = 0;
        self.victim = 0;
    }

    /// Forgets the page at `table`, if cached (after we wrote into it).
    #[cfg(test)]
    pub fn invalidate(&mut self, table: PhysAddr) {
        if let Some(slot) = self.index.remove(&table.0)
            && let Some(k) = self.keys.get_mut(slot as usize)
        {
            *k = u64::MAX;
        }
    }
}

/// Entry `index` (taken modulo 512) of a table page.
pub fn entry_of(page: &[u8; TABLE_BYTES], index: u16) -> u64 {
    let i = usize::from(index & 0x1ff) * 8;
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[i..i + 8]);
    u64::from_le_bytes(b)
}

/// One remembered translation: the page it maps, under which root.
#[derive(Clone, Copy)]
struct TlbEntry {
    /// Valid only when equal to the cache's current generation.
    generation: u64,
    root: u64,
    vbase: u64,
    translation: Translation,
}

/// Slots per page size: 8192 × 4 KiB (32 MiB of virtual space), 512 × 2 MiB (1 GiB),
/// 64 × 1 GiB (64 GiB). Powers of two.
const TLB_SLOTS: [usize; 3] = [8192, 512, 64];

/// Translations keyed by (root, virtual page), like a CPU's TLB: direct-mapped arrays, one per
/// page size, so lookups hash nothing, the size is fixed, and a flush is one increment. A
/// 2 MiB or 1 GiB translation serves every address inside its page.
pub struct TranslationCache {
    generation: u64,
    slots: [Vec<TlbEntry>; 3],
}

impl Default for TranslationCache {
    fn default() -> Self {
        Self::new()
    }
}

impl TranslationCache {
    pub fn new() -> Self {
        Self { generation: 1, slots: [Vec::new(), Vec::new(), Vec::new()] }
    }

    fn which(size: PageSize) -> usize {
        match size {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        }
    }

    fn slot_of(which: usize, size: PageSize, virt: u64) -> usize {
        ((virt >> size.shift()) as usize) & (TLB_SLOTS[which] - 1)
    }

    /// The translation of `virt` under `root`, if a page holding it is remembered.
    pub fn get(&self, root: PhysAddr, virt: VirtAddr) -> Option<Translation> {
        for size in [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G] {
            let which = Self::which(size);
            let Some(e) = self.slots[which].get(Self::slot_of(which, size, virt.0)) else {
                continue;
            };
            if e.generation == self.generation && e.root == root.0 && e.vbase == virt.0 & !size.offset_mask()
            {
                return Some(e.translation.at(virt));
            }
        }
        None
    }

    /// Remembers `t`, the translation of `virt` under `root`.
    pub fn insert(&mut self, root: PhysAddr, virt: VirtAddr, t: Translation) {
        let size = t.page_size;
        let which = Self::which(size);
        let slots = &mut self.slots[which];
        if slots.is_empty() {
            let empty = TlbEntry { generation: 0, root: 0, vbase: 0, translation: t };
            slots.resize(TLB_SLOTS[which], empty);
        }
        if let Some(e) = slots.get_mut(Self::slot_of(which, size, virt.0)) {
            *e = TlbEntry {
                generation: self.generation,
                root: root.0,
                vbase: virt.0 & !size.offset_mask(),
                translation: t,
            };
        }
    }

    /// Forgets every translation.
    pub fn clear(&mut self) {
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cache_is_bounded_and_evicts_oldest() {
        let mut c = TableCache::new(2);
        for (i, addr) in [0x1000u64, 0x2000, 0x3000].into_iter().enumerate() {
            c.fill(PhysAddr(addr), |p| {
                p[0] = i as u8;
                Ok::<_, ()>(())
            })
            .unwrap();
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(PhysAddr(0x1000)).is_none(), "the oldest page was replaced");
        assert_eq!(c.get(PhysAddr(0x2000)).unwrap()[0], 1);
        assert_eq!(c.get(PhysAddr(0x3000)).unwrap()[0], 2);
        // A failed fill caches nothing and leaves the rest alone.
        assert_eq!(c.fill(PhysAddr(0x4000), |_| Err("no")), Err("no"));
        assert!(c.get(PhysAddr(0x4000)).is_none());
        assert_eq!(c.len(), 1);
        c.clear();
        assert!(c.is_empty() && c.get(PhysAddr(0x3000)).is_none());
        c.fill(PhysAddr(0x5000), |_| Ok::<_, ()>(())).unwrap();
        assert_eq!(c.pages.len(), 2, "memory is reused after a clear");
        c.invalidate(PhysAddr(0x5000));
        assert!(c.is_empty());
    }

    #[test]
    fn large_translations_serve_every_address_inside() {
        let mut c = TranslationCache::new();
        let t = Translation {
            phys: PhysAddr(0x4000_0000),
            page_size: PageSize::Size2M,
            page_phys: PhysAddr(0x4000_0000),
            writable: true,
            user: false,
            nx: true,
        };
        c.insert(PhysAddr(0x1000), VirtAddr(0xffff_8880_0020_0000), t);
        let hit = c.get(PhysAddr(0x1000), VirtAddr(0xffff_8880_003f_f123)).unwrap();
        assert_eq!(hit.phys, PhysAddr(0x401f_f123));
        assert!(c.get(PhysAddr(0x2000), VirtAddr(0xffff_8880_0020_0000)).is_none(), "other root");
        assert!(c.get(PhysAddr(0x1000), VirtAddr(0xffff_8880_0040_0000)).is_none());
        c.clear();
        assert!(c.get(PhysAddr(0x1000), VirtAddr(0xffff_8880_0020_0000)).is_none());
    }
}
