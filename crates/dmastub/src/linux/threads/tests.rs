//! The thread list, registers and panic reconstruction over synthetic memory.

use super::*;

fn prstatus(pid: i32, values: [u64; 27]) -> Vec<u8> {
    let mut d = vec![0u8; 336];
    d[32..36].copy_from_slice(&pid.to_le_bytes());
    for (i, v) in values.iter().enumerate() {
        d[112 + i * 8..120 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    d
}

#[test]
fn prstatus_registers_land_in_gdb_order() {
    let vals: [u64; 27] = std::array::from_fn(|i| 0x100 + i as u64);
    let (pid, regs) = parse_prstatus(&prstatus(7, vals)).unwrap();
    assert_eq!(pid, 7);
    assert_eq!(regs.get(reg::R15), Some(0x100));
    assert_eq!(regs.get(reg::RBX), Some(0x105));
    assert_eq!(regs.get(reg::RIP), Some(0x110));
    assert_eq!(regs.get(reg::RSP), Some(0x113));
    assert_eq!(regs.get(reg::GS_BASE), Some(0x116));
    assert_eq!(regs.get(reg::GS), Some(0x11a));
    assert!(parse_prstatus(&[0u8; 200]).is_none(), "a short note is no register set");
}

#[test]
fn notes_map_to_cpus_by_gs_base_then_order() {
    let cpus = Cpus { offsets: vec![0x1000, 0x2000], ..Cpus::default() };
    let mut a = [0u64; 27];
    a[22] = 0x2000; // gs_base: cpu1
    a[16] = 0xaa;
    let mut b = [0u64; 27];
    b[22] = 0x7fff_0000; // a user gs_base: falls back to QEMU's order
    b[16] = 0xbb;
    let notes = vec![
        CoreNote { name: "CORE".into(), n_type: 1, desc: prstatus(1, a) },
        CoreNote { name: "CORE".into(), n_type: 1, desc: prstatus(2, b) },
        CoreNote { name: "QEMU".into(), n_type: 0, desc: vec![] },
    ];
    let m = note_registers(&notes, &cpus, &|_| None);
    assert_eq!(m[&1].pc(), Some(0xaa));
    assert_eq!(m.get(&0), None, "note 1 is cpu1 by QEMU's order too, and cpu1 is taken");
    // kdump (no QEMU notes): pr_pid names the running task.
    let kdump: Vec<CoreNote> = notes[1..2].to_vec();
    let m = note_registers(&kdump, &cpus, &|c| (c == 0).then_some(2));
    assert_eq!(m[&0].pc(), Some(0xbb));
}

#[test]
fn crash_notes_in_memory_give_the_registers_of_each_cpu_that_saved_them() {
    use crate::VirtAddr;
    use crate::mmu::{AddressSpace, MmuConfig, PageSize, Paging, bits};
    use crate::testing::page_tables::PageTableBuilder;
    const DIRECT: u64 = 0xffff_8880_0000_0000;
    let mut b = PageTableBuilder::new(Paging::Level4, 8 << 20);
    b.set_table_area((6u64 << 20).into(), (8u64 << 20).into()).unwrap();
    for off in (0..(6u64 << 20)).step_by(2 << 20) {
        b.map(VirtAddr(DIRECT + off), off.into(), PageSize::Size2M, bits::WRITABLE).unwrap();
    }
    // `crash_notes` holds a per-CPU offset; CPU n's note is at it plus __per_cpu_offset[n].
    let (symbol, percpu) = (0x1000u64, 0x8000u64);
    let offsets = vec![DIRECT + 0x10_0000, DIRECT + 0x20_0000];
    b.write_u64(symbol.into(), percpu).unwrap();
    let mut values = [0u64; 27];
    values[16] = 0xffff_ffff_8100_1234; // rip
    values[19] = 0xffff_c900_0001_3f00; // rsp
    let mut note = Vec::new();
    for w in [5u32, 336, 1] {
        note.extend_from_slice(&w.to_le_bytes());
    }
    note.extend_from_slice(b"CORE\0\0\0\0");
    note.extend_from_slice(&prstatus(7, values));
    b.write_bytes((0x10_0000 + percpu).into(), &note).unwrap();
    // CPU 1 never saved one: its note is zeros.
    let cr3 = b.root();
    let mut space = AddressSpace::new(Box::new(b.into_mem("synthetic")), MmuConfig::new(Paging::Level4));
    let mut view = View::new(&mut space, cr3);
    let cpus = Cpus { offsets, ..Cpus::default() };
    let m = crash_note_registers(&mut view, Some(DIRECT + symbol), &cpus);
    assert_eq!(m[&0].pc(), Some(0xffff_ffff_8100_1234));
    assert_eq!(m[&0].get(reg::RSP), Some(0xffff_c900_0001_3f00));
    assert!(!m.contains_key(&1), "a zeroed note is no register set");
    assert!(crash_note_registers(&mut view, None, &cpus).is_empty());
}

#[test]
fn thread_ids_are_pid_plus_one_and_idle_tasks_apart() {
    assert_eq!(thread_id(0, Some(0)), 1);
    assert_eq!(thread_id(121, None), 122);
    assert_eq!(thread_id(0, Some(1)), IDLE_TID_BASE + 1);
    assert!(thread_id(i32::MAX, None) > 0);
    assert!(thread_id(-5, None) == 1, "a corrupt negative pid still gives a valid id");
}

fn thread(
    pid: i32,
    idle_of: Option<u32>,
    running_on: Option<u32>,
    panicking: bool,
    pc: Option<u64>,
) -> Thread {
    let mut regs = Regs::default();
    regs[reg::RIP] = pc;
    Thread {
        tid: thread_id(pid, idle_of),
        task: Task {
            addr: 0x1000 * pid as u64,
            pid,
            tgid: pid,
            ppid: None,
            comm: format!("t{pid}"),
            state: 'S',
            flags: None,
            mm: None,
            cr3: None,
        },
        idle_of,
        running_on,
        panicking,
        regs,
        origin: RegsOrigin::SwitchFrame,
        stack: None,
        cr3: 0,
    }
}

#[test]
fn a_pid_names_its_thread_and_pid_0_cpu0s_idle_task() {
    let mut list = ThreadList {
        threads: vec![
            thread(0, Some(1), None, false, None),
            thread(0, Some(0), None, false, None),
            thread(7, None, None, false, None),
        ],
        ..ThreadList::default()
    };
    list.index();
    assert_eq!(list.by_pid(0).unwrap().tid, 1);
    assert_eq!(list.by_pid(7).unwrap().tid, 8);
    let e = list.by_pid(u64::MAX).unwrap_err().to_string();
    assert!(e.contains("no task with pid 18446744073709551615 among the 3"), "{e}");
}

#[test]
fn the_panicking_task_comes_first_and_the_first_has_a_pc() {
    let mut v = vec![
        thread(1, None, None, false, Some(1)),
        thread(0, Some(0), None, false, Some(2)),
        thread(5, None, Some(0), true, Some(3)),
    ];
    order(&mut v);
    assert_eq!(v.iter().map(|t| t.task.pid).collect::<Vec<_>>(), [5, 0, 1]);
    let mut v = vec![thread(1, None, None, false, Some(1)), thread(0, Some(0), Some(0), false, None)];
    order(&mut v);
    assert_eq!(v[0].task.pid, 1, "a thread without a pc cannot be gdb's first");
    assert_eq!(v[0].describe(), "pid 1 t1 S");
    let p = thread(121, None, Some(0), true, Some(3));
    assert_eq!(p.describe(), "pid 121 t121 S [cpu0, panicking]");
}

#[test]
fn prstatus_round_trips_and_unknown_registers_are_zero() {
    let mut regs = Regs::default();
    regs[reg::RIP] = Some(0xffff_ffff_8100_0000);
    regs[reg::RSP] = Some(0xffff_c900_0001_3f00);
    regs[reg::GS_BASE] = Some(0x1234);
    let desc = encode_prstatus(77, &regs);
    assert_eq!(desc.len(), PRSTATUS_SIZE);
    let (pid, back) = parse_prstatus(&desc).unwrap();
    assert_eq!(pid, 77);
    assert_eq!(back.get(reg::RIP), regs.get(reg::RIP));
    assert_eq!(back.get(reg::RSP), regs.get(reg::RSP));
    assert_eq!(back.get(reg::GS_BASE), Some(0x1234));
    assert_eq!(back.get(reg::RAX), Some(0), "an unknown register is written as 0");
}
