//! Address newtypes: a physical address (what DMA and dump files index by) and a virtual address
//! (what gdb and the target's CPU use) are both `u64`, and mixing them up is the classic bug of a
//! memory-forensics tool, so they are distinct types.

use std::fmt;

/// The size of the smallest x86-64 page, and the unit of most caches here.
pub const PAGE_SIZE: u64 = 4096;

macro_rules! address_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A ", $what, " address.")]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw number.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// `self + n`, or `None` when that wraps around the 64-bit space.
            pub fn checked_add(self, n: u64) -> Option<Self> {
                self.0.checked_add(n).map(Self)
            }

            /// `self + n`, wrapping at 2^64 (gdb may ask for ranges that wrap).
            pub fn wrapping_add(self, n: u64) -> Self {
                Self(self.0.wrapping_add(n))
            }

            /// The start of the 4 KiB page that holds this address.
            pub const fn page_base(self) -> Self {
                Self(self.0 & !(PAGE_SIZE - 1))
            }

            /// The offset of this address inside its 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 & (PAGE_SIZE - 1)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(v)
            }
        }
    };
}

address_type!(PhysAddr, "physical (bus) address: what DMA reads and a memory dump is indexed by");
address_type!(VirtAddr, "virtual address, translated through a page-table root (CR3)");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_parts() {
        let a = VirtAddr(0xffff_8880_0123_4567);
        assert_eq!(a.page_base(), VirtAddr(0xffff_8880_0123_4000));
        assert_eq!(a.page_offset(), 0x567);
        assert_eq!(format!("{a}"), "0xffff888001234567");
        assert_eq!(PhysAddr(u64::MAX).checked_add(1), None);
    }
}
