//! BTF, the kernel's compact type format (`.BTF` in vmlinux, `/sys/kernel/btf/vmlinux`, and a
//! copy in the running kernel's memory): struct layouts and enum values without DWARF.
//!
//! The format is the one of the kernel's `include/uapi/linux/btf.h`: a 24-byte (or longer)
//! header, then a type section of variable-length records (type ids count from 1, 0 being
//! `void`) and a string section of NUL-terminated names.
//!
//! The blob is untrusted (it may come from a target's memory): every count is checked against
//! the bytes left before anything is reserved, every name and type reference is checked once
//! at parse time, and every walk through the types (typedef chains, nested anonymous members)
//! is bounded by [`MAX_DEPTH`], so a loop yields `None` instead of a hang.
//!
//! Only self-contained BTF is understood; split BTF (a module's, whose ids continue its base's)
//! fails at parse time with [`BtfError::BadTypeRef`].

use super::layout::{Member, TypeInfo};
use super::name_index::NameIndex;

mod lookup;
mod parse;
#[cfg(test)]
mod tests;

/// The magic a BTF blob starts with (`BTF_MAGIC`), little-endian.
pub const BTF_MAGIC: u16 = 0xeb9f;
/// The header as version 1 defines it; `hdr_len` may announce a longer one.
pub const HEADER_LEN: usize = 24;

/// Largest blob [`Btf::blob_len`] accepts. vmlinux BTF is a few MiB; the bound keeps a stray
/// magic found in memory from asking for gigabytes.
pub const MAX_BLOB_LEN: usize = 256 << 20;
/// Largest header accepted. Longer headers are a later version's business, and a sane bound
/// helps reject random bytes that happen to start with the magic.
const MAX_HEADER_LEN: u32 = 4096;
/// The kernel's own limit on type ids (`BTF_MAX_TYPE`); it also bounds what parsing allocates.
const MAX_TYPES: usize = 0x000f_ffff;
/// How many typedef/modifier hops, array dimensions or nested anonymous members a lookup
/// follows before it gives up. Real kernels need a handful; a loop in the input needs forever.
pub const MAX_DEPTH: usize = 32;
/// How many members one lookup may visit. Depth alone does not bound a walk: two anonymous
/// members of the same type at each of 32 levels would be 2^32 visits. The largest kernel
/// structs have a few hundred members, flattened.
const MAX_VISITS: usize = 100_000;

/// Pointers are 8 bytes: BTF does not record it, and dmastub serves x86-64.
const POINTER_SIZE: u64 = 8;

const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Why a blob was refused. Offsets are bytes from the start of the blob, so a report can be
/// checked against a hex dump of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BtfError {
    /// A BTF file could not be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A BTF file is larger than any BTF.
    #[error("{}: {len} bytes is larger than any BTF ({MAX_BLOB_LEN} at most)", path.display())]
    FileTooLarge {
        /// The file.
        path: std::path::PathBuf,
        /// Its length.
        len: u64,
    },
    /// A BTF file's contents were refused.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why its contents were refused.
        #[source]
        source: Box<BtfError>,
    },
    /// The blob is shorter than a header.
    #[error("BTF header truncated: {have} bytes, need {need}")]
    TruncatedHeader {
        /// Bytes there are.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The blob does not start with BTF's magic.
    #[error("not BTF: magic at byte 0 is {found:#06x}, expected {BTF_MAGIC:#06x}")]
    BadMagic {
        /// The magic found.
        found: u16,
    },
    /// A BTF version other than 1.
    #[error("BTF version {version} at byte 2 is not supported (only version 1)")]
    BadVersion {
        /// The version found.
        version: u8,
    },
    /// A header field is out of range.
    #[error("BTF header field {field} at byte {offset} is {value:#x}: {why}")]
    BadHeader {
        /// The header field, by name.
        field: &'static str,
        /// Byte offset in the blob.
        offset: usize,
        /// Its value.
        value: u64,
        /// What is wrong.
        why: &'static str,
    },
    /// The header gives a length over `MAX_BLOB_LEN`.
    #[error("BTF blob is {len} bytes by its header, more than the {MAX_BLOB_LEN} accepted")]
    TooLarge {
        /// The length.
        len: u64,
    },
    /// The blob ends before the length its header gives.
    #[error("BTF blob truncated: its header says {need} bytes, only {have} given")]
    TruncatedBlob {
        /// Bytes there are.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The string section is not NUL-terminated UTF-8.
    #[error("BTF string section at byte {offset}: {why}")]
    BadStrings {
        /// Byte offset in the blob.
        offset: usize,
        /// What is wrong.
        why: &'static str,
    },
    /// A type record runs past the type section.
    #[error("BTF type {id} at byte {offset}: truncated {what}")]
    TruncatedType {
        /// The type's id.
        id: u32,
        /// Byte offset in the blob.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A type of a kind this parser does not know.
    #[error("BTF type {id} at byte {offset}: unknown kind {kind}")]
    UnknownKind {
        /// The type's id.
        id: u32,
        /// Byte offset in the blob.
        offset: usize,
        /// The kind found.
        kind: u8,
    },
    /// A type's count of members, enumerators or parameters exceeds the bytes left.
    #[error("BTF type {id} at byte {offset}: {count} {what} need {need} bytes, only {have} left")]
    CountTooLarge {
        /// The type's id.
        id: u32,
        /// Byte offset in the blob.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// How many.
        count: u32,
        /// Bytes needed.
        need: u64,
        /// Bytes there are.
        have: usize,
    },
    /// A name offset outside the string section or inside a character.
    #[error("BTF type {id} at byte {offset}: name offset {name_off} is {why}")]
    BadName {
        /// The type's id.
        id: u32,
        /// Byte offset in the blob.
        offset: usize,
        /// The name offset.
        name_off: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A reference to a type that does not exist (split BTF without its base).
    #[error(
        "BTF type {id} at byte {offset}: refers to type {target}, but there are only {count} types \
         (split BTF needs its base)"
    )]
    BadTypeRef {
        /// The type's id.
        id: u32,
        /// Byte offset in the blob.
        offset: usize,
        /// The type referred to.
        target: u32,
        /// How many.
        count: usize,
    },
    /// More types than BTF ids allow.
    #[error("BTF has more than {MAX_TYPES} types (type {id} at byte {offset})")]
    TooManyTypes {
        /// The type's id.
        id: u32,
        /// Byte offset in the blob.
        offset: usize,
    },
}

/// One type record, decoded. Variable-length parts live in [`Btf`]'s shared tables, as
/// `first..first+len` ranges, so the ~100k types of a vmlinux need no allocation each.
#[derive(Clone, Copy, Debug)]
struct Type {
    name: u32,
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
#[allow(dead_code)] // Decoded in full so the parser checks it all; lookups need only some.
enum Kind {
    Void,
    Int { size: u32, encoding: u8, offset: u8, bits: u8 },
    Ptr { ty: u32 },
    Array { elem: u32, index: u32, nelems: u32 },
    Struct { union: bool, size: u32, first: u32, len: u16 },
    Enum { size: u32, first: u32, len: u16 },
    Fwd { union: bool },
    Typedef { ty: u32 },
    Volatile { ty: u32 },
    Const { ty: u32 },
    Restrict { ty: u32 },
    TypeTag { ty: u32 },
    Func { proto: u32, linkage: u16 },
    FuncProto { ret: u32, params: u16 },
    Var { ty: u32, linkage: u32 },
    Datasec { size: u32, vars: u16 },
    Float { size: u32 },
    DeclTag { ty: u32, component: i32 },
}

impl Kind {
    /// The type a qualifier or typedef stands for: what lookups look through.
    fn modified(&self) -> Option<u32> {
        match *self {
            Kind::Typedef { ty }
            | Kind::Volatile { ty }
            | Kind::Const { ty }
            | Kind::Restrict { ty }
            | Kind::TypeTag { ty } => Some(ty),
            _ => None,
        }
    }

    /// How good a definition of its name this is: a lookup by name must find the complete
    /// struct, not a forward declaration of it or a function that shares the name.
    fn name_rank(&self) -> u8 {
        match *self {
            Kind::Struct { size, .. } if size > 0 => 5,
            Kind::Typedef { .. } => 4,
            Kind::Enum { .. } | Kind::Int { .. } | Kind::Float { .. } => 3,
            Kind::Struct { .. } => 2,
            Kind::Fwd { .. } => 1,
            _ => 0,
        }
    }
}

/// A struct or union member as recorded. `bits` is the width for kind_flag bitfields; for the
/// older encoding it is 0 and the width comes from the member's INT type.
#[derive(Clone, Copy, Debug)]
struct RawMember {
    name: u32,
    ty: u32,
    bit_offset: u32,
    bits: u8,
}

#[derive(Clone, Copy, Debug)]
struct Enumerator {
    name: u32,
    value: i64,
}

/// A parsed BTF blob: the types, their names, and an index from name to the best type of that
/// name, built once so that lookups are hash probes.
pub struct Btf {
    origin: String,
    /// Index = type id; entry 0 is `void`.
    types: Vec<Type>,
    members: Vec<RawMember>,
    enumerators: Vec<Enumerator>,
    /// The highest type id a function parameter or section variable refers to, and the
    /// referring type's id and offset: those records are checked, not kept (no lookup needs
    /// them, and a kernel has 60k+ of them).
    max_unkept_ref: (u32, u32, usize),
    /// The string section, checked to be UTF-8 and to end in NUL, so that any in-range offset
    /// on a character boundary names a string.
    strings: String,
    by_name: NameIndex,
    /// Ids of the ENUM and ENUM64 types, for enumerator lookups that name no enum.
    enums: Vec<u32>,
}

/// Just the origin and size: the types themselves are too many to print.
impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf").field("origin", &self.origin).field("types", &self.type_count()).finish()
    }
}

impl Btf {
    /// Number of types in the blob, not counting the implicit `void` (id 0).
    pub fn type_count(&self) -> usize {
        self.types.len() - 1
    }

    /// The id the index keeps for `name`.
    fn by_name(&self, name: &str) -> Option<u32> {
        self.by_name.get(name, |id| self.types.get(id as usize).map(|t| self.name(t.name)))
    }

    /// A slice of one of the shared tables; empty if the range is off (it cannot be for a
    /// parsed blob, but a lookup must never panic).
    fn range<'s, T>(&self, table: &'s [T], first: u32, len: u16) -> &'s [T] {
        let first = first as usize;
        table.get(first..first + usize::from(len)).unwrap_or(&[])
    }

    fn name(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or("");
        s.split('\0').next().unwrap_or("")
    }

    /// Whether the string at `off` is `want`, without scanning for its end first.
    fn name_is(&self, off: u32, want: &str) -> bool {
        let bytes = self.strings.as_bytes();
        let off = off as usize;
        bytes.get(off..off + want.len()) == Some(want.as_bytes()) && bytes.get(off + want.len()) == Some(&0)
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }
}
