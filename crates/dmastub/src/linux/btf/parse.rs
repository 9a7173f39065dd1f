//! Parsing and checking a blob: the header, the type section record by record, the string
//! section, and the name index built once at the end.

use nom::IResult;
use nom::number::Endianness;
use nom::number::complete::{i32 as nom_i32, u8 as nom_u8, u16 as nom_u16, u32 as nom_u32};
use nom::sequence::tuple;

use super::*;

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

    /// Parses and checks a whole blob. Bytes after the length its header gives are ignored.
    /// `origin` is what [`TypeInfo::source`] reports.
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
