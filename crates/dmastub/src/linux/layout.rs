//! Struct layouts: where a field is, however we learned it.

use std::collections::HashMap;

/// A member of a struct or union: byte offset from the start of the containing type, and size.
/// A bitfield reports the byte offset and size of the storage unit it lives in, with its bit
/// position in `bit_offset`/`bit_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Byte offset from the start of the containing type.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// For bitfields: the first bit within the bytes at `offset`, and the width in bits.
    pub bitfield: Option<(u32, u32)>,
}

/// Answers "where is field F of struct S" and "how big is S".
pub trait TypeInfo {
    /// `path` is a member name, or a dotted path through nested members (`thread.sp`).
    /// Members of anonymous structs and unions are found as if they were direct members.
    fn member(&self, ty: &str, path: &str) -> Option<Member>;
    /// Size in bytes of the struct, union or typedef named `ty`.
    fn size_of(&self, ty: &str) -> Option<u64>;
    /// Where the layout came from, for `monitor kernel` ("in-memory BTF", "profile FILE", ...).
    fn source(&self) -> String;
}

/// A layout given as a table: VMCOREINFO's `OFFSET()`/`SIZE()` lines, or a profile.
#[derive(Clone, Debug, Default)]
pub struct TypeMap {
    /// Members by (type, member path).
    pub members: HashMap<(String, String), Member>,
    /// Sizes by type name.
    pub sizes: HashMap<String, u64>,
    /// Where the table came from, for [`TypeInfo::source`].
    pub origin: String,
}

impl TypeMap {
    /// An empty table from `origin`.
    pub fn new(origin: impl Into<String>) -> Self {
        Self { origin: origin.into(), ..Self::default() }
    }

    /// Records member `path` of `ty` at `offset`, `size` bytes.
    pub fn insert_member(&mut self, ty: &str, path: &str, offset: u64, size: u64) {
        self.members.insert((ty.to_string(), path.to_string()), Member { offset, size, bitfield: None });
    }

    /// Records the size of `ty`.
    pub fn insert_size(&mut self, ty: &str, size: u64) {
        self.sizes.insert(ty.to_string(), size);
    }
}

impl TypeInfo for TypeMap {
    fn member(&self, ty: &str, path: &str) -> Option<Member> {
        self.members.get(&(ty.to_string(), path.to_string())).copied()
    }

    fn size_of(&self, ty: &str) -> Option<u64> {
        self.sizes.get(ty).copied()
    }

    fn source(&self) -> String {
        self.origin.clone()
    }
}
