//! What the decision needs to know of `struct page`: where its fields are, the kernel's page
//! flag numbers and page-type values, and where the array starts; found in the kernel's BTF
//! ([`Kernel::types`]) first and in its VMCOREINFO after.

use super::{DumpLevel, PageClass, PageFilterError};
use crate::addr::VirtAddr;
use crate::linux::{Btf, Kernel, Memory, Symbols, TypeInfo, View, VmcoreInfo};
use crate::mmu::AddressSpace;

/// `vmemmap_base` without memory KASLR (`CONFIG_RANDOMIZE_MEMORY` off), 4-level paging.
pub const DEFAULT_VMEMMAP_BASE: u64 = 0xffff_ea00_0000_0000;
/// `vmemmap_base` without memory KASLR, 5-level paging.
pub const DEFAULT_VMEMMAP_BASE_LA57: u64 = 0xffd4_0000_0000_0000;

/// Orders a free (buddy) page may claim when the kernel says nothing of `MAX_ORDER`: more than
/// any x86-64 configuration uses (11), so a real buddy is never refused.
const FALLBACK_FREE_AREAS: u64 = 20;

/// Everything the decision reads in one `struct page`, and the kernel's numbers it compares
/// with: the same facts makedumpfile takes from a DWARF vmlinux and the VMCOREINFO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageLayout {
    /// `sizeof(struct page)`.
    pub page_size: u64,
    /// Offset of `page.flags`.
    pub flags: u64,
    /// Offset of `page.mapping` (low bit `PAGE_MAPPING_ANON`).
    pub mapping: u64,
    /// Offset of `page.private` (a free page's buddy order).
    pub private: u64,
    /// Offset of `page._mapcount` (the `page_type` union on 4.18+).
    pub mapcount: u64,
    /// Offset of `page.compound_head` (low bit set in tail pages).
    pub compound_head: u64,
    /// Offset and size, in the first tail page, of the compound order (`compound_order`,
    /// or `folio._folio_order` less `sizeof(struct page)`); `None` when the kernel keeps it in
    /// the tail's flags (6.6+, see `pg_hugetlb`) or nowhere we know.
    pub compound_order: Option<(u64, u64)>,
    /// Offset and size, in the first tail page, of the compound destructor id.
    pub compound_dtor: Option<(u64, u64)>,
    /// `PG_lru`.
    pub pg_lru: u32,
    /// `PG_private`.
    pub pg_private: u32,
    /// `PG_swapcache`.
    pub pg_swapcache: u32,
    /// `PG_swapbacked` (kernels before 4.10 have none: swapcache then counts alone).
    pub pg_swapbacked: Option<u32>,
    /// `PG_slab`.
    pub pg_slab: u32,
    /// `PG_hwpoison`, when the kernel has memory-failure support.
    pub pg_hwpoison: Option<u32>,
    /// The mask of `PG_head` in `page.flags`.
    pub pg_head_mask: u64,
    /// `PG_hugetlb` (6.6+: the first tail page's flags say hugetlb, its low byte the order).
    pub pg_hugetlb: Option<u32>,
    /// `PAGE_BUDDY_MAPCOUNT_VALUE`: `_mapcount` of a free page at the head of a buddy block.
    pub buddy_mapcount: Option<i32>,
    /// `PAGE_OFFLINE_MAPCOUNT_VALUE`: `_mapcount` of a logically offline page.
    pub offline_mapcount: Option<i32>,
    /// `PAGE_SLAB_MAPCOUNT_VALUE` (6.10+).
    pub slab_mapcount: Option<i32>,
    /// `PAGE_HUGETLB_MAPCOUNT_VALUE` (6.9+).
    pub hugetlb_mapcount: Option<i32>,
    /// `PAGE_UNACCEPTED_MAPCOUNT_VALUE` (6.5+ with unaccepted memory).
    pub unaccepted_mapcount: Option<i32>,
    /// `HUGETLB_PAGE_DTOR` from `enum compound_dtor_id` (before 6.6).
    pub hugetlb_dtor: Option<u64>,
    /// Entries of `zone.free_area` (`MAX_ORDER`): a buddy order at or above it is refused.
    pub free_areas: u64,
    /// Where the struct page array starts: the page of pfn P is at `vmemmap + P * page_size`.
    pub vmemmap: u64,
    /// Where each fact came from, one line each, for `-v` output and reports.
    pub notes: Vec<String>,
}

/// Where a layout fact may come from: the kernel's struct layout and its VMCOREINFO.
struct Sources<'a> {
    types: Option<&'a dyn TypeInfo>,
    vmci: Option<&'a VmcoreInfo>,
    enums: Option<&'a Btf>,
    origin: String,
}

impl Sources<'_> {
    /// Member `field` of `struct ty`: the layout's, else VMCOREINFO's `OFFSET(ty.field)`
    /// (whose size is unknown: `None`).
    fn member(&self, ty: &str, field: &str) -> Option<(u64, Option<u64>)> {
        if let Some(m) = self.types.and_then(|t| t.member(ty, field)) {
            return Some((m.offset, (m.size > 0).then_some(m.size)));
        }
        let v = self.vmci?.get(&format!("OFFSET({ty}.{field})"))?.parse().ok()?;
        Some((v, None))
    }

    fn required(&self, ty: &str, field: &str) -> Result<u64, PageFilterError> {
        self.member(ty, field).map(|m| m.0).ok_or_else(|| PageFilterError::MissingField {
            what: format!("{ty}.{field}"),
            origin: self.origin.clone(),
        })
    }

    fn size_of(&self, ty: &str) -> Option<u64> {
        self.types
            .and_then(|t| t.size_of(ty))
            .or_else(|| self.vmci?.get(&format!("SIZE({ty})"))?.parse().ok())
    }

    /// `NUMBER(name)` from VMCOREINFO, else the enumerator in the kernel's BTF: `PG_*` in
    /// `enum pageflags` (`PG_head_mask` as `1 << PG_head`), `HUGETLB_PAGE_DTOR` in
    /// `enum compound_dtor_id`. (`PAGE_*_MAPCOUNT_VALUE` are macros: only VMCOREINFO has them.)
    fn number(&self, name: &str) -> Option<i64> {
        if let Some(v) = self.vmci.and_then(|v| v.number(name)) {
            return Some(v);
        }
        let btf = self.enums?;
        if name == "PG_head_mask" {
            let head = btf.enum_value(Some("pageflags"), "PG_head")?;
            return (0..63).contains(&head).then(|| 1i64 << head);
        }
        if name.starts_with("PG_") {
            return btf.enum_value(Some("pageflags"), name);
        }
        if name == "HUGETLB_PAGE_DTOR" {
            return btf.enum_value(Some("compound_dtor_id"), name);
        }
        None
    }

    fn flag(&self, name: &str) -> Result<u32, PageFilterError> {
        self.opt_flag(name).ok_or_else(|| PageFilterError::MissingNumber { what: name.to_string() })
    }

    fn opt_flag(&self, name: &str) -> Option<u32> {
        self.number(name).and_then(|v| u32::try_from(v).ok()).filter(|&v| v < 64)
    }

    fn mapcount(&self, name: &str) -> Option<i32> {
        self.number(name).and_then(|v| i32::try_from(v).ok())
    }
}

impl PageLayout {
    /// The layout of `kernel`: its struct layout ([`Kernel::types`], the BTF) for offsets and
    /// sizes, its VMCOREINFO for what the layout lacks and for the flag numbers and page-type
    /// values (`NUMBER(PG_lru)`, `NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)`, ... the numbers
    /// makedumpfile compares with), and `vmemmap` from the `vmemmap_base` variable (read by
    /// the caller) or the default without memory KASLR.
    pub fn of_kernel(kernel: &Kernel, vmemmap: u64) -> Result<Self, PageFilterError> {
        let types = kernel.types.as_deref().map(|t| t as &dyn TypeInfo);
        let vmci = kernel.vmcoreinfo.as_ref().map(|f| &f.value);
        Self::resolve(types, vmci, None, vmemmap)
    }

    /// The layout of `kernel` ([`PageLayout::of_kernel`]) with the array where its
    /// `vmemmap_base` variable says (read through `space` under the kernel's CR3), else at the
    /// default without memory KASLR.
    pub fn for_kernel(kernel: &Kernel, space: &mut AddressSpace) -> Result<Self, PageFilterError> {
        let cr3 = kernel.cr3.value;
        let (vmemmap, how) = vmemmap_base(kernel, &mut |addr| {
            let mut b = [0u8; 8];
            space.read_virt_in(cr3, VirtAddr(addr), &mut b).ok()?;
            Some(u64::from_le_bytes(b))
        })?;
        let types = kernel.types.as_deref().map(|t| t as &dyn TypeInfo);
        let vmci = kernel.vmcoreinfo.as_ref().map(|f| &f.value);
        // The flag numbers come from VMCOREINFO, which every kernel with crash support has;
        // without them the BTF's enums are read again (discovery does not keep them).
        let lacking = NEEDED_NUMBERS.iter().any(|n| vmci.and_then(|v| v.number(n)).is_none());
        let btf = if lacking { read_btf(kernel, space) } else { None };
        let mut layout = Self::resolve(types, vmci, btf.as_ref(), vmemmap)?;
        if let Some(b) = &btf {
            layout.notes.push(format!("flag numbers VMCOREINFO lacks from the enums of {}", b.source()));
        }
        layout.notes.push(how);
        Ok(layout)
    }

    /// The class makedumpfile gives the page of `pfn` at `level`, from its struct page
    /// (`page`, at least [`PageLayout::page_size`] bytes) and the next one (`next`, where a
    /// compound head's order and destructor are), with how many pages from `pfn` on that
    /// decides (a free block's or a compound page's). A compound tail page is
    /// [`PageClass::Kept`] here: its head decides it.
    pub fn class_of(&self, level: DumpLevel, pfn: u64, page: &[u8], next: Option<&[u8]>) -> (PageClass, u64) {
        let d = self.decide(level, pfn, page, next);
        (d.class, d.pages)
    }

    /// The layout from a struct layout, a VMCOREINFO and a BTF for the enumerators VMCOREINFO
    /// lacks (any may be missing), with the struct page array at `vmemmap`.
    pub fn resolve(
        types: Option<&dyn TypeInfo>,
        vmci: Option<&VmcoreInfo>,
        enums: Option<&Btf>,
        vmemmap: u64,
    ) -> Result<Self, PageFilterError> {
        let origin = match (types, vmci) {
            (Some(t), Some(_)) => format!("{} and VMCOREINFO", t.source()),
            (Some(t), None) => t.source(),
            (None, Some(_)) => "VMCOREINFO".to_string(),
            (None, None) => return Err(PageFilterError::NoLayout),
        };
        let s = Sources { types, vmci, enums, origin };
        let mut notes = vec![format!("struct page layout from {}", s.origin)];
        let page_size = s.size_of("page").ok_or_else(|| PageFilterError::MissingField {
            what: "sizeof(struct page)".to_string(),
            origin: s.origin.clone(),
        })?;
        if !(32..=256).contains(&page_size) || page_size % 8 != 0 {
            return Err(PageFilterError::Implausible {
                what: format!("sizeof(struct page) is {page_size} (expected a multiple of 8 in 32..=256)"),
            });
        }
        let flags = s.required("page", "flags")?;
        let mapping = s.required("page", "mapping")?;
        let private = s.required("page", "private")?;
        let mapcount = s.required("page", "_mapcount")?;
        let compound_head = s.required("page", "compound_head")?;
        // 6.1: compound_order/compound_dtor live in the first tail page's struct page.
        // Before 4.16 they were wider; the layout's size says so (VMCOREINFO's does not: a byte).
        let in_tail = |field: &str, folio_field: &str| -> Option<(u64, u64)> {
            if let Some((off, size)) = s.member("page", field) {
                return Some((off, size.unwrap_or(1)));
            }
            let (off, size) = s.member("folio", folio_field)?;
            Some((off.checked_sub(page_size)?, size.unwrap_or(1)))
        };
        let compound_order = in_tail("compound_order", "_folio_order");
        let compound_dtor = in_tail("compound_dtor", "_folio_dtor");
        for (what, off, size) in [
            ("flags", Some(flags), 8),
            ("mapping", Some(mapping), 8),
            ("private", Some(private), 8),
            ("_mapcount", Some(mapcount), 4),
            ("compound_head", Some(compound_head), 8),
            ("compound_order", compound_order.map(|c| c.0), compound_order.map_or(1, |c| c.1)),
            ("compound_dtor", compound_dtor.map(|c| c.0), compound_dtor.map_or(1, |c| c.1)),
        ] {
            if let Some(off) = off
                && off.saturating_add(size) > page_size
            {
                return Err(PageFilterError::Implausible {
                    what: format!("page.{what} at {off} runs past sizeof(struct page) {page_size}"),
                });
            }
        }
        let free_areas = match (s.member("zone", "free_area"), s.size_of("free_area")) {
            (Some((_, Some(total))), Some(one)) if one > 0 && total % one == 0 => total / one,
            _ => match vmci.and_then(|v| v.get("LENGTH(zone.free_area)")?.parse().ok()) {
                Some(n) => n,
                None => {
                    notes.push(format!(
                        "zone.free_area's length is unknown: buddy orders up to {} believed",
                        FALLBACK_FREE_AREAS - 1
                    ));
                    FALLBACK_FREE_AREAS
                }
            },
        }
        .min(64);
        let buddy_mapcount = s.mapcount("PAGE_BUDDY_MAPCOUNT_VALUE");
        if buddy_mapcount.is_none() {
            notes.push("no NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE): free pages cannot be told".to_string());
        }
        let layout = Self {
            page_size,
            flags,
            mapping,
            private,
            mapcount,
            compound_head,
            compound_order,
            compound_dtor,
            pg_lru: s.flag("PG_lru")?,
            pg_private: s.flag("PG_private")?,
            pg_swapcache: s.flag("PG_swapcache")?,
            pg_swapbacked: s.opt_flag("PG_swapbacked"),
            pg_slab: s.flag("PG_slab")?,
            pg_hwpoison: s.opt_flag("PG_hwpoison"),
            pg_head_mask: s
                .number("PG_head_mask")
                .map(|v| v as u64)
                .ok_or_else(|| PageFilterError::MissingNumber { what: "PG_head_mask".to_string() })?,
            pg_hugetlb: s.opt_flag("PG_hugetlb"),
            buddy_mapcount,
            offline_mapcount: s.mapcount("PAGE_OFFLINE_MAPCOUNT_VALUE"),
            slab_mapcount: s.mapcount("PAGE_SLAB_MAPCOUNT_VALUE"),
            hugetlb_mapcount: s.mapcount("PAGE_HUGETLB_MAPCOUNT_VALUE"),
            unaccepted_mapcount: s.mapcount("PAGE_UNACCEPTED_MAPCOUNT_VALUE"),
            hugetlb_dtor: s.number("HUGETLB_PAGE_DTOR").and_then(|v| u64::try_from(v).ok()),
            free_areas,
            vmemmap,
            notes,
        };
        Ok(layout)
    }

    /// A 6.1 x86-64 layout (Debian 12's `6.1.0-*-amd64`: the fixture's numbers), with the
    /// array at `vmemmap`: for tests and for building synthetic machines.
    pub fn linux_6_1(vmemmap: u64) -> Self {
        Self {
            page_size: 64,
            flags: 0,
            mapping: 24,
            private: 40,
            mapcount: 48,
            compound_head: 8,
            compound_order: Some((17, 1)),
            compound_dtor: Some((16, 1)),
            pg_lru: 4,
            pg_private: 13,
            pg_swapcache: 10,
            pg_swapbacked: Some(19),
            pg_slab: 9,
            pg_hwpoison: Some(23),
            pg_head_mask: 1 << 16,
            pg_hugetlb: None,
            buddy_mapcount: Some(-129),
            offline_mapcount: Some(-257),
            slab_mapcount: None,
            hugetlb_mapcount: None,
            unaccepted_mapcount: None,
            hugetlb_dtor: Some(2),
            free_areas: 11,
            vmemmap,
            notes: vec!["built-in 6.1 layout".to_string()],
        }
    }
}

/// The numbers without which nothing is decided.
const NEEDED_NUMBERS: [&str; 5] = ["PG_lru", "PG_private", "PG_swapcache", "PG_slab", "PG_head_mask"];

/// Largest `.BTF` section read again for its enums.
const MAX_BTF: u64 = 64 << 20;

/// The kernel's `.BTF` section (`__start_BTF`..`__stop_BTF`), lent in place by a dump or read
/// in one go; `None` when it is not there or not BTF.
fn read_btf(kernel: &Kernel, space: &mut AddressSpace) -> Option<Btf> {
    let start = kernel.symbols.address("__start_BTF")?;
    let stop = kernel.symbols.address("__stop_BTF")?;
    let len = stop.checked_sub(start).filter(|&l| l > 0 && l <= MAX_BTF)?;
    let origin = format!("in-memory BTF ({} KiB at {start:#x})", len / 1024);
    let mut view = View::new(space, kernel.cr3.value);
    if let Some(blob) = view.borrow(start, len) {
        return Btf::parse(blob, origin).ok();
    }
    let mut blob = vec![0u8; len as usize];
    view.read(start, &mut blob).ok()?;
    Btf::parse(&blob, origin).ok()
}

/// Where the kernel's struct page array starts: the `vmemmap_base` variable (memory KASLR),
/// read under the kernel's CR3, else the fixed default for the paging depth. Says which.
fn vmemmap_base(
    kernel: &Kernel,
    read_u64: &mut dyn FnMut(u64) -> Option<u64>,
) -> Result<(u64, String), PageFilterError> {
    if let Some(sym) = kernel.symbols.address("vmemmap_base") {
        return match read_u64(sym) {
            Some(v) if v >> 47 == 0x1_ffff || v >> 56 == 0xff => {
                Ok((v, format!("vmemmap_base {v:#x} (the variable at {sym:#x})")))
            }
            Some(v) => Err(PageFilterError::Implausible {
                what: format!("vmemmap_base at {sym:#x} holds {v:#x}, not a kernel address"),
            }),
            None => {
                Err(PageFilterError::Unreadable { what: format!("the vmemmap_base variable at {sym:#x}") })
            }
        };
    }
    if let Some(v) = kernel.vmcoreinfo.as_ref().and_then(|f| f.value.number("VMEMMAP_START")) {
        return Ok((v as u64, format!("vmemmap {:#x} from NUMBER(VMEMMAP_START)", v as u64)));
    }
    let default = match kernel.paging.value {
        crate::mmu::Paging::Level4 => DEFAULT_VMEMMAP_BASE,
        crate::mmu::Paging::Level5 => DEFAULT_VMEMMAP_BASE_LA57,
    };
    Ok((default, format!("vmemmap {default:#x}: no vmemmap_base symbol, the default without memory KASLR")))
}
