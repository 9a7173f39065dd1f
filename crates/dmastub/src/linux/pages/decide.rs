//! The decision for one `struct page`, as makedumpfile's `__exclude_unnecessary_pages` makes
//! it: the same tests (`page_is_buddy_v3`, `is_cache_page`, `isAnon`, `isHugetlb`,
//! `isHWPOISON`, `isOffline`) in the same order, written from reading it.

use super::layout::PageLayout;
use super::{DumpLevel, PageClass};

/// `PAGE_MAPPING_ANON`: the low bit of `page.mapping` of an anonymous (or KSM) page.
const PAGE_MAPPING_ANON: u64 = 1;

/// What one decision says: the class, and how many pages from this pfn it covers (a buddy
/// block or a compound page is decided by its first page for all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Decision {
    /// The class of the pages; [`PageClass::Kept`] is always one page.
    pub class: PageClass,
    /// Pages decided, from this pfn on (a power of two, aligned).
    pub pages: u64,
    /// The page is a compound tail: kept unless its head's decision covered it already.
    pub tail: bool,
}

/// The fields of one `struct page` the decision reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RawPage {
    pub flags: u64,
    pub mapping: u64,
    pub private: u64,
    pub mapcount: i32,
    pub compound_head: u64,
}

fn le(bytes: &[u8], off: u64, size: u64) -> u64 {
    let (off, size) = (off as usize, size.min(8) as usize);
    let mut b = [0u8; 8];
    if let Some(src) = bytes.get(off..off + size) {
        b[..size].copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

impl RawPage {
    /// The fields of the struct page in `bytes` (at least `layout.page_size` of them).
    pub fn parse(layout: &PageLayout, bytes: &[u8]) -> Self {
        Self {
            flags: le(bytes, layout.flags, 8),
            mapping: le(bytes, layout.mapping, 8),
            private: le(bytes, layout.private, 8),
            mapcount: le(bytes, layout.mapcount, 4) as u32 as i32,
            compound_head: le(bytes, layout.compound_head, 8),
        }
    }
}

fn bit(flags: u64, nr: u32) -> bool {
    nr < 64 && flags & (1 << nr) != 0
}

impl PageLayout {
    fn is_slab(&self, p: &RawPage) -> bool {
        self.slab_mapcount.is_some_and(|v| p.mapcount == v) || bit(p.flags, self.pg_slab)
    }

    /// `isAnon`: the mapping's low bit, never on a slab page (whose `mapping` word is the
    /// slab's own data).
    fn is_anon(&self, p: &RawPage) -> bool {
        p.mapping & PAGE_MAPPING_ANON != 0 && !self.is_slab(p)
    }

    /// `is_cache_page`: on an LRU list, or in the swap cache (which `PG_swapcache` means only
    /// with `PG_swapbacked`, the bit it shares with another flag).
    fn is_cache(&self, p: &RawPage) -> bool {
        bit(p.flags, self.pg_lru)
            || (self.pg_swapbacked.is_none_or(|b| bit(p.flags, b)) && bit(p.flags, self.pg_swapcache))
    }

    fn is_buddy(&self, p: &RawPage) -> bool {
        !self.is_slab(p) && self.buddy_mapcount.is_some_and(|v| p.mapcount == v)
    }

    fn is_offline(&self, p: &RawPage) -> bool {
        !self.is_slab(p) && self.offline_mapcount.is_some_and(|v| p.mapcount == v)
    }

    /// The order of the compound page headed by `p` at `pfn`, and whether it is a hugetlbfs
    /// page, from its first tail page `next` (`None` when that is not at hand: order 0).
    /// An order the pfn is not aligned to, or past 63, is ignored (order 0), as makedumpfile
    /// does; the hugetlb answer stands even then.
    fn compound(&self, pfn: u64, p: &RawPage, next: Option<&[u8]>) -> (u32, bool) {
        if p.flags & self.pg_head_mask == 0 {
            return (0, false);
        }
        let Some(next) = next else { return (0, false) };
        let (order, hugetlb) = if let Some(v) = self.hugetlb_mapcount {
            // 6.9+: the order in the low byte of the tail's flags, hugetlb by the head's type.
            (le(next, self.flags, 8) & 0xff, p.mapcount == v)
        } else if let Some(b) = self.pg_hugetlb {
            // 6.6+: the order in the low byte of the tail's flags, hugetlb by a flag there.
            let f1 = le(next, self.flags, 8);
            (f1 & 0xff, bit(f1, b))
        } else {
            let order = self.compound_order.map_or(0, |(off, size)| le(next, off, size));
            let dtor = self.compound_dtor.map(|(off, size)| le(next, off, size));
            (order, dtor.is_some() && dtor == self.hugetlb_dtor)
        };
        let order = if order >= 64 || pfn & ((1u64 << order) - 1) != 0 { 0 } else { order as u32 };
        (order, hugetlb)
    }

    /// The decision for the struct page `page` of `pfn` at dump level `level`; `next` is the
    /// struct page of `pfn + 1` when read (a compound head's order and destructor are there).
    pub(super) fn decide(&self, level: DumpLevel, pfn: u64, page: &[u8], next: Option<&[u8]>) -> Decision {
        let p = RawPage::parse(self, page);
        let kept = Decision { class: PageClass::Kept, pages: 1, tail: false };
        if p.compound_head & 1 != 0 {
            return Decision { tail: true, ..kept };
        }
        let (order, hugetlb) = self.compound(pfn, &p, next);
        let compound_pages = 1u64 << order;
        let one = |class| Decision { class, pages: compound_pages, tail: false };
        if level.excludes(PageClass::Free) && self.is_buddy(&p) {
            if p.private >= self.free_areas {
                // makedumpfile warns "Invalid free page order" and keeps the page.
                return kept;
            }
            return Decision { class: PageClass::Free, pages: 1 << p.private, tail: false };
        }
        if level.excludes(PageClass::Free) && self.unaccepted_mapcount.is_some_and(|v| p.mapcount == v) {
            let order = self.free_areas.saturating_sub(1).min(63);
            return Decision { class: PageClass::Free, pages: 1 << order, tail: false };
        }
        let cache = self.is_cache(&p);
        let anon = self.is_anon(&p);
        let private = bit(p.flags, self.pg_private);
        if level.0 & DumpLevel::CACHE != 0 && cache && !private && !anon {
            return one(PageClass::Cache);
        }
        if level.0 & DumpLevel::CACHE_PRIVATE != 0 && cache && !anon {
            return one(if private { PageClass::CachePrivate } else { PageClass::Cache });
        }
        if level.excludes(PageClass::User) && (anon || hugetlb) {
            return one(PageClass::User);
        }
        if self.pg_hwpoison.is_some_and(|b| bit(p.flags, b)) {
            return one(PageClass::HwPoison);
        }
        if self.is_offline(&p) {
            return one(PageClass::Offline);
        }
        kept
    }
}
