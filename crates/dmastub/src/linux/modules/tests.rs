use super::*;
use crate::linux::TypeMap;
use crate::testing::FakeMemory;
use std::path::PathBuf;

const MODS: u64 = 0xffff_ffff_c010_0000;
const HEAD: u64 = MODS;
const A: u64 = MODS + 0x1000;
const B: u64 = MODS + 0x2000;
const USE: u64 = MODS + 0x3000;
const SYMS: u64 = MODS + 0x4000;
const SECTS: u64 = MODS + 0x5000;
const TEXT_A: u64 = 0xffff_ffff_c000_0000;
const TEXT_B: u64 = 0xffff_ffff_c000_4000;

/// `struct module` before 6.4 (`core_layout`) or from 6.4 (`mem[7]`), with what lsmod reads.
fn types(new: bool) -> TypeMap {
    let mut t = TypeMap::new("test BTF");
    let mut members = vec![
        ("module", "state", 0, 4),
        ("module", "list", 8, 16),
        ("module", "name", 24, 56),
        ("module", "refcnt.counter", 0xa0, 4),
        ("module", "source_list", 0xa8, 16),
        ("module", "init", 0xb8, 8),
        ("module", "exit", 0xc0, 8),
        ("module", "taints", 0xc8, 8),
        ("module", "kallsyms", 0xd0, 8),
        ("module", "sect_attrs", 0xd8, 8),
        ("module_use", "source_list", 0, 16),
        ("module_use", "source", 32, 8),
        ("mod_kallsyms", "symtab", 0, 8),
        ("mod_kallsyms", "num_symtab", 8, 4),
        ("mod_kallsyms", "strtab", 16, 8),
        ("module_sect_attrs", "nsections", 0x20, 4),
        ("module_sect_attrs", "attrs", 0x28, 0),
        ("module_sect_attr", "battr.attr.name", 0, 8),
        ("module_sect_attr", "address", 0x40, 8),
    ];
    if new {
        // 7 module_memory of 0x100 bytes at 0x200: base at 0, size at 8.
        members.extend([
            ("module", "mem", 0x200, 0x700),
            ("module_memory", "base", 0, 8),
            ("module_memory", "size", 8, 4),
        ]);
        t.insert_size("module_memory", 0x100);
    } else {
        members.extend([
            ("module", "core_layout.base", 0x80, 8),
            ("module", "core_layout.size", 0x88, 4),
            ("module", "core_layout.text_size", 0x8c, 4),
            ("module", "init_layout.size", 0x98, 4),
        ]);
    }
    for (ty, path, off, size) in members {
        t.insert_member(ty, path, off, size);
    }
    t.insert_size("module_sect_attr", 0x48);
    t
}

/// Puts one module at `m`: name, base, core and init sizes (6.1) or text and data sizes (6.4).
fn put_module(
    mem: &mut FakeMemory,
    new: bool,
    m: u64,
    name: &str,
    base: u64,
    sizes: (u32, u32),
    refcnt: u32,
) {
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    mem.put(m + 24, &n);
    if new {
        mem.put_u64(m + 0x200, base);
        mem.put(m + 0x208, &sizes.0.to_le_bytes());
        mem.put(m + 0x308, &sizes.1.to_le_bytes());
    } else {
        mem.put_u64(m + 0x80, base);
        mem.put(m + 0x88, &sizes.0.to_le_bytes());
        mem.put(m + 0x8c, &(sizes.0 / 2).to_le_bytes());
        mem.put(m + 0x98, &sizes.1.to_le_bytes());
    }
    mem.put(m + 0xa0, &refcnt.to_le_bytes());
    // An empty source_list, init and exit set.
    mem.put_u64(m + 0xa8, m + 0xa8);
    mem.put_u64(m + 0xb0, m + 0xa8);
    mem.put_u64(m + 0xb8, base);
    mem.put_u64(m + 0xc0, base + 0x10);
}

/// Two modules: `a` (newest, first on the list) uses `b`; `b` is out of tree and unsigned
/// (taints O and E) and has a symbol table and section attributes.
fn machine(new: bool) -> (FakeMemory, TypeMap) {
    let mut mem = FakeMemory::new().with_region(MODS, vec![0; 0x8000]);
    put_module(&mut mem, new, A, "a", TEXT_A, (0x3000, 0), 1);
    put_module(&mut mem, new, B, "b", TEXT_B, (0x1000, 0x1000), 2);
    mem.put_u64(HEAD, A + 8);
    mem.put_u64(A + 8, B + 8);
    mem.put_u64(B + 8, HEAD);
    // b's users: one module_use whose source is a.
    mem.put_u64(B + 0xa8, USE);
    mem.put_u64(USE, B + 0xa8);
    mem.put_u64(USE + 32, A);
    mem.put_u64(B + 0xc8, (1 << 12) | (1 << 13));
    // b's symbols: b_f (function, 0x40 bytes at TEXT_B + 0x100) and b_v (object).
    mem.put_u64(B + 0xd0, SYMS);
    mem.put_u64(SYMS, SYMS + 0x100);
    mem.put(SYMS + 8, &3u32.to_le_bytes());
    mem.put_u64(SYMS + 16, SYMS + 0x300);
    for (i, (name, info, value, size)) in
        [(0u32, 0u8, 0u64, 0u64), (1, 0x12, TEXT_B + 0x100, 0x40), (5, 0x11, TEXT_B + 0x2000, 8)]
            .iter()
            .enumerate()
    {
        let at = SYMS + 0x100 + 24 * i as u64;
        mem.put(at, &name.to_le_bytes());
        mem.put(at + 4, &[*info]);
        mem.put_u64(at + 8, *value);
        mem.put_u64(at + 16, *size);
    }
    mem.put(SYMS + 0x300, b"\0b_f\0b_v\0");
    // b's sections: .text and .data.
    mem.put_u64(B + 0xd8, SECTS);
    mem.put(SECTS + 0x20, &2u32.to_le_bytes());
    for (i, (name_at, addr)) in [(SECTS + 0x200, TEXT_B), (SECTS + 0x210, TEXT_B + 0x2000)].iter().enumerate()
    {
        let at = SECTS + 0x28 + 0x48 * i as u64;
        mem.put_u64(at, *name_at);
        mem.put_u64(at + 0x40, *addr);
    }
    mem.put(SECTS + 0x200, b".text\0");
    mem.put(SECTS + 0x210, b".data\0");
    (mem, types(new))
}

#[test]
fn the_list_reads_as_proc_modules_prints_it_in_both_layouts() {
    for new in [false, true] {
        let (mut mem, t) = machine(new);
        let l = ModuleLayout::from_types(&t).unwrap();
        let list = read_modules(&mut mem, HEAD, &l).unwrap();
        assert_eq!(list.stopped, None);
        assert_eq!(
            proc_modules(&list),
            "a 12288 0 - Live 0xffffffffc0000000\n\
             b 8192 1 a, Live 0xffffffffc0004000 (OE)\n",
            "new layout: {new}"
        );
        let b = &list.modules[1];
        assert_eq!(b.addr, B);
        assert_eq!(b.text, (TEXT_B, TEXT_B + if new { 0x1000 } else { 0x800 }));
        let table = lsmod(&list);
        assert!(table.lines().next().unwrap().starts_with("Module"), "{table}");
        assert!(table.contains("1 a") && table.contains("(OE)"), "{table}");
    }
}

#[test]
fn states_permanence_and_missing_fields_are_shown_not_invented() {
    let (mut mem, t) = machine(false);
    mem.put(B, &2u32.to_le_bytes());
    mem.put_u64(A + 0xc0, 0);
    let l = ModuleLayout::from_types(&t).unwrap();
    let text = proc_modules(&read_modules(&mut mem, HEAD, &l).unwrap());
    assert!(text.contains("a 12288 0 [permanent], Live"), "{text}");
    assert!(text.contains("b 8192 1 a, Unloading"), "{text}");
    // An unformed module is not in /proc/modules.
    mem.put(A, &3u32.to_le_bytes());
    let text = proc_modules(&read_modules(&mut mem, HEAD, &l).unwrap());
    assert!(!text.contains("a 12288"), "{text}");
    // A layout without refcnt, users and state: '?', not 0.
    let mut small = TypeMap::new("small");
    for (ty, path, off, size) in [
        ("module", "list", 8, 16),
        ("module", "name", 24, 56),
        ("module", "core_layout.base", 0x80, 8),
        ("module", "core_layout.size", 0x88, 4),
    ] {
        small.insert_member(ty, path, off, size);
    }
    let l = ModuleLayout::from_types(&small).unwrap();
    let text = proc_modules(&read_modules(&mut mem, HEAD, &l).unwrap());
    assert!(text.contains("a 12288 ? ? ? 0xffffffffc0000000"), "{text}");
    small.members.remove(&("module".to_string(), "core_layout.size".to_string()));
    small.insert_member("module", "core_layout.text_size", 0x8c, 4);
    let l = ModuleLayout::from_types(&small).unwrap();
    let text = proc_modules(&read_modules(&mut mem, HEAD, &l).unwrap());
    assert!(text.contains("a ? ? ? ? 0xffffffffc0000000"), "{text}");
}

#[test]
fn a_looping_or_broken_list_ends_with_a_clear_reason() {
    let (mut mem, t) = machine(false);
    let l = ModuleLayout::from_types(&t).unwrap();
    // b points back to a instead of the head.
    mem.put_u64(B + 8, A + 8);
    let list = read_modules(&mut mem, HEAD, &l).unwrap();
    assert_eq!(list.modules.len(), 2);
    let why = list.stopped.clone().unwrap();
    assert!(why.contains("loops back to 0xffffffffc0101008 after 2 modules"), "{why}");
    assert!(proc_modules(&list).contains("incomplete: "));
    // A pointer out of memory: the modules before it, and the address.
    mem.put_u64(B + 8, 0xffff_8880_dead_0008);
    let list = read_modules(&mut mem, HEAD, &l).unwrap();
    assert_eq!(list.modules.len(), 2);
    assert!(list.stopped.unwrap().contains("0xffff8880dead0000"));
    // A head that does not read is an error naming it.
    let e = read_modules(&mut mem, 0xffff_8880_0000_0000, &l).unwrap_err().to_string();
    assert!(e.contains("the modules list head at 0xffff888000000000"), "{e}");
    // A users list that loops is bounded.
    let (mut mem, _) = machine(false);
    mem.put_u64(USE, USE);
    let list = read_modules(&mut mem, HEAD, &l).unwrap();
    assert!(list.stopped.unwrap().contains("source_list at 0xffffffffc01020a8 loops"));
    // No modules.
    mem.put_u64(HEAD, HEAD);
    let list = read_modules(&mut mem, HEAD, &l).unwrap();
    assert_eq!(lsmod(&list), "no modules loaded\n");
    assert_eq!(proc_modules(&list), "");
}

#[test]
fn symbols_name_module_code_as_the_kernel_prints_it() {
    let (mut mem, t) = machine(true);
    let l = ModuleLayout::from_types(&t).unwrap();
    let list = read_modules(&mut mem, HEAD, &l).unwrap();
    let b = &list.modules[1];
    let syms = b.symbols(&mut mem, &l).unwrap();
    assert_eq!(
        syms.iter().map(|s| (s.name.as_str(), s.func)).collect::<Vec<_>>(),
        [("b_f", true), ("b_v", false)]
    );
    assert_eq!(
        name_in_modules(&mut mem, &list.modules, &l, TEXT_B + 0x11c).as_deref(),
        Some("b_f+0x1c/0x40 [b]")
    );
    assert_eq!(name_in_modules(&mut mem, &list.modules, &l, TEXT_B + 0x180).as_deref(), Some("[b]+0x180"));
    assert_eq!(name_in_modules(&mut mem, &list.modules, &l, TEXT_B + 0x1000), None);
    // A count past the bound is refused with the address.
    mem.put(SYMS + 8, &(u32::MAX).to_le_bytes());
    let e = b.symbols(&mut mem, &l).unwrap_err().to_string();
    assert!(e.contains("claims 4294967295 symbols"), "{e}");
    assert_eq!(b.symbol_at(&mut mem, &l, TEXT_B + 0x11c), None);
}

#[test]
fn sections_follow_the_ko_files_alloc_order_for_gdb() {
    let (mut mem, t) = machine(false);
    let l = ModuleLayout::from_types(&t).unwrap();
    let list = read_modules(&mut mem, HEAD, &l).unwrap();
    let b = &list.modules[1];
    let sections = b.sections(&mut mem, &l).unwrap();
    assert_eq!(sections, [(".text".to_string(), TEXT_B), (".data".to_string(), TEXT_B + 0x2000)]);
    // The file has .modinfo between them, which the kernel does not keep: counted at the lowest
    // address.
    let ko = KoSections {
        path: PathBuf::from("b.ko"),
        alloc: vec![".text".into(), ".modinfo".into(), ".data".into()],
    };
    let xml = library_list(&[
        Library { name: "b".into(), sections: sections.clone(), file: Some(ko) },
        Library { name: "a&".into(), sections: vec![], file: None },
    ]);
    assert_eq!(
        xml,
        "<library-list version=\"1.0\">\n  <library name=\"b.ko\"><section address=\"0xffffffffc0004000\"/>\
         <section address=\"0xffffffffc0004000\"/><section address=\"0xffffffffc0006000\"/></library>\n  \
         <library name=\"a&#38;.ko\"></library>\n</library-list>\n"
    );
    mem.put(SECTS + 0x20, &100_000u32.to_le_bytes());
    let e = b.sections(&mut mem, &l).unwrap_err().to_string();
    assert!(e.contains("claim 100000 sections"), "{e}");
    mem.put_u64(B + 0xd8, 0);
    assert!(b.sections(&mut mem, &l).unwrap_err().to_string().contains("sect_attrs is NULL"));
}

#[test]
fn taints_print_as_module_flags_does() {
    assert_eq!(taint_letters(0), "");
    assert_eq!(taint_letters((1 << 12) | (1 << 13)), "OE");
    assert_eq!(taint_letters(1 | (1 << 9) | (1 << 10) | (1 << 18)), "PCN");
}

#[test]
fn the_ko_index_finds_files_by_module_name() {
    let dir = std::env::temp_dir().join(format!("dmastub-ko-index-{}", std::process::id()));
    let sub = dir.join("kernel/sound");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("snd-hda-intel.ko"), b"").unwrap();
    let idx = KoIndex::new(std::slice::from_ref(&dir));
    assert_eq!(idx.find("snd_hda_intel"), Some(sub.join("snd-hda-intel.ko").as_path()));
    assert_eq!(idx.find("dummy"), None);
    let _ = std::fs::remove_dir_all(&dir);
}
