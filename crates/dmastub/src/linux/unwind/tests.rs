use super::orc::{FrameKind, OrcEntry, OrcTable, orc_reg};
use super::walk::check_sp;
use super::*;
use crate::linux::Member;
use crate::linux::TypeMap;
use crate::linux::threads::{PT_REGS_WORDS, THREAD_SIZE};
use crate::testing::{FakeMemory, XorShift};

const TEXT: u64 = 0xffff_ffff_8100_0000;
const ORC: u64 = 0xffff_ffff_8200_0000;
const ORC_ENTRIES: u64 = ORC + 0x1000;
const STACK: u64 = 0xffff_c900_0001_0000;
const S0: u64 = STACK + 0x3000;
const F_A: u64 = TEXT;
const F_B: u64 = TEXT + 0x100;
const ENTRY: u64 = TEXT + 0x200;
const F_C: u64 = TEXT + 0x300;
const FORK: u64 = TEXT + 0x400;
const H: u64 = TEXT + 0x600;
const SWITCH: u64 = TEXT + 0x700;
const PARTIAL: u64 = TEXT + 0x800;
/// An IRQ stack, above the task's.
const IRQ: u64 = 0xffff_c900_0020_0000;
/// A module's text, and its `struct module` and tables.
const MOD: u64 = 0xffff_ffff_c000_0000;
const MODS: u64 = 0xffff_ffff_c010_0000;

/// Kernel memory in a few regions; anything else does not read.
/// Zeroed memory at the tables, the task's stack, an IRQ stack and the modules; nothing else.
fn sparse() -> FakeMemory {
    FakeMemory::new()
        .with_region(ORC, vec![0; 0x2000])
        .with_region(STACK, vec![0; THREAD_SIZE as usize])
        .with_region(IRQ, vec![0; 0x1000])
        .with_region(MODS, vec![0; 0x1000])
}

/// `struct orc_entry` as BTF describes it: before 6.3 (`type:2, end:1`) or from 6.4
/// (`type:3, signal:1`). The bitfields live in a 4-byte unit at byte 4 of a 6-byte struct.
fn types(new: bool) -> TypeMap {
    let mut t = TypeMap::new("test BTF");
    t.insert_size("orc_entry", 6);
    let mut bits = |name: &str, bit: u32, width: u32| {
        t.members.insert(
            ("orc_entry".into(), name.into()),
            Member { offset: 4, size: 4, bitfield: Some((bit, width)) },
        );
    };
    bits("sp_reg", 0, 4);
    bits("bp_reg", 4, 4);
    if new {
        bits("type", 8, 3);
        bits("signal", 11, 1);
    } else {
        bits("type", 8, 2);
        bits("end", 10, 1);
    }
    t.insert_member("orc_entry", "sp_offset", 0, 2);
    t.insert_member("orc_entry", "bp_offset", 2, 2);
    t
}

/// What objtool would write for an entry, in either layout.
fn encode(new: bool, sp_reg: u8, sp_offset: i16, bp_reg: u8, bp_offset: i16, kind: FrameKind) -> [u8; 6] {
    let (sp_reg, code, flag) = match (new, kind) {
        (false, FrameKind::EndOfStack) => (orc_reg::UNDEFINED, 0, 1),
        (false, FrameKind::Undefined) => (orc_reg::UNDEFINED, 0, 0),
        (false, FrameKind::Call) => (sp_reg, 0, 0),
        (false, FrameKind::Regs) => (sp_reg, 1, 0),
        (false, FrameKind::RegsPartial) => (sp_reg, 2, 0),
        (true, FrameKind::Undefined) => (sp_reg, 0, 0),
        (true, FrameKind::EndOfStack) => (sp_reg, 1, 0),
        (true, FrameKind::Call) => (sp_reg, 2, 0),
        (true, FrameKind::Regs) => (sp_reg, 3, 1),
        (true, FrameKind::RegsPartial) => (sp_reg, 4, 1),
        (_, FrameKind::Unknown(k)) => (sp_reg, k, 0),
    };
    let mut e = [0u8; 6];
    e[0..2].copy_from_slice(&sp_offset.to_le_bytes());
    e[2..4].copy_from_slice(&bp_offset.to_le_bytes());
    e[4] = sp_reg | bp_reg << 4;
    e[5] = if new { code | flag << 3 } else { code | flag << 2 };
    e
}

#[test]
fn orc_entries_decode_in_both_layouts() {
    use super::orc::orc_reg::*;
    // Real entries: `CALL, sp = sp + 8, bp unchanged` from 6.1 and from 6.12.
    let old = OrcLayout::from_types(&types(false)).unwrap();
    let new = OrcLayout::from_types(&types(true)).unwrap();
    let call = OrcEntry {
        sp_offset: 8,
        bp_offset: 0,
        sp_reg: SP,
        bp_reg: UNDEFINED,
        kind: FrameKind::Call,
        signal: false,
    };
    assert_eq!(old.decode(&[8, 0, 0, 0, 5, 0]), call);
    assert_eq!(new.decode(&[8, 0, 0, 0, 5, 2]), call);
    // End of stack: sp undefined with `end` set, or type 1.
    assert_eq!(old.decode(&[0, 0, 0, 0, 0, 4]).kind, FrameKind::EndOfStack);
    assert_eq!(old.decode(&[0, 0, 0, 0, 0, 0]).kind, FrameKind::Undefined);
    assert_eq!(new.decode(&[0, 0, 0, 0, 0, 1]).kind, FrameKind::EndOfStack);
    assert_eq!(new.decode(&[0, 0, 0, 0, 0, 0]).kind, FrameKind::Undefined);
    for (is_new, layout) in [(false, &old), (true, &new)] {
        for kind in [FrameKind::Call, FrameKind::Regs, FrameKind::RegsPartial] {
            let e = layout.decode(&encode(is_new, BP, -16, PREV_SP, -24, kind));
            assert_eq!((e.sp_reg, e.sp_offset, e.bp_reg, e.bp_offset, e.kind), (BP, -16, PREV_SP, -24, kind));
            assert_eq!(e.signal, kind != FrameKind::Call, "{kind:?}: an entry frame's pc is exact");
        }
        let k = if is_new { 7 } else { 3 };
        assert_eq!(
            layout.decode(&encode(is_new, SP, 8, 0, 0, FrameKind::Unknown(k))).kind,
            FrameKind::Unknown(k)
        );
    }
    // The new layout's own signal bit decides, whatever the type.
    assert!(new.decode(&[8, 0, 0, 0, 5, 2 | 8]).signal);
    // A layout with neither bit, or fields past the struct's end, is refused by name.
    let mut odd = types(false);
    odd.members.remove(&("orc_entry".to_string(), "end".to_string()));
    let e = OrcLayout::from_types(&odd).unwrap_err().to_string();
    assert!(e.contains("neither") && e.contains("test BTF"), "{e}");
    odd.insert_size("orc_entry", 4);
    assert!(OrcLayout::from_types(&odd).unwrap_err().to_string().contains("does not fit"));
    assert!(
        OrcLayout::from_types(&TypeMap::new("empty"))
            .unwrap_err()
            .to_string()
            .contains("no struct orc_entry")
    );
}

/// A kernel with five functions, their ORC entries in `new` or the old layout, and a task
/// stack holding: f_a (a frame with rbp saved) called by f_b, called from entry code
/// that saved pt_regs, which interrupted f_c (a frame-pointer function), called from
/// ret_from_fork, the end of the stack.
fn machine(new: bool, user: bool) -> (FakeMemory, Kallsyms, Orc) {
    use super::orc::orc_reg::*;
    let mut mem = sparse();
    let entries = [
        (F_A, encode(new, SP, 16, PREV_SP, -16, FrameKind::Call)),
        (F_B, encode(new, SP, 8, UNDEFINED, 0, FrameKind::Call)),
        (ENTRY, encode(new, SP, 0, UNDEFINED, 0, FrameKind::Regs)),
        (F_C, encode(new, BP, 16, PREV_SP, -16, FrameKind::Call)),
        (FORK, encode(new, UNDEFINED, 0, UNDEFINED, 0, FrameKind::EndOfStack)),
        (TEXT + 0x500, encode(new, UNDEFINED, 0, UNDEFINED, 0, FrameKind::Undefined)),
        (H, encode(new, SP, 8, UNDEFINED, 0, FrameKind::Call)),
        (SWITCH, encode(new, SP_INDIRECT, 8, UNDEFINED, 0, FrameKind::Call)),
        (PARTIAL, encode(new, SP, 0, UNDEFINED, 0, FrameKind::RegsPartial)),
        (TEXT + 0x900, encode(new, UNDEFINED, 0, UNDEFINED, 0, FrameKind::Undefined)),
    ];
    for (i, (ip, e)) in entries.iter().enumerate() {
        let at = ORC + 4 * i as u64;
        mem.put(at, &((*ip as i64 - at as i64) as i32).to_le_bytes());
        mem.put(ORC_ENTRIES + 6 * i as u64, e);
    }
    mem.put_u64(S0, 0x5a5a); // f_a's saved rbp
    mem.put_u64(S0 + 8, F_B + 0x20); // f_a returns into f_b
    mem.put_u64(S0 + 16, ENTRY + 0x30); // f_b returns into the entry code
    let mut regs = [0u64; PT_REGS_WORDS];
    regs[4] = S0 + 0x200; // bp: f_c's frame pointer
    regs[16] = F_C + 8; // ip
    regs[17] = 0x10; // cs
    regs[19] = S0 + 0x200; // sp
    if user {
        (regs[16], regs[17], regs[19]) = (0x40_1000, 0x33, 0x7ffc_0000);
    }
    for (i, r) in regs.iter().enumerate() {
        mem.put_u64(S0 + 24 + 8 * i as u64, *r);
    }
    mem.put_u64(S0 + 0x200, 0x6b6b); // f_c's saved rbp
    mem.put_u64(S0 + 0x208, FORK + 5); // f_c returns into ret_from_fork
    let symbols = Kallsyms::from_pairs(
        [
            ("_stext", TEXT),
            ("f_a", F_A),
            ("f_b", F_B),
            ("entry_asm", ENTRY),
            ("f_c", F_C),
            ("ret_from_fork", FORK),
            ("h", H),
            ("switcher", SWITCH),
            ("partial_entry", PARTIAL),
            ("_etext", TEXT + 0x1000),
            ("modules", MODS + 0x700),
            ("__start_orc_unwind_ip", ORC),
            ("__stop_orc_unwind_ip", ORC + 4 * entries.len() as u64),
            ("__start_orc_unwind", ORC_ENTRIES),
            ("__stop_orc_unwind", ORC_ENTRIES + 6 * entries.len() as u64),
        ]
        .map(|(n, a)| (n.to_string(), a)),
    );
    let orc = Orc::load(&mut mem, &symbols, Some(&types(new))).expect("ORC tables");
    (mem, symbols, orc)
}

/// One module, `mymod`, whose function m_f (0x40 bytes at `MOD`) has its own ORC entry and
/// symbol, on the `modules` list at `MODS + 0x700`.
fn with_module(mem: &mut FakeMemory, new: bool) -> TypeMap {
    let mut t = types(new);
    for (ty, path, off, size) in [
        ("module", "list", 8, 16),
        ("module", "name", 24, 56),
        ("module", "core_layout.base", 0x80, 8),
        ("module", "core_layout.text_size", 0x88, 4),
        ("module", "arch.orc_unwind_ip", 0x90, 8),
        ("module", "arch.orc_unwind", 0x98, 8),
        ("module", "arch.num_orcs", 0xa0, 4),
        ("module", "kallsyms", 0xa8, 8),
        ("mod_kallsyms", "symtab", 0, 8),
        ("mod_kallsyms", "num_symtab", 8, 4),
        ("mod_kallsyms", "strtab", 16, 8),
    ] {
        t.insert_member(ty, path, off, size);
    }
    let head = MODS + 0x700;
    mem.put_u64(head, MODS + 8);
    mem.put_u64(MODS + 8, head);
    mem.put(MODS + 24, b"mymod\0");
    mem.put_u64(MODS + 0x80, MOD);
    mem.put(MODS + 0x88, &0x1000u32.to_le_bytes());
    mem.put_u64(MODS + 0x90, MODS + 0x200);
    mem.put_u64(MODS + 0x98, MODS + 0x300);
    mem.put(MODS + 0xa0, &2u32.to_le_bytes());
    mem.put_u64(MODS + 0xa8, MODS + 0x600);
    for (i, (ip, e)) in [
        (MOD, encode(new, orc_reg::SP, 8, 0, 0, FrameKind::Call)),
        (MOD + 0x40, encode(new, 0, 0, 0, 0, FrameKind::Undefined)),
    ]
    .iter()
    .enumerate()
    {
        let at = MODS + 0x200 + 4 * i as u64;
        mem.put(at, &((*ip as i64 - at as i64) as i32).to_le_bytes());
        mem.put(MODS + 0x300 + 6 * i as u64, e);
    }
    // Elf64_Sym m_f: name 1, STT_FUNC, value MOD, size 0x40; then the string table.
    let mut sym = [0u8; ELF_SYM_SIZE];
    sym[0] = 1;
    sym[4] = 0x12;
    sym[8..16].copy_from_slice(&MOD.to_le_bytes());
    sym[16..24].copy_from_slice(&0x40u64.to_le_bytes());
    mem.put(MODS + 0x400, &sym);
    mem.put(MODS + 0x500, b"\0m_f\0");
    mem.put_u64(MODS + 0x600, MODS + 0x400);
    mem.put(MODS + 0x608, &1u32.to_le_bytes());
    mem.put_u64(MODS + 0x610, MODS + 0x500);
    t
}

/// The walk went through `functions` to the end of the stack.
fn assert_walked(bt: &Backtrace, functions: &[&str]) {
    assert_eq!((bt.functions(), &bt.stopped), (functions.to_vec(), &None), "{}", bt.render());
}

fn start(ip: u64, sp: u64, stack: Option<u64>) -> Start {
    let mut regs = Regs::default();
    regs[reg::RIP] = Some(ip);
    regs[reg::RSP] = Some(sp);
    regs[reg::RBP] = Some(0xdead);
    regs[reg::CS] = Some(0x10);
    Start { regs, signal: false, full: false, stack }
}

#[test]
fn unwinds_calls_frame_pointers_and_entry_registers() {
    for new in [false, true] {
        let (mut mem, symbols, orc) = machine(new, false);
        let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
        assert_walked(&bt, &["f_a", "f_b", "entry_asm", "f_c", "ret_from_fork"]);
        assert_eq!(bt.frames[3], Frame::Entry { ip: F_C + 8, sp: S0 + 0x200, user: false });
        let text = bt.render();
        assert!(
            text.starts_with(
                "#0  0xffffffff81000010 f_a+0x10/0x100\n#1  0xffffffff81000120 f_b+0x20/0x100\n"
            ),
            "{text}"
        );
        assert!(text.contains("--- interrupt/exception entry: kernel rip 0xffffffff81000308"), "{text}");
        // After the entry the pc is exact: f_c+0x8 is named as it is.
        assert!(text.contains("#3  0xffffffff81000308 f_c+0x8/0x100"), "{text}");
    }
}

#[test]
fn an_interrupt_on_an_irq_stack_unwinds_back_to_the_task_stack() {
    for new in [false, true] {
        let (mut mem, symbols, orc) = machine(new, false);
        // h was called by the stack switcher on the IRQ stack, which saved the task's
        // stack pointer at the IRQ stack's top; the partial entry's interrupt frame there
        // says f_b was interrupted at f_b+0x20.
        let top = IRQ + 0xf00;
        let t1 = S0 - 0x100;
        mem.put_u64(top, SWITCH + 0x10);
        mem.put_u64(top + 8, t1);
        mem.put_u64(t1, PARTIAL + 0x10);
        for (i, v) in [F_B + 0x20, 0x10, 0x246, S0 + 16, 0x18].iter().enumerate() {
            mem.put_u64(t1 + 8 + 8 * i as u64, *v);
        }
        let bt = unwind(&mut mem, &symbols, &orc, &start(H + 0x10, top, Some(STACK)));
        assert_walked(&bt, &["h", "switcher", "partial_entry", "f_b", "entry_asm", "f_c", "ret_from_fork"]);
        assert_eq!(bt.frames[3], Frame::Entry { ip: F_B + 0x20, sp: S0 + 16, user: false });
    }
}

#[test]
fn a_cpus_exact_pc_is_looked_up_as_it_is() {
    // At f_b's first instruction: as a return address it would be f_a's last byte.
    let (mut mem, symbols, orc) = machine(true, false);
    let mut s = start(F_B, S0 + 16, Some(STACK));
    s.signal = true;
    let bt = unwind(&mut mem, &symbols, &orc, &s);
    assert_walked(&bt, &["f_b", "entry_asm", "f_c", "ret_from_fork"]);
    assert!(bt.render().starts_with("#0  0xffffffff81000100 f_b+0x0/0x100\n"));
}

#[test]
fn module_frames_use_the_modules_own_table_and_symbols() {
    for new in [false, true] {
        let (mut mem, symbols, _) = machine(new, false);
        let t = with_module(&mut mem, new);
        let orc = Orc::load(&mut mem, &symbols, Some(&t)).unwrap();
        let bt = unwind(&mut mem, &symbols, &orc, &start(MOD + 0x10, S0 + 8, Some(STACK)));
        assert_walked(&bt, &["m_f", "f_b", "entry_asm", "f_c", "ret_from_fork"]);
        assert!(bt.render().contains("m_f+0x10/0x40 [mymod]"), "{}", bt.render());
        // Without the module's layout: its code is named and the walk stops there.
        let orc = Orc::load(&mut mem, &symbols, Some(&types(new))).unwrap();
        let bt = unwind(&mut mem, &symbols, &orc, &start(MOD + 0x10, S0 + 8, Some(STACK)));
        assert_eq!(bt.functions(), ["??"]);
        let why = bt.stopped.unwrap().to_string();
        assert!(why.contains("in module code, no unwind table read"), "{why}");
    }
}

#[test]
fn entry_from_user_mode_ends_the_walk() {
    let (mut mem, symbols, orc) = machine(true, true);
    let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
    assert_eq!(bt.functions(), ["f_a", "f_b", "entry_asm"]);
    assert_eq!(bt.frames.last(), Some(&Frame::Entry { ip: 0x40_1000, sp: 0x7ffc_0000, user: true }));
    assert_eq!(bt.stopped, None);
    assert!(bt.render().contains("user mode: user rip 0x401000, rsp 0x7ffc0000"));
    // A CPU caught in user mode has no kernel stack to walk.
    let mut s = start(0x40_1000, 0x7ffc_0000, Some(STACK));
    s.regs[reg::CS] = Some(0x33);
    let bt = unwind(&mut mem, &symbols, &orc, &s);
    assert!(bt.functions().is_empty() && bt.stopped.unwrap().to_string().contains("user mode"));
}

#[test]
fn bad_stacks_stop_with_a_reason() {
    // A return address outside kernel text.
    let (mut mem, symbols, orc) = machine(false, false);
    mem.put_u64(S0 + 8, 0x1234);
    let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
    assert_eq!(bt.functions(), ["f_a", "??"]);
    assert!(
        bt.stopped
            .as_ref()
            .map(ToString::to_string)
            .as_deref()
            .unwrap()
            .contains("0x1234 is not kernel text"),
        "{:?}",
        bt.stopped
    );
    // A return address that leads back into the same frame: the stack pointer must rise.
    mem.put_u64(S0 + 8, F_A + 0x10);
    mem.put(ORC_ENTRIES, &encode(false, orc_reg::SP, 0, 0, 0, FrameKind::Call));
    let orc = Orc::load(&mut mem, &symbols, Some(&types(false))).unwrap();
    mem.put_u64(S0 - 8, F_A + 0x10);
    let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
    assert!(
        bt.stopped.as_ref().map(ToString::to_string).as_deref().unwrap().contains("down to"),
        "{:?}",
        bt.stopped
    );
    assert_eq!(bt.frames.len(), 1);
    // A stack pointer outside the task's stack, and one that is not a kernel address.
    let (mut mem, symbols, orc) = machine(false, false);
    mem.put_u64(S0 + 16, ENTRY + 0x30);
    mem.put_u64(S0 + 24 + 19 * 8, STACK + 0x8000);
    let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, S0, Some(STACK)));
    assert!(
        bt.stopped.as_ref().map(ToString::to_string).as_deref().unwrap().contains("left the task's stack"),
        "{:?}",
        bt.stopped
    );
    let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, 0x7fff_0000, Some(STACK)));
    assert!(
        bt.stopped.as_ref().map(ToString::to_string).as_deref().unwrap().contains("not a kernel address"),
        "{:?}",
        bt.stopped
    );
    // Unreadable stack: the error names what and where.
    let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, STACK + 0x10_0000, None));
    let why = bt.stopped.unwrap().to_string();
    assert!(why.contains("the return address at 0xffffc90000110008"), "{why}");
}

#[test]
fn a_recursion_stops_after_the_frame_limit() {
    let (mut mem, symbols, orc) = machine(false, false);
    // f_a returning into itself, each frame 16 bytes up the stack.
    for i in 0..(THREAD_SIZE / 16) {
        mem.put_u64(STACK + 16 * i + 8, F_A + 0x10);
    }
    let bt = unwind(&mut mem, &symbols, &orc, &start(F_A + 0x10, STACK, Some(STACK)));
    assert_eq!(bt.frames.len(), MAX_FRAMES);
    assert_eq!(bt.stopped.as_ref().map(ToString::to_string).as_deref(), Some("after 64 frames"));
}

#[test]
fn garbage_stacks_end_in_a_bounded_walk() {
    let mut rng = XorShift::new(0x2545_f491_4f6c_dd1d);
    let mut next = || rng.next_u64();
    for round in 0..200 {
        let (mut mem, symbols, orc) = machine(round % 2 == 0, false);
        // Words that are text addresses, stack addresses, small numbers or anything.
        for i in 0..THREAD_SIZE / 8 {
            let r = next();
            let w = match r % 4 {
                0 => TEXT + r % 0x1000,
                1 => STACK + r % (THREAD_SIZE + 0x100),
                2 => r % 0x100,
                _ => r,
            };
            mem.put_u64(STACK + 8 * i, w);
        }
        let sp = STACK + next() % THREAD_SIZE;
        let bt = unwind(&mut mem, &symbols, &orc, &start(TEXT + next() % 0x1000, sp, Some(STACK)));
        let frames = bt.frames.iter().filter(|l| matches!(l, Frame::Function { .. })).count();
        assert!((1..=MAX_FRAMES).contains(&frames), "{}", bt.render());
    }
}

#[test]
fn stack_switches_are_bounded_and_never_leave_the_task_stack_downwards() {
    let task = Some(STACK);
    let mut n = 0;
    // From an IRQ stack above the task's, down onto the task stack: allowed.
    assert!(check_sp(STACK + 0x10_0000, S0, task, &mut n).is_ok());
    assert_eq!(n, 1);
    // On the task stack, down is a loop; up past its top is leaving it.
    assert!(check_sp(S0, S0 - 8, task, &mut n).unwrap_err().to_string().contains("down to"));
    assert!(
        check_sp(S0, STACK + 0x5000, task, &mut n).unwrap_err().to_string().contains("left the task's stack")
    );
    // Between foreign stacks, a few switches at most.
    let mut n = 0;
    for _ in 0..MAX_STACK_SWITCHES {
        assert!(check_sp(0xffff_8000_0010_0000, 0xffff_8000_0000_1000, None, &mut n).is_ok());
    }
    assert!(check_sp(0xffff_8000_0010_0000, 0xffff_8000_0000_1000, None, &mut n).is_err());
}

#[test]
fn tables_are_bounded_and_sorted() {
    let layout = OrcLayout::from_types(&types(false)).unwrap();
    let mut mem = sparse();
    let e = OrcTable::read(&mut mem, &layout, ORC, ORC_ENTRIES, 0, "vmlinux").unwrap_err().to_string();
    assert!(e.contains("0 entries"), "{e}");
    let e = OrcTable::read(&mut mem, &layout, ORC, ORC_ENTRIES, 1 << 40, "vmlinux").unwrap_err().to_string();
    assert!(e.contains("not a plausible size"), "{e}");
    // Offsets are relative to each entry: 0x100 then 0x100 from 4 bytes further is sorted,
    // a drop back is not.
    mem.put(ORC, &[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    let t = OrcTable::read(&mut mem, &layout, ORC, ORC_ENTRIES, 2, "vmlinux").unwrap();
    assert_eq!(t.ips, [ORC + 0x100, ORC + 0x104]);
    let e = OrcTable::read(&mut mem, &layout, ORC, ORC_ENTRIES, 3, "vmlinux").unwrap_err().to_string();
    assert!(e.contains("not sorted at entry 2"), "{e}");
    let e =
        OrcTable::read(&mut mem, &layout, ORC + 0x1ff0, ORC_ENTRIES, 16, "module x").unwrap_err().to_string();
    assert!(e.contains("module x's ORC ip table at 0xffffffff82001ff0"), "{e}");
    // Symbols missing, or tables of different lengths.
    let e = Orc::load(&mut mem, &Kallsyms::default(), Some(&types(false))).err().unwrap().to_string();
    assert!(e.contains("no ORC tables"), "{e}");
    let (mut mem, symbols, _) = machine(false, false);
    let mut pairs: Vec<(String, u64)> = symbols.iter().map(|(n, a)| (n.to_string(), a)).collect();
    pairs.retain(|(n, _)| n != "__stop_orc_unwind");
    pairs.push(("__stop_orc_unwind".into(), ORC_ENTRIES + 7));
    let e = Orc::load(&mut mem, &Kallsyms::from_pairs(pairs), Some(&types(false))).err().unwrap().to_string();
    assert!(e.contains("disagree"), "{e}");
}

#[test]
fn missing_layouts_and_symbols_suggest_hints_as_data_not_flags() {
    use crate::linux::{Hint, LinuxError, render_remedies};
    let (mut mem, symbols, _) = machine(false, false);
    let e = Orc::load(&mut mem, &symbols, None).err().expect("no layout, no tables");
    assert_eq!(e, UnwindError::NoTypes);
    assert!(!e.to_string().contains("--"), "the library names no flag: {e}");
    let linux = LinuxError::from(e);
    assert_eq!(render_remedies(linux.remedies(), Hint::describe), "give a BTF file, or a profile");
    let named =
        render_remedies(linux.remedies(), |h| if h == Hint::Btf { "--btf FILE" } else { "--profile NAME" });
    assert_eq!(named, "give --btf FILE, or --profile NAME");

    let bare = Kallsyms::default();
    let e = Orc::load(&mut mem, &bare, Some(&types(false))).err().expect("no ORC symbols");
    assert_eq!(e, UnwindError::NoOrcSymbols);
    assert_eq!(e.remedies(), &[&[Hint::SystemMap][..], &[Hint::Vmlinux][..]]);
}
