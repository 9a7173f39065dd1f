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
    fn raw(&mut self, name: &str, kind: u8, kflag: bool, vlen: u16, size_or_type: u32, extra: &[u32]) -> u32 {
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
