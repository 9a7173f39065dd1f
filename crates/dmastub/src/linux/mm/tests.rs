//! Memory maps of a synthetic machine with a pre-6.1 layout (the `mm->mmap` list): paths across
//! mounts, deleted files, escaped names, names outside the dentry, `[heap]`/`[stack]`, a list
//! that loops, a kernel thread.

use super::layout::MmLayout;
use super::read::process_maps;
use super::{MapsError, VM_EXEC, VM_MAYSHARE, VM_READ, VM_WRITE, render};
use crate::VirtAddr;
use crate::linux::View;
use crate::linux::kallsyms::Kallsyms;
use crate::linux::layout::TypeMap;
use crate::linux::tasks::Task;
use crate::mmu::{AddressSpace, MmuConfig, PageSize, Paging, bits};
use crate::testing::page_tables::PageTableBuilder;

const DIRECT: u64 = 0xffff_8880_0000_0000;
const MEM: usize = 8 << 20;

fn types() -> TypeMap {
    let mut t = TypeMap::new("test layout");
    let mut m = |ty: &str, f: &str, off: u64, size: u64| t.insert_member(ty, f, off, size);
    m("task_struct", "fs", 0x30, 8);
    m("fs_struct", "root", 0x8, 16);
    m("path", "mnt", 0, 8);
    m("path", "dentry", 8, 8);
    for (i, f) in [
        "mmap",
        "pgd",
        "start_code",
        "end_code",
        "start_data",
        "end_data",
        "start_brk",
        "brk",
        "start_stack",
        "arg_start",
        "arg_end",
        "env_start",
        "env_end",
    ]
    .iter()
    .enumerate()
    {
        m("mm_struct", f, 8 * i as u64, 8);
    }
    m("mm_struct", "saved_auxv", 0x68, 0x40);
    for (f, off) in [
        ("vm_start", 0),
        ("vm_end", 8),
        ("vm_next", 0x10),
        ("vm_flags", 0x18),
        ("vm_pgoff", 0x20),
        ("vm_file", 0x28),
        ("vm_ops", 0x30),
        ("vm_private_data", 0x38),
    ] {
        m("vm_area_struct", f, off, 8);
    }
    m("file", "f_path", 0x10, 16);
    m("file", "f_inode", 0x20, 8);
    m("inode", "i_sb", 0x28, 8);
    m("inode", "i_ino", 0x40, 8);
    m("super_block", "s_dev", 0x10, 4);
    m("dentry", "d_hash", 0x8, 16);
    m("hlist_bl_node", "pprev", 8, 8);
    m("dentry", "d_parent", 0x18, 8);
    m("dentry", "d_name", 0x20, 16);
    m("qstr", "len", 4, 4);
    m("qstr", "name", 8, 8);
    m("dentry", "d_inode", 0x30, 8);
    m("dentry", "d_iname", 0x38, 32);
    m("dentry", "d_op", 0x60, 8);
    m("mount", "mnt_parent", 0x10, 8);
    m("mount", "mnt_mountpoint", 0x18, 8);
    m("mount", "mnt", 0x20, 16);
    m("vfsmount", "mnt_root", 0, 8);
    t
}

/// Objects at physical `i * 0x1000 + 1 MiB`, mapped at `DIRECT`.
fn at(i: u64) -> u64 {
    DIRECT + (1 << 20) + i * 0x1000
}

struct Machine {
    b: PageTableBuilder,
}

impl Machine {
    fn new() -> Self {
        let mut b = PageTableBuilder::new(Paging::Level4, MEM);
        b.set_table_area((6u64 << 20).into(), (MEM as u64).into()).unwrap();
        for off in (0..(6u64 << 20)).step_by(2 << 20) {
            b.map(VirtAddr(DIRECT + off), off.into(), PageSize::Size2M, bits::WRITABLE).unwrap();
        }
        Self { b }
    }
    fn u64(&mut self, virt: u64, v: u64) {
        self.b.write_u64((virt - DIRECT).into(), v).unwrap();
    }
    fn bytes(&mut self, virt: u64, v: &[u8]) {
        self.b.write_bytes((virt - DIRECT).into(), v).unwrap();
    }
    /// A dentry named `name` (inline when short, else at `at(90)`), hashed or not.
    fn dentry(&mut self, d: u64, parent: u64, name: &[u8], hashed: bool) {
        self.u64(d + 0x10, if hashed { d + 0x400 } else { 0 });
        self.u64(d + 0x18, parent);
        self.u64(d + 0x20, (name.len() as u64) << 32);
        let ptr = if name.len() < 32 { d + 0x38 } else { at(90) };
        self.bytes(ptr, name);
        self.u64(d + 0x28, ptr);
    }
    /// A VMA: `[start, end, flags, pgoff, file, next]`.
    fn vma(&mut self, v: u64, f: [u64; 6]) {
        let [start, end, flags, pgoff, file, next] = f;
        for (off, val) in [(0, start), (8, end), (0x10, next), (0x18, flags), (0x20, pgoff), (0x28, file)] {
            self.u64(v + off, val);
        }
    }
}

/// The machine: mount M1 (root R1 "/"), mount M2 on /mnt/data (root R2); file F1 is
/// /mnt/data/<long name> on device 8:1, F2 an unlinked "/gone\nx" on M1.
fn build(loop_list: bool) -> (Machine, Task) {
    let mut m = Machine::new();
    let (task, fs, mm) = (at(0), at(1), at(2));
    let (v1, v2, v3, v4) = (at(3), at(4), at(5), at(6));
    let (f1, f2, i1, sb) = (at(7), at(8), at(9), at(10));
    let (m1, m2) = (at(11), at(12));
    let (r1, mnt_d, data_d, r2, lib_d, gone_d) = (at(13), at(14), at(15), at(16), at(17), at(18));
    // Task's root: (M1, R1).
    m.u64(task + 0x30, fs);
    m.u64(fs + 0x8, m1 + 0x20);
    m.u64(fs + 0x10, r1);
    // mm: list head, pgd (any mapped address), brk and stack, auxv.
    m.u64(mm, v1);
    m.u64(mm + 0x8, DIRECT + 0x10_0000);
    for (i, v) in [0x400000u64, 0x401000, 0x401000, 0x402000, 0x500000, 0x501000, 0x7ffff0].iter().enumerate()
    {
        m.u64(mm + 0x10 + 8 * i as u64, *v);
    }
    m.u64(mm + 0x68, 6);
    m.u64(mm + 0x70, 4096);
    m.vma(v1, [0x400000, 0x401000, VM_READ | VM_EXEC, 0, f1, v2]);
    m.vma(v2, [0x401000, 0x402000, VM_READ | VM_WRITE | VM_MAYSHARE, 2, f2, v3]);
    m.vma(v3, [0x500000, 0x501000, VM_READ | VM_WRITE, 0x500, 0, v4]);
    m.vma(v4, [0x7ff000, 0x800000, VM_READ | VM_WRITE, 0x7ff, 0, if loop_list { v2 } else { 0 }]);
    // Files, inode, super block (dev 8:1).
    m.u64(f1 + 0x10, m2 + 0x20);
    m.u64(f1 + 0x18, lib_d);
    m.u64(f1 + 0x20, i1);
    m.u64(f2 + 0x10, m1 + 0x20);
    m.u64(f2 + 0x18, gone_d);
    m.u64(f2 + 0x20, i1);
    m.u64(i1 + 0x28, sb);
    m.u64(i1 + 0x40, 77);
    m.bytes(sb + 0x10, &((8u32 << 20) | 1).to_le_bytes());
    // Mounts: M1 is the namespace root (its own parent); M2 sits on "data" in M1.
    m.u64(m1 + 0x10, m1);
    m.u64(m1 + 0x20, r1);
    m.u64(m2 + 0x10, m1);
    m.u64(m2 + 0x18, data_d);
    m.u64(m2 + 0x20, r2);
    m.dentry(r1, r1, b"/", true);
    m.dentry(mnt_d, r1, b"mnt", true);
    m.dentry(data_d, mnt_d, b"data", true);
    m.dentry(r2, r2, b"/", true);
    m.dentry(lib_d, r2, b"libsomething-with-a-long-name.so.6", true);
    m.dentry(gone_d, r1, b"gone\nx", false);
    let t = Task {
        addr: task,
        pid: 42,
        tgid: 42,
        ppid: None,
        comm: "prog".into(),
        state: 'S',
        flags: Some(0),
        mm: Some(mm),
        cr3: None,
    };
    (m, t)
}

fn run(m: Machine, task: &Task) -> Result<super::ProcessMaps, MapsError> {
    let root = m.b.root();
    let mut space = AddressSpace::new(Box::new(m.b.into_mem("mm")), MmuConfig::new(Paging::Level4));
    let mut view = View::new(&mut space, root);
    let l = MmLayout::from_types(&types())?;
    process_maps(&mut view, &l, &Kallsyms::from_pairs(Vec::new()), task)
}

#[test]
fn paths_across_mounts_deleted_escaped_heap_and_stack() {
    let (m, t) = build(false);
    let maps = run(m, &t).expect("maps");
    assert!(maps.problems.is_empty(), "{:?}", maps.problems);
    assert_eq!(maps.cr3, 0x10_0000);
    assert_eq!(maps.mm.saved_auxv, vec![(6, 4096), (0, 0)]);
    assert_eq!(
        render::maps(&maps),
        "00400000-00401000 r-xp 00000000 08:01 77                                 /mnt/data/libsomething-with-a-long-name.so.6\n\
         00401000-00402000 rw-s 00002000 08:01 77                                 /gone\\012x (deleted)\n\
         00500000-00501000 rw-p 00000000 00:00 0                                  [heap]\n\
         007ff000-00800000 rw-p 00000000 00:00 0                                  [stack]\n"
    );
}

#[test]
fn a_looping_vma_list_stops_and_says_where() {
    let (m, t) = build(true);
    let maps = run(m, &t).expect("maps");
    assert_eq!(maps.vmas.len(), 4);
    assert!(
        maps.problems.iter().any(|p| p.contains("loops back to") && p.contains(&format!("{:#x}", at(4))))
    );
    assert!(render::maps(&maps).lines().last().unwrap().starts_with("# "));
}

#[test]
fn a_dentry_chain_that_loops_is_an_error_not_a_hang() {
    let (mut m, t) = build(false);
    // "data"'s parent is "mnt", whose parent is now "data": never reaching the root.
    let (mnt_d, data_d) = (at(14), at(15));
    m.u64(mnt_d + 0x18, data_d);
    // F1's mount is unreadable as a mount root: point M2's root elsewhere so the walk climbs.
    m.u64(at(12) + 0x20, at(60));
    m.dentry(at(16), data_d, b"x", true);
    let maps = run(m, &t).expect("maps");
    assert_eq!(maps.vmas[0].file.as_ref().unwrap().path, "?");
    assert!(maps.problems.iter().any(|p| p.contains("loops")), "{:?}", maps.problems);
}

#[test]
fn kernel_threads_and_unreadable_mm() {
    let (m, mut t) = build(false);
    t.flags = Some(crate::linux::tasks::PF_KTHREAD);
    t.mm = Some(0);
    assert!(matches!(run(m, &t), Err(MapsError::KernelThread { pid: 42, .. })));
    let (m, mut t) = build(false);
    t.mm = Some(0);
    let e = run(m, &t).unwrap_err();
    assert_eq!(e.to_string(), "pid 42 (prog) has no memory map: its mm is gone (it has exited)");
    let (m, mut t) = build(false);
    t.mm = Some(0xffff_c900_0000_0000);
    let e = run(m, &t).unwrap_err();
    assert!(e.to_string().contains("mm_struct at 0xffffc90000000000 could not be read"), "{e}");
}
