//! Lookups in a parsed blob: types by name through typedefs and qualifiers, members through
//! anonymous structs and unions, bitfields placed in their storage units, enum values.

use super::*;

impl Btf {
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
