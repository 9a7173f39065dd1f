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

use nom::IResult;
use nom::number::Endianness;
use nom::number::complete::{i32 as nom_i32, u8 as nom_u8, u16 as nom_u16, u32 as nom_u32};
use nom::sequence::tuple;

use super::layout::{Member, TypeInfo};
use super::name_index::NameIndex;

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
    #[error("BTF header truncated: {have} bytes, need {need}")]
    TruncatedHeader { have: usize, need: usize },
    #[error("not BTF: magic at byte 0 is {found:#06x}, expected {BTF_MAGIC:#06x}")]
    BadMagic { found: u16 },
    #[error("BTF version {version} at byte 2 is not supported (only version 1)")]
    BadVersion { version: u8 },
    #[error("BTF header field {field} at byte {offset} is {value:#x}: {why}")]
    BadHeader { field: &'static str, offset: usize, value: u64, why: &'static str },
    #[error("BTF blob is {len} bytes by its header, more than the {MAX_BLOB_LEN} accepted")]
    TooLarge { len: u64 },
    #[error("BTF blob truncated: its header says {need} bytes, only {have} given")]
    TruncatedBlob { have: usize, need: usize },
    #[error("BTF string section at byte {offset}: {why}")]
    BadStrings { offset: usize, why: &'static str },
    #[error("BTF type {id} at byte {offset}: truncated {what}")]
    TruncatedType { id: u32, offset: usize, what: &'static str },
    #[error("BTF type {id} at byte {offset}: unknown kind {kind}")]
    UnknownKind { id: u32, offset: usize, kind: u8 },
    #[error("BTF type {id} at byte {offset}: {count} {what} need {need} bytes, only {have} left")]
    CountTooLarge { id: u32, offset: usize, what: &'static str, count: u32, need: u64, have: usize },
    #[error("BTF type {id} at byte {offset}: name offset {name_off} is {why}")]
    BadName { id: u32, offset: usize, name_off: u32, why: &'static str },
    #[error(
        "BTF type {id} at byte {offset}: refers to type {target}, but there are only {count} types \
         (split BTF needs its base)"
    )]
    BadTypeRef { id: u32, offset: usize, target: u32, count: usize },
    #[error("BTF has more than {MAX_TYPES} types (type {id} at byte {offset})")]
    TooManyTypes { id: u32, offset: usize },
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

/// The header fields that place the two sections, from [`Btf::blob_len`]'s checks.
struct Header {
    endian: Endianness,
    hdr_len: usize,
    type_off: usize,
    type_len: usize,
    str_off: usize,
    str_len: usize,
    total: usize,
}

type NomResult<'a, T> = IResult<&'a [u8], T>;

fn header(input: &[u8]) -> Result<Header, BtfError> {
    if input.len() < HEADER_LEN {
        return Err(BtfError::TruncatedHeader { have: input.len(), need: HEADER_LEN });
    }
    // The magic is written in the producer's byte order; its bytes tell which that was.
    let endian = match [input[0], input[1]] {
        [0x9f, 0xeb] => Endianness::Little,
        [0xeb, 0x9f] => Endianness::Big,
        [a, b] => return Err(BtfError::BadMagic { found: u16::from_le_bytes([a, b]) }),
    };
    let u = || nom_u32::<&[u8], nom::error::Error<&[u8]>>(endian);
    let fields = tuple((nom_u16(endian), nom_u8, nom_u8, u(), u(), u(), u(), u()))(input);
    let (_, (_magic, version, flags, hdr_len, type_off, type_len, str_off, str_len)) =
        fields.map_err(|_| BtfError::TruncatedHeader { have: input.len(), need: HEADER_LEN })?;
    if version != 1 {
        return Err(BtfError::BadVersion { version });
    }
    let bad =
        |field, offset, value: u32, why| BtfError::BadHeader { field, offset, value: value.into(), why };
    if flags != 0 {
        return Err(bad("flags", 3, flags.into(), "no flags are defined"));
    }
    if !(HEADER_LEN as u32..=MAX_HEADER_LEN).contains(&hdr_len) {
        return Err(bad("hdr_len", 4, hdr_len, "outside 24..=4096"));
    }
    if !type_off.is_multiple_of(4) {
        return Err(bad("type_off", 8, type_off, "not 4-byte aligned"));
    }
    let type_end = u64::from(type_off) + u64::from(type_len);
    let str_end = u64::from(str_off) + u64::from(str_len);
    let overlap =
        type_len > 0 && str_len > 0 && u64::from(type_off) < str_end && u64::from(str_off) < type_end;
    if overlap {
        return Err(bad("str_off", 16, str_off, "string section overlaps the type section"));
    }
    let total = u64::from(hdr_len) + type_end.max(str_end);
    if total > MAX_BLOB_LEN as u64 {
        return Err(BtfError::TooLarge { len: total });
    }
    // Every value is below 256 MiB now, so the conversions are exact.
    Ok(Header {
        endian,
        hdr_len: hdr_len as usize,
        type_off: type_off as usize,
        type_len: type_len as usize,
        str_off: str_off as usize,
        str_len: str_len as usize,
        total: total as usize,
    })
}

/// Reads the type section record by record; positions are kept so errors can name the byte.
struct TypeParser<'a> {
    endian: Endianness,
    section: &'a [u8],
    /// Where the section starts in the blob, to report blob offsets.
    base: usize,
    rest: &'a [u8],
}

impl<'a> TypeParser<'a> {
    fn pos(&self) -> usize {
        self.base + (self.section.len() - self.rest.len())
    }

    /// Runs one nom parser over the rest of the section; a failure can only be running out of
    /// bytes, which is reported against the type being read.
    fn take<T>(
        &mut self,
        id: u32,
        start: usize,
        what: &'static str,
        mut p: impl FnMut(&'a [u8]) -> NomResult<'a, T>,
    ) -> Result<T, BtfError> {
        let (rest, v) = p(self.rest).map_err(|_| BtfError::TruncatedType { id, offset: start, what })?;
        self.rest = rest;
        Ok(v)
    }

    fn u32(&mut self, id: u32, start: usize, what: &'static str) -> Result<u32, BtfError> {
        self.take(id, start, what, nom_u32(self.endian))
    }

    fn three(&mut self, id: u32, start: usize, what: &'static str) -> Result<(u32, u32, u32), BtfError> {
        let e = self.endian;
        self.take(id, start, what, tuple((nom_u32(e), nom_u32(e), nom_u32(e))))
    }

    /// Refuses a count of records before reading them, so a forged vlen costs nothing.
    fn check_count(
        &self,
        id: u32,
        start: usize,
        what: &'static str,
        count: u32,
        rec: u64,
    ) -> Result<(), BtfError> {
        let need = u64::from(count) * rec;
        if need > self.rest.len() as u64 {
            return Err(BtfError::CountTooLarge {
                id,
                offset: start,
                what,
                count,
                need,
                have: self.rest.len(),
            });
        }
        Ok(())
    }
}

impl Btf {
    /// The whole blob's length as its header tells it (header, then the later-ending of the
    /// type and string sections), for a caller that found the magic in memory and must know
    /// how much to read. Version, flags, header length, alignment, overlap and size are all
    /// checked, so that random bytes which happen to start with the magic are refused here.
    pub fn blob_len(header_bytes: &[u8]) -> Result<usize, BtfError> {
        header(header_bytes).map(|h| h.total)
    }

    /// Parses and checks a whole blob. Bytes after the length its header gives are ignored.
    /// `origin` is what [`TypeInfo::source`] reports.
    /// A BTF file (a copy of `/sys/kernel/btf/vmlinux`); the error names the file.
    pub fn load(path: &std::path::Path) -> Result<Btf, BtfError> {
        let file = |source| BtfError::File { path: path.to_path_buf(), source };
        let len = std::fs::metadata(path).map_err(file)?.len();
        if len > MAX_BLOB_LEN as u64 {
            return Err(BtfError::FileTooLarge { path: path.to_path_buf(), len });
        }
        let data = std::fs::read(path).map_err(file)?;
        Btf::parse(&data, format!("BTF file {}", path.display()))
            .map_err(|e| BtfError::InFile { path: path.to_path_buf(), source: Box::new(e) })
    }

    pub fn parse(data: &[u8], origin: impl Into<String>) -> Result<Btf, BtfError> {
        let h = header(data)?;
        if data.len() < h.total {
            return Err(BtfError::TruncatedBlob { have: data.len(), need: h.total });
        }
        let str_start = h.hdr_len + h.str_off;
        let strings = parse_strings(&data[str_start..str_start + h.str_len], str_start)?;
        let type_start = h.hdr_len + h.type_off;
        let mut btf = Btf {
            origin: origin.into(),
            types: Vec::new(),
            members: Vec::new(),
            enumerators: Vec::new(),
            max_unkept_ref: (0, 0, 0),
            strings,
            by_name: NameIndex::default(),
            enums: Vec::new(),
        };
        let mut p = TypeParser {
            endian: h.endian,
            section: &data[type_start..type_start + h.type_len],
            base: type_start,
            rest: &data[type_start..type_start + h.type_len],
        };
        // The smallest record is 12 bytes: reserving by that bounds the first allocation by
        // the input's size.
        let estimate = (h.type_len / 12).min(MAX_TYPES) + 1;
        btf.types.reserve(estimate);
        btf.types.push(Type { name: 0, kind: Kind::Void });
        // Where each type starts, for the reference check's errors; dropped after parsing.
        let mut offsets: Vec<u32> = Vec::with_capacity(estimate);
        offsets.push(0);
        while !p.rest.is_empty() {
            let id = btf.types.len() as u32;
            let start = p.pos();
            if btf.types.len() > MAX_TYPES {
                return Err(BtfError::TooManyTypes { id, offset: start });
            }
            let ty = btf.parse_type(&mut p, id, start)?;
            btf.types.push(ty);
            offsets.push(start as u32);
        }
        btf.check_refs(&offsets)?;
        drop(offsets);
        btf.build_index();
        Ok(btf)
    }

    /// Number of types in the blob, not counting the implicit `void` (id 0).
    pub fn type_count(&self) -> usize {
        self.types.len() - 1
    }

    fn parse_type(&mut self, p: &mut TypeParser<'_>, id: u32, start: usize) -> Result<Type, BtfError> {
        let (name, info, size_or_type) = p.three(id, start, "type header")?;
        let vlen = (info & 0xffff) as u16;
        let kind_no = ((info >> 24) & 0x1f) as u8;
        let kflag = info >> 31 == 1;
        self.check_name(id, start, name)?;
        let e = p.endian;
        let kind = match kind_no {
            KIND_INT => {
                let enc = p.u32(id, start, "INT encoding")?;
                Kind::Int {
                    size: size_or_type,
                    encoding: (enc >> 24) as u8 & 0x0f,
                    offset: (enc >> 16) as u8,
                    bits: enc as u8,
                }
            }
            KIND_PTR => Kind::Ptr { ty: size_or_type },
            KIND_ARRAY => {
                let (elem, index, nelems) = p.three(id, start, "ARRAY record")?;
                Kind::Array { elem, index, nelems }
            }
            KIND_STRUCT | KIND_UNION => {
                p.check_count(id, start, "members", vlen.into(), 12)?;
                let first = self.members.len() as u32;
                for _ in 0..vlen {
                    let (name, ty, offset) = p.three(id, start, "member")?;
                    self.check_name(id, start, name)?;
                    let (bit_offset, bits) =
                        if kflag { (offset & 0x00ff_ffff, (offset >> 24) as u8) } else { (offset, 0) };
                    self.members.push(RawMember { name, ty, bit_offset, bits });
                }
                Kind::Struct { union: kind_no == KIND_UNION, size: size_or_type, first, len: vlen }
            }
            KIND_ENUM => {
                p.check_count(id, start, "enumerators", vlen.into(), 8)?;
                let first = self.enumerators.len() as u32;
                for _ in 0..vlen {
                    let (name, raw) = p.take(id, start, "enumerator", tuple((nom_u32(e), nom_u32(e))))?;
                    self.check_name(id, start, name)?;
                    // kind_flag marks a signed enum; without it the value is unsigned.
                    let value = if kflag { i64::from(raw as i32) } else { i64::from(raw) };
                    self.enumerators.push(Enumerator { name, value });
                }
                self.enums.push(id);
                Kind::Enum { size: size_or_type, first, len: vlen }
            }
            KIND_ENUM64 => {
                p.check_count(id, start, "enumerators", vlen.into(), 12)?;
                let first = self.enumerators.len() as u32;
                for _ in 0..vlen {
                    let (name, lo, hi) = p.three(id, start, "enumerator")?;
                    self.check_name(id, start, name)?;
                    // An unsigned value above i64::MAX comes back as its two's-complement twin.
                    let value = ((u64::from(hi) << 32) | u64::from(lo)) as i64;
                    self.enumerators.push(Enumerator { name, value });
                }
                self.enums.push(id);
                Kind::Enum { size: size_or_type, first, len: vlen }
            }
            KIND_FWD => Kind::Fwd { union: kflag },
            KIND_TYPEDEF => Kind::Typedef { ty: size_or_type },
            KIND_VOLATILE => Kind::Volatile { ty: size_or_type },
            KIND_CONST => Kind::Const { ty: size_or_type },
            KIND_RESTRICT => Kind::Restrict { ty: size_or_type },
            KIND_TYPE_TAG => Kind::TypeTag { ty: size_or_type },
            KIND_FUNC => Kind::Func { proto: size_or_type, linkage: vlen },
            KIND_FUNC_PROTO => {
                p.check_count(id, start, "parameters", vlen.into(), 8)?;
                for _ in 0..vlen {
                    let (name, ty) = p.take(id, start, "parameter", tuple((nom_u32(e), nom_u32(e))))?;
                    self.check_name(id, start, name)?;
                    self.note_unkept_ref(ty, id, start);
                }
                Kind::FuncProto { ret: size_or_type, params: vlen }
            }
            KIND_VAR => Kind::Var { ty: size_or_type, linkage: p.u32(id, start, "VAR linkage")? },
            KIND_DATASEC => {
                p.check_count(id, start, "section variables", vlen.into(), 12)?;
                for _ in 0..vlen {
                    let (ty, _offset, _size) = p.three(id, start, "section variable")?;
                    self.note_unkept_ref(ty, id, start);
                }
                Kind::Datasec { size: size_or_type, vars: vlen }
            }
            KIND_FLOAT => Kind::Float { size: size_or_type },
            KIND_DECL_TAG => Kind::DeclTag {
                ty: size_or_type,
                component: p.take(id, start, "DECL_TAG record", nom_i32(e))?,
            },
            kind => return Err(BtfError::UnknownKind { id, offset: start, kind }),
        };
        Ok(Type { name, kind })
    }

    /// A name offset must land on the start of a character inside the string section, which
    /// [`parse_strings`] made sure ends in NUL.
    fn check_name(&self, id: u32, offset: usize, name_off: u32) -> Result<(), BtfError> {
        let off = name_off as usize;
        if off >= self.strings.len() {
            if off == 0 {
                return Ok(()); // An empty string section still has the empty name.
            }
            return Err(BtfError::BadName { id, offset, name_off, why: "beyond the string section" });
        }
        if !self.strings.is_char_boundary(off) {
            return Err(BtfError::BadName { id, offset, name_off, why: "inside a UTF-8 character" });
        }
        Ok(())
    }

    fn check_refs(&self, offsets: &[u32]) -> Result<(), BtfError> {
        let count = self.types.len();
        for (id, t) in self.types.iter().enumerate() {
            let bad = |target: u32| BtfError::BadTypeRef {
                id: id as u32,
                offset: offsets.get(id).copied().unwrap_or(0) as usize,
                target,
                count: count - 1,
            };
            let check = |target: u32| if (target as usize) < count { Ok(()) } else { Err(bad(target)) };
            match t.kind {
                Kind::Void | Kind::Int { .. } | Kind::Enum { .. } | Kind::Fwd { .. } | Kind::Float { .. } => {
                }
                Kind::Ptr { ty }
                | Kind::Typedef { ty }
                | Kind::Volatile { ty }
                | Kind::Const { ty }
                | Kind::Restrict { ty }
                | Kind::TypeTag { ty }
                | Kind::Var { ty, .. }
                | Kind::DeclTag { ty, .. } => check(ty)?,
                Kind::Func { proto, .. } => check(proto)?,
                Kind::Array { elem, index, .. } => {
                    check(elem)?;
                    check(index)?;
                }
                Kind::Struct { first, len, .. } => {
                    for m in self.range(&self.members, first, len) {
                        check(m.ty)?;
                    }
                }
                Kind::FuncProto { ret, .. } => check(ret)?,
                Kind::Datasec { .. } => {}
            }
        }
        let (target, id, offset) = self.max_unkept_ref;
        if target as usize >= count {
            return Err(BtfError::BadTypeRef { id, offset, target, count: count - 1 });
        }
        Ok(())
    }

    fn note_unkept_ref(&mut self, ty: u32, id: u32, offset: usize) {
        if ty > self.max_unkept_ref.0 {
            self.max_unkept_ref = (ty, id, offset);
        }
    }

    fn build_index(&mut self) {
        let name = |id: u32| {
            let t = self.types.get(id as usize)?;
            let n = self.name(t.name);
            (t.kind.name_rank() != 0 && t.name != 0 && !n.is_empty()).then_some(n)
        };
        // Of equals, the first keeps its place, so answers do not depend on hash order.
        let rank = |id: u32| self.types[id as usize].kind.name_rank();
        self.by_name = NameIndex::build(self.types.len(), name, |id, kept| rank(kept) < rank(id));
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

    /// The id of the type named `ty`. `struct X`, `union X` and `enum X` ask for that kind
    /// only, for the rare name shared by a typedef and a tag of another type.
    fn find(&self, ty: &str) -> Option<u32> {
        let (want, name): (fn(&Kind) -> bool, &str) = if let Some(n) = ty.strip_prefix("struct ") {
            (|k| matches!(k, Kind::Struct { union: false, .. }), n)
        } else if let Some(n) = ty.strip_prefix("union ") {
            (|k| matches!(k, Kind::Struct { union: true, .. }), n)
        } else if let Some(n) = ty.strip_prefix("enum ") {
            (|k| matches!(k, Kind::Enum { .. }), n)
        } else {
            return self.by_name(ty);
        };
        let name = name.trim();
        if let Some(id) = self.by_name(name)
            && self.get(id).is_some_and(|t| want(&t.kind))
        {
            return Some(id);
        }
        // The index kept another kind for this name: look for the best of the wanted kind.
        let mut best: Option<(u8, u32)> = None;
        for (id, t) in self.types.iter().enumerate() {
            if want(&t.kind) && self.name_is(t.name, name) {
                let rank = t.kind.name_rank();
                if best.is_none_or(|(r, _)| rank > r) {
                    best = Some((rank, id as u32));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// Follows typedefs and qualifiers to the type they stand for; `None` past [`MAX_DEPTH`]
    /// hops (a loop) or at a dangling id.
    fn resolve(&self, mut id: u32) -> Option<(u32, &Type)> {
        for _ in 0..MAX_DEPTH {
            let t = self.get(id)?;
            match t.kind.modified() {
                Some(next) => id = next,
                None => return Some((id, t)),
            }
        }
        None
    }

    fn size_of_id(&self, id: u32, depth: usize) -> Option<u64> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let (_, t) = self.resolve(id)?;
        match t.kind {
            Kind::Int { size, .. }
            | Kind::Struct { size, .. }
            | Kind::Enum { size, .. }
            | Kind::Float { size }
            | Kind::Datasec { size, .. } => Some(size.into()),
            Kind::Ptr { .. } => Some(POINTER_SIZE),
            Kind::Array { elem, nelems, .. } => self.size_of_id(elem, depth + 1)?.checked_mul(nelems.into()),
            Kind::Var { ty, .. } => self.size_of_id(ty, depth + 1),
            _ => None,
        }
    }

    /// The struct or union `id` stands for, looking through typedefs and qualifiers.
    fn composite(&self, id: u32) -> Option<&[RawMember]> {
        match self.resolve(id)?.1.kind {
            Kind::Struct { first, len, .. } => Some(self.range(&self.members, first, len)),
            _ => None,
        }
    }

    /// Finds the member named `name` among `members`, descending into anonymous structs and
    /// unions as C does; returns it with its bit offset from the start of the outer type.
    fn find_member(
        &self,
        members: &[RawMember],
        name: &str,
        base: u64,
        depth: usize,
        visits: &mut usize,
    ) -> Option<(RawMember, u64)> {
        if depth >= MAX_DEPTH {
            return None;
        }
        for m in members {
            *visits = visits.checked_sub(1)?;
            let bit = base + u64::from(m.bit_offset);
            if m.name == 0 || self.name(m.name).is_empty() {
                if let Some(inner) = self.composite(m.ty)
                    && let Some(found) = self.find_member(inner, name, bit, depth + 1, visits)
                {
                    return Some(found);
                }
            } else if self.name_is(m.name, name) {
                return Some((*m, bit));
            }
        }
        None
    }

    /// Turns a member found at bit `bit` into the byte-addressed [`Member`] callers read.
    ///
    /// A bitfield is placed in its storage unit, the size of its declared integer type
    /// (1, 2, 4 or 8 bytes): `offset` is the bit's byte rounded down to that size, so one
    /// aligned read of `size` bytes holds the whole field, which sits at `bitfield.0` bits
    /// into it. If the field does not fit in such an aligned unit (packed structs), `offset`
    /// is the byte holding its first bit and `size` the bytes spanning it.
    fn to_member(&self, m: RawMember, bit: u64) -> Option<Member> {
        let (tid, t) = self.resolve(m.ty)?;
        let mut width = u32::from(m.bits);
        let mut bit = bit;
        if width == 0
            && let Kind::Int { size, offset, bits, .. } = t.kind
            && (u64::from(bits) != u64::from(size) * 8 || offset != 0)
        {
            // The encoding without kind_flag: the INT carries the width and a bit offset.
            width = bits.into();
            bit += u64::from(offset);
        }
        if width == 0 {
            if !bit.is_multiple_of(8) {
                return None; // Only bitfields may start mid-byte.
            }
            return Some(Member { offset: bit / 8, size: self.size_of_id(tid, 0)?, bitfield: None });
        }
        let unit = self.size_of_id(tid, 0).filter(|u| matches!(u, 1 | 2 | 4 | 8)).unwrap_or(1);
        let aligned = bit / 8 / unit * unit;
        let within = bit - aligned * 8;
        if within + u64::from(width) <= unit * 8 {
            return Some(Member { offset: aligned, size: unit, bitfield: Some((within as u32, width)) });
        }
        let first = bit / 8;
        let within = bit % 8;
        let size = (within + u64::from(width)).div_ceil(8);
        Some(Member { offset: first, size, bitfield: Some((within as u32, width)) })
    }

    /// All members of the struct or union `ty`, in declaration order, with the members of
    /// anonymous structs and unions in their place as if they were direct members: what a
    /// profile lists for `member()` to find. Unnamed non-struct members (padding bitfields)
    /// are left out.
    pub fn members(&self, ty: &str) -> Option<Vec<(String, Member)>> {
        let top = self.composite(self.find(ty)?)?;
        let mut out = Vec::new();
        let mut visits = MAX_VISITS;
        self.collect_members(top, 0, 0, &mut visits, &mut out);
        Some(out)
    }

    fn collect_members(
        &self,
        members: &[RawMember],
        base: u64,
        depth: usize,
        visits: &mut usize,
        out: &mut Vec<(String, Member)>,
    ) {
        if depth >= MAX_DEPTH {
            return;
        }
        for m in members {
            let Some(left) = visits.checked_sub(1) else { return };
            *visits = left;
            let bit = base + u64::from(m.bit_offset);
            let name = self.name(m.name);
            if name.is_empty() {
                if let Some(inner) = self.composite(m.ty) {
                    self.collect_members(inner, bit, depth + 1, visits, out);
                }
            } else if let Some(member) = self.to_member(*m, bit) {
                out.push((name.to_string(), member));
            }
        }
    }

    /// The value of enumerator `enumerator`, in the enum named `enum_name` (a tag, `enum X`,
    /// or a typedef of an enum), or in any enum when `None`: kernel constants such as
    /// `PIDTYPE_PID` or `TASK_COMM_LEN` often live in anonymous enums. Unsigned 64-bit values
    /// above `i64::MAX` come back wrapped.
    pub fn enum_value(&self, enum_name: Option<&str>, enumerator: &str) -> Option<i64> {
        let in_enum = |id: u32| -> Option<i64> {
            let Kind::Enum { first, len, .. } = self.resolve(id)?.1.kind else { return None };
            self.range(&self.enumerators, first, len)
                .iter()
                .find(|e| self.name_is(e.name, enumerator))
                .map(|e| e.value)
        };
        match enum_name {
            None => self.enums.iter().find_map(|&id| in_enum(id)),
            Some(name) => {
                let tag = name.strip_prefix("enum ").unwrap_or(name).trim();
                if let Some(v) = self.find(name).and_then(in_enum) {
                    return Some(v);
                }
                // Several enums may share a tag; the index keeps only one.
                self.enums
                    .iter()
                    .filter(|&&id| self.get(id).is_some_and(|t| self.name_is(t.name, tag)))
                    .find_map(|&id| in_enum(id))
            }
        }
    }
}

/// Checks the string section: UTF-8 (so names can be handed out as `&str`) and ending in NUL
/// (so every string ends inside it).
fn parse_strings(bytes: &[u8], start: usize) -> Result<String, BtfError> {
    if bytes.last().is_some_and(|&b| b != 0) {
        return Err(BtfError::BadStrings {
            offset: start + bytes.len() - 1,
            why: "last string is not NUL-terminated",
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(BtfError::BadStrings { offset: start + e.valid_up_to(), why: "invalid UTF-8" }),
    }
}

impl TypeInfo for Btf {
    fn member(&self, ty: &str, path: &str) -> Option<Member> {
        let mut id = self.find(ty)?;
        let mut base = 0u64;
        let mut steps = path.split('.').peekable();
        while let Some(step) = steps.next() {
            let members = self.composite(id)?;
            let mut visits = MAX_VISITS;
            let (m, bit) = self.find_member(members, step, 0, 0, &mut visits)?;
            if steps.peek().is_none() {
                let mut found = self.to_member(m, bit)?;
                found.offset = found.offset.checked_add(base)?;
                return Some(found);
            }
            // A path only goes on through a member that is itself a struct or union.
            if !bit.is_multiple_of(8) {
                return None;
            }
            base = base.checked_add(bit / 8)?;
            id = m.ty;
        }
        None
    }

    fn size_of(&self, ty: &str) -> Option<u64> {
        self.size_of_id(self.find(ty)?, 0)
    }

    fn source(&self) -> String {
        self.origin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Writes BTF blobs by hand, little-endian, one record at a time; ids are handed out in
    /// order from 1, so a test can refer to a type it has yet to add.
    struct Builder {
        strings: Vec<u8>,
        types: Vec<u8>,
        next: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self { strings: vec![0], types: Vec::new(), next: 1 }
        }

        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }

        /// One type: its common header, then `extra` words as they are.
        fn raw(
            &mut self,
            name: &str,
            kind: u8,
            kflag: bool,
            vlen: u16,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            let name = self.s(name);
            let info = u32::from(vlen) | (u32::from(kind) << 24) | (u32::from(kflag) << 31);
            self.words(&[name, info, size_or_type]);
            self.words(extra);
            self.next += 1;
            self.next - 1
        }

        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.raw(name, KIND_INT, false, 0, size, &[size * 8])
        }

        /// An INT as the older bitfield encoding uses it: `bits` wide, `offset` bits in.
        fn int_bits(&mut self, name: &str, size: u32, offset: u32, bits: u32) -> u32 {
            self.raw(name, KIND_INT, false, 0, size, &[(offset << 16) | bits])
        }

        fn typedef(&mut self, name: &str, ty: u32) -> u32 {
            self.raw(name, KIND_TYPEDEF, false, 0, ty, &[])
        }

        fn modifier(&mut self, kind: u8, ty: u32) -> u32 {
            self.raw("", kind, false, 0, ty, &[])
        }

        fn array(&mut self, elem: u32, index: u32, nelems: u32) -> u32 {
            self.raw("", KIND_ARRAY, false, 0, 0, &[elem, index, nelems])
        }

        /// A struct (or union) in the kind_flag encoding: members are (name, type, bit offset,
        /// bitfield width or 0).
        fn composite(&mut self, kind: u8, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
            let name = self.s(name);
            let info = members.len() as u32 | (u32::from(kind) << 24) | (1 << 31);
            self.words(&[name, info, size]);
            for &(m, ty, bit, bits) in members {
                let m = self.s(m);
                self.words(&[m, ty, (bits << 24) | bit]);
            }
            self.next += 1;
            self.next - 1
        }

        fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let m: Vec<_> = members.iter().map(|&(n, t, b)| (n, t, b, 0)).collect();
            self.composite(KIND_STRUCT, name, size, &m)
        }

        fn union(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let m: Vec<_> = members.iter().map(|&(n, t, b)| (n, t, b, 0)).collect();
            self.composite(KIND_UNION, name, size, &m)
        }

        /// A struct in the encoding without kind_flag: the offset word is the bit offset only.
        fn struct_plain(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let name = self.s(name);
            let info = members.len() as u32 | (u32::from(KIND_STRUCT) << 24);
            self.words(&[name, info, size]);
            for &(m, ty, bit) in members {
                let m = self.s(m);
                self.words(&[m, ty, bit]);
            }
            self.next += 1;
            self.next - 1
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let tl = self.types.len() as u32;
            for w in [24, 0, tl, tl, self.strings.len() as u32] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn parse(b: &Builder) -> Btf {
        Btf::parse(&b.build(), "test").expect("hand-built BTF parses")
    }

    fn m(offset: u64, size: u64) -> Member {
        Member { offset, size, bitfield: None }
    }

    /// struct outer { int a; union { int b; struct { long c; int d; }; }; struct inner n;
    /// char name[16]; struct inner *p; }
    fn nested() -> Builder {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        let long = b.int("long", 8); // 2
        let anon_s = b.strukt("", 16, &[("c", long, 0), ("d", int, 64)]); // 3
        let anon_u = b.union("", 16, &[("b", int, 0), ("", anon_s, 0)]); // 4
        let inner = b.strukt("inner", 8, &[("x", int, 0), ("y", int, 32)]); // 5
        let chr = b.int("char", 1); // 6
        let arr = b.array(chr, int, 16); // 7
        let ptr = b.raw("", KIND_PTR, false, 0, inner, &[]); // 8
        b.strukt(
            "outer",
            56,
            &[("a", int, 0), ("", anon_u, 64), ("n", inner, 192), ("name", arr, 256), ("p", ptr, 384)],
        );
        b
    }

    #[test]
    fn nested_anonymous_members_are_found_as_direct_ones() {
        let btf = parse(&nested());
        assert_eq!(btf.type_count(), 9);
        assert_eq!(btf.source(), "test");
        assert_eq!(btf.member("outer", "a"), Some(m(0, 4)));
        assert_eq!(btf.member("outer", "b"), Some(m(8, 4)));
        assert_eq!(btf.member("outer", "c"), Some(m(8, 8)));
        assert_eq!(btf.member("outer", "d"), Some(m(16, 4)));
        assert_eq!(btf.member("outer", "n"), Some(m(24, 8)));
        assert_eq!(btf.member("outer", "n.y"), Some(m(28, 4)));
        assert_eq!(btf.member("outer", "name"), Some(m(32, 16)));
        assert_eq!(btf.member("outer", "p"), Some(m(48, 8)));
        assert_eq!(btf.member("struct outer", "d"), Some(m(16, 4)));
        // Through a pointer is not an offset; a missing name is not found.
        assert_eq!(btf.member("outer", "p.x"), None);
        assert_eq!(btf.member("outer", "zz"), None);
        assert_eq!(btf.member("outer", "a.b"), None);
        assert_eq!(btf.member("int", "a"), None);
        assert_eq!(btf.size_of("outer"), Some(56));
        assert_eq!(btf.size_of("inner"), Some(8));
        assert_eq!(btf.size_of("nosuch"), None);
        let names: Vec<_> = btf.members("outer").unwrap().into_iter().map(|(n, m)| (n, m.offset)).collect();
        let want = [("a", 0), ("b", 8), ("c", 8), ("d", 16), ("n", 24), ("name", 32), ("p", 48)];
        assert_eq!(names, want.map(|(n, o)| (n.to_string(), o)));
        assert_eq!(btf.members("int"), None);
    }

    #[test]
    fn bitfields_with_kind_flag() {
        let mut b = Builder::new();
        let u32t = b.int("u32", 4); // 1
        let u8t = b.int("u8", 1); // 2
        let u64t = b.int("u64", 8); // 3
        let members = [
            ("a", u32t, 0, 3),
            ("b", u32t, 3, 5),
            ("c", u8t, 8, 0),
            ("d", u64t, 64, 40),
            ("e", u64t, 104, 24),
            ("f", u32t, 134, 4), // 6 bits into the u32 at byte 16
            ("", u32t, 138, 2),  // unnamed padding, never listed
        ];
        b.composite(KIND_STRUCT, "bf", 24, &members);
        let btf = parse(&b);
        let bf = |o, s, bit, w| Some(Member { offset: o, size: s, bitfield: Some((bit, w)) });
        assert_eq!(btf.member("bf", "a"), bf(0, 4, 0, 3));
        assert_eq!(btf.member("bf", "b"), bf(0, 4, 3, 5));
        assert_eq!(btf.member("bf", "c"), Some(m(1, 1)));
        assert_eq!(btf.member("bf", "d"), bf(8, 8, 0, 40));
        assert_eq!(btf.member("bf", "e"), bf(8, 8, 40, 24));
        assert_eq!(btf.member("bf", "f"), bf(16, 4, 6, 4));
        assert_eq!(btf.members("bf").unwrap().len(), 6);
    }

    #[test]
    fn bitfield_outside_an_aligned_unit_spans_its_bytes() {
        // A packed struct: a u32 bitfield of 12 bits at bit 26 crosses the 4-byte unit.
        let mut b = Builder::new();
        let u32t = b.int("u32", 4);
        b.composite(KIND_STRUCT, "packed", 8, &[("x", u32t, 26, 12)]);
        let btf = parse(&b);
        assert_eq!(btf.member("packed", "x"), Some(Member { offset: 3, size: 2, bitfield: Some((2, 12)) }));
    }

    #[test]
    fn bitfields_without_kind_flag() {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        let b3 = b.int_bits("", 4, 0, 3); // 2
        let b7 = b.int_bits("", 4, 2, 7); // 3: the INT's own offset adds 2 bits
        let cb = b.modifier(KIND_CONST, b7); // 4
        b.struct_plain("old", 8, &[("x", int, 0), ("f", b3, 32), ("g", cb, 35)]);
        let btf = parse(&b);
        assert_eq!(btf.member("old", "x"), Some(m(0, 4)));
        assert_eq!(btf.member("old", "f"), Some(Member { offset: 4, size: 4, bitfield: Some((0, 3)) }));
        assert_eq!(btf.member("old", "g"), Some(Member { offset: 4, size: 4, bitfield: Some((5, 7)) }));
    }

    #[test]
    fn typedef_chains_resolve() {
        let mut b = Builder::new();
        let long = b.int("long", 8); // 1
        let s = b.strukt("", 8, &[("counter", long, 0)]); // 2: typedef struct { long counter; } atomic64_t
        let a64 = b.typedef("atomic64_t", s); // 3
        let along = b.typedef("atomic_long_t", a64); // 4
        let c = b.modifier(KIND_CONST, along); // 5
        let v = b.modifier(KIND_VOLATILE, c); // 6
        let t = b.modifier(KIND_TYPE_TAG, v); // 7
        let r = b.modifier(KIND_RESTRICT, t); // 8
        let holder = b.strukt("holder", 8, &[("v", r, 0)]); // 9
        b.typedef("holder_t", holder); // 10
        let btf = parse(&b);
        assert_eq!(btf.member("atomic_long_t", "counter"), Some(m(0, 8)));
        assert_eq!(btf.size_of("atomic_long_t"), Some(8));
        assert_eq!(btf.member("holder_t", "v.counter"), Some(m(0, 8)));
        assert_eq!(btf.member("holder", "v"), Some(m(0, 8)));
        assert_eq!(btf.size_of("long"), Some(8));
    }

    #[test]
    fn typedef_loops_give_none_not_a_hang() {
        let mut b = Builder::new();
        let l1 = b.typedef("loop1", 2); // 1 -> 2
        b.typedef("loop2", l1); // 2 -> 1
        b.typedef("self", 3); // 3 -> 3
        let int = b.int("int", 4); // 4
        b.strukt("s", 8, &[("l", l1, 0), ("x", int, 32)]); // 5
        // A struct whose anonymous members are itself, twice: a depth and visit bound stop it.
        b.composite(KIND_STRUCT, "selfish", 8, &[("", 6, 0, 0), ("", 6, 0, 0)]); // 6
        let btf = parse(&b);
        assert_eq!(btf.size_of("loop1"), None);
        assert_eq!(btf.size_of("self"), None);
        assert_eq!(btf.member("loop1", "x"), None);
        assert_eq!(btf.member("s", "l"), None);
        assert_eq!(btf.member("s", "x"), Some(m(4, 4)));
        let t = Instant::now();
        assert_eq!(btf.member("selfish", "nothing"), None);
        assert_eq!(btf.members("selfish"), Some(vec![]));
        assert!(t.elapsed().as_secs() < 5, "bounded walk took {:?}", t.elapsed());
    }

    #[test]
    fn name_prefers_the_complete_struct() {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1
        b.raw("task", KIND_FWD, false, 0, 0, &[]); // 2
        b.raw("task", KIND_FUNC, false, 0, 0, &[]); // 3 (a function named alike)
        b.strukt("task", 0, &[]); // 4: empty
        b.strukt("task", 4, &[("pid", int, 0)]); // 5
        b.strukt("task", 8, &[("other", int, 0)]); // 6: a later namesake does not replace it
        let btf = parse(&b);
        assert_eq!(btf.size_of("task"), Some(4));
        assert_eq!(btf.member("task", "pid"), Some(m(0, 4)));
        assert_eq!(btf.member("struct task", "pid"), Some(m(0, 4)));
        assert_eq!(btf.member("union task", "pid"), None);
    }

    #[test]
    fn enum_values() {
        let mut b = Builder::new();
        let (pp, pt, pm) = (b.s("PIDTYPE_PID"), b.s("PIDTYPE_TGID"), b.s("PIDTYPE_MAX"));
        let e = b.raw("pid_type", KIND_ENUM, false, 3, 4, &[pp, 0, pt, 1, pm, 4]);
        b.typedef("pid_type_t", e);
        let (neg, big) = (b.s("NEG"), b.s("BIG"));
        b.raw("", KIND_ENUM, true, 2, 4, &[neg, (-5i32) as u32, big, 0x8000_0000]);
        let (w, x) = (b.s("WIDE"), b.s("WIDE_NEG"));
        b.raw("wide", KIND_ENUM64, true, 2, 8, &[w, 0, 1, x, 0xffff_fffe, 0xffff_ffff]);
        let (u, _) = (b.s("UNSIGNED_BIG"), 0);
        b.raw("", KIND_ENUM, false, 1, 4, &[u, 0xffff_ffff]);
        let btf = parse(&b);
        assert_eq!(btf.enum_value(Some("pid_type"), "PIDTYPE_MAX"), Some(4));
        assert_eq!(btf.enum_value(Some("enum pid_type"), "PIDTYPE_TGID"), Some(1));
        assert_eq!(btf.enum_value(Some("pid_type_t"), "PIDTYPE_PID"), Some(0));
        assert_eq!(btf.enum_value(None, "PIDTYPE_TGID"), Some(1));
        assert_eq!(btf.enum_value(Some("wide"), "PIDTYPE_TGID"), None);
        assert_eq!(btf.enum_value(None, "NEG"), Some(-5));
        assert_eq!(btf.enum_value(None, "BIG"), Some(i64::from(i32::MIN)));
        assert_eq!(btf.enum_value(None, "UNSIGNED_BIG"), Some(0xffff_ffff));
        assert_eq!(btf.enum_value(Some("wide"), "WIDE"), Some(1 << 32));
        assert_eq!(btf.enum_value(None, "WIDE_NEG"), Some(-2));
        assert_eq!(btf.enum_value(None, "PIDTYPE"), None);
        assert_eq!(btf.size_of("pid_type"), Some(4));
        assert_eq!(btf.size_of("wide"), Some(8));
    }

    #[test]
    fn every_kind_parses() {
        let mut b = Builder::new();
        let int = b.int("int", 4); // 1 INT
        let ptr = b.raw("", KIND_PTR, false, 0, int, &[]); // 2 PTR
        let arr = b.array(int, int, 3); // 3 ARRAY
        b.strukt("s", 4, &[("x", int, 0)]); // 4 STRUCT
        b.union("u", 4, &[("x", int, 0)]); // 5 UNION
        let one = b.s("ONE");
        b.raw("e", KIND_ENUM, false, 1, 4, &[one, 1]); // 6 ENUM
        b.raw("f", KIND_FWD, true, 0, 0, &[]); // 7 FWD
        b.typedef("t", arr); // 8 TYPEDEF
        b.modifier(KIND_VOLATILE, int); // 9
        b.modifier(KIND_CONST, int); // 10
        b.modifier(KIND_RESTRICT, ptr); // 11
        let arg = b.s("arg");
        b.raw("fn", KIND_FUNC, false, 1, 13, &[]); // 12 FUNC
        b.raw("", KIND_FUNC_PROTO, false, 2, int, &[arg, int, 0, 0]); // 13 FUNC_PROTO (variadic)
        let var = b.raw("v", KIND_VAR, false, 0, arr, &[1]); // 14 VAR
        b.raw(".data", KIND_DATASEC, false, 1, 12, &[var, 0, 12]); // 15 DATASEC
        b.raw("double", KIND_FLOAT, false, 0, 8, &[]); // 16 FLOAT
        b.raw("tag", KIND_DECL_TAG, false, 0, 4, &[u32::MAX]); // 17 DECL_TAG (-1: the type itself)
        b.raw("user", KIND_TYPE_TAG, false, 0, int, &[]); // 18 TYPE_TAG
        let two = b.s("TWO");
        b.raw("e64", KIND_ENUM64, false, 1, 8, &[two, 2, 0]); // 19 ENUM64
        let btf = parse(&b);
        assert_eq!(btf.type_count(), 19);
        assert_eq!(btf.size_of("t"), Some(12));
        assert_eq!(btf.size_of("double"), Some(8));
        assert_eq!(btf.size_of("f"), None);
        assert_eq!(btf.size_of("fn"), None);
        assert_eq!(btf.member("u", "x"), Some(m(0, 4)));
        assert_eq!(btf.enum_value(Some("e64"), "TWO"), Some(2));

        let mut b = Builder::new();
        b.int("int", 4);
        b.raw("x", 20, false, 0, 0, &[]);
        let e = Btf::parse(&b.build(), "t").expect_err("kind 20 is refused");
        assert!(matches!(e, BtfError::UnknownKind { id: 2, offset: 40, kind: 20 }), "{e}");
        assert!(e.to_string().contains("unknown kind 20") && e.to_string().contains("type 2"), "{e}");
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = nested().build();
        assert_eq!(Btf::blob_len(&good).unwrap(), good.len());
        assert_eq!(Btf::blob_len(&good[..24]).unwrap(), good.len());
        let err = |data: &[u8]| Btf::blob_len(data).expect_err("refused");
        assert!(matches!(err(&good[..10]), BtfError::TruncatedHeader { have: 10, need: 24 }));
        assert!(matches!(Btf::parse(&good[..10], "t"), Err(BtfError::TruncatedHeader { .. })));
        let mut bad = good.clone();
        bad[0] = 0;
        assert!(matches!(err(&bad), BtfError::BadMagic { .. }));
        let mut bad = good.clone();
        bad[2] = 2;
        assert!(matches!(err(&bad), BtfError::BadVersion { version: 2 }));
        let mut bad = good.clone();
        bad[3] = 1;
        assert!(matches!(err(&bad), BtfError::BadHeader { field: "flags", .. }));
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(err(&bad), BtfError::BadHeader { field: "hdr_len", offset: 4, .. }));
        let mut bad = good.clone();
        bad[20..24].copy_from_slice(&(300u32 << 20).to_le_bytes());
        assert!(matches!(err(&bad), BtfError::TooLarge { .. }));
        let mut bad = good.clone();
        bad[16..20].copy_from_slice(&0u32.to_le_bytes()); // strings over the types
        assert!(matches!(err(&bad), BtfError::BadHeader { field: "str_off", .. }));
        // The header is fine but the blob is cut short.
        let e = Btf::parse(&good[..good.len() - 1], "t").expect_err("refused");
        assert!(matches!(e, BtfError::TruncatedBlob { .. }), "{e}");
        // Trailing bytes after the blob are ignored.
        let mut long = good.clone();
        long.extend_from_slice(&[0xaa; 7]);
        assert_eq!(Btf::parse(&long, "t").unwrap().type_count(), 9);
    }

    #[test]
    fn a_longer_header_and_big_endian_blobs_are_read() {
        // A 32-byte header whose extra bytes are ignored, and the same blob byte-swapped.
        let b = nested();
        let le = b.build();
        let mut long = le[..24].to_vec();
        long[4..8].copy_from_slice(&32u32.to_le_bytes());
        long.extend_from_slice(&[0; 8]);
        long.extend_from_slice(&le[24..]);
        assert_eq!(Btf::parse(&long, "t").unwrap().member("outer", "d"), Some(m(16, 4)));
        let mut be = le.clone();
        be[0..2].copy_from_slice(&BTF_MAGIC.to_be_bytes());
        let types_end = 24 + b.types.len();
        for chunk in be[4..types_end].chunks_mut(4) {
            chunk.reverse();
        }
        assert_eq!(Btf::parse(&be, "t").unwrap().member("outer", "d"), Some(m(16, 4)));
    }

    #[test]
    fn bad_strings_and_references_are_refused() {
        let mut b = Builder::new();
        b.int("int", 4);
        b.words(&[9999, u32::from(KIND_INT) << 24, 4, 32]); // type 2, named beyond the strings
        b.next += 1;
        let e = Btf::parse(&b.build(), "t").expect_err("refused");
        assert!(matches!(e, BtfError::BadName { id: 2, offset: 40, name_off: 9999, .. }), "{e}");

        let mut b = Builder::new();
        b.strukt("s", 4, &[("x", 77, 0)]);
        let e = Btf::parse(&b.build(), "t").expect_err("refused");
        assert!(matches!(e, BtfError::BadTypeRef { id: 1, offset: 24, target: 77, count: 1 }), "{e}");

        let mut b = Builder::new();
        b.int("int", 4);
        b.strings.pop(); // no final NUL
        let e = Btf::parse(&b.build(), "t").expect_err("refused");
        assert!(matches!(e, BtfError::BadStrings { .. }), "{e}");

        let mut b = Builder::new();
        b.int("int", 4);
        b.strings[2] = 0xff;
        let e = Btf::parse(&b.build(), "t").expect_err("refused");
        assert!(matches!(e, BtfError::BadStrings { offset: 42, .. }), "{e}");
    }

    #[test]
    fn huge_counts_are_refused_before_reading() {
        for kind in [KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FUNC_PROTO, KIND_DATASEC] {
            let mut b = Builder::new();
            b.int("int", 4);
            b.raw("big", kind, false, u16::MAX, 4, &[0, 1, 0]);
            let e = Btf::parse(&b.build(), "t").expect_err("refused");
            assert!(matches!(e, BtfError::CountTooLarge { id: 2, count: 65535, .. }), "kind {kind}: {e}");
        }
        let mut b = Builder::new();
        b.raw("", KIND_ARRAY, false, 0, 0, &[1]); // the array record is cut short
        let e = Btf::parse(&b.build(), "t").expect_err("refused");
        assert!(matches!(e, BtfError::TruncatedType { id: 1, what: "ARRAY record", .. }), "{e}");
        // An array whose size overflows u64 has no size.
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let a = b.array(int, int, u32::MAX);
        let a2 = b.array(a, int, u32::MAX);
        let a3 = b.array(a2, int, u32::MAX);
        b.typedef("huge", a3);
        assert_eq!(parse(&b).size_of("huge"), None);
    }

    /// Every single-byte corruption and every truncation of a valid blob either parses or is
    /// refused; none panics, and lookups on what parses do not panic either.
    #[test]
    fn corrupted_blobs_never_panic() {
        let mut b = nested();
        b.composite(KIND_STRUCT, "bf", 8, &[("a", 1, 3, 5)]);
        let good = b.build();
        let probe = |data: &[u8]| {
            if let Ok(btf) = Btf::parse(data, "t") {
                for ty in ["outer", "inner", "bf", "int"] {
                    let _ = btf.members(ty);
                    let _ = btf.size_of(ty);
                    for path in ["a", "d", "n.y", "name", "p"] {
                        let _ = btf.member(ty, path);
                    }
                }
                let _ = btf.enum_value(None, "X");
            }
            let _ = Btf::blob_len(data);
        };
        for len in 0..good.len() {
            probe(&good[..len]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0xff, 0x7f, 0x80, good[i] ^ 1, good[i].wrapping_add(4)] {
                let mut bad = good.clone();
                bad[i] = v;
                probe(&bad);
            }
        }
    }
}
