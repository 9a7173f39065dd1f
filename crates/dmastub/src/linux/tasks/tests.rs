//! The task list over synthetic machines: layouts, lists that loop, threads, budgets.

mod list {
    use super::super::*;
    use crate::VirtAddr;
    use crate::linux::profile::Profile;
    use crate::mmu::{AddressSpace, MmuConfig, PageSize, Paging, bits};
    use crate::testing::page_tables::PageTableBuilder;

    /// A direct map at this base over all of the synthetic machine's memory.
    const DIRECT: u64 = 0xffff_8880_0000_0000;
    const MEM: usize = 8 << 20;

    /// A machine whose memory is all mapped at `DIRECT` (2 MiB pages), with task_structs laid
    /// out by `layout` at physical `1 MiB + i * size`. `tasks` are (pid, parent index, comm,
    /// state); task 0 is init_task. Returns the builder (to corrupt further) and the addresses.
    fn machine(
        paging: Paging,
        l: &TaskLayout,
        size: u64,
        tasks: &[(i32, usize, &str, u64)],
    ) -> (PageTableBuilder, Vec<u64>) {
        let mut b = PageTableBuilder::new(paging, MEM);
        b.set_table_area((6u64 << 20).into(), (MEM as u64).into()).unwrap();
        let base = if paging == Paging::Level5 { 0xff11_0000_0000_0000 } else { DIRECT };
        for off in (0..(6u64 << 20)).step_by(2 << 20) {
            b.map(VirtAddr(base + off), off.into(), PageSize::Size2M, bits::WRITABLE).unwrap();
        }
        let phys = |i: usize| (1u64 << 20) + i as u64 * size;
        let virt: Vec<u64> = (0..tasks.len()).map(|i| base + phys(i)).collect();
        for (i, &(pid, parent, comm, state)) in tasks.iter().enumerate() {
            let p = phys(i);
            b.write_bytes((p + l.pid).into(), &pid.to_le_bytes()).unwrap();
            if let Some(o) = l.tgid {
                b.write_bytes((p + o).into(), &pid.to_le_bytes()).unwrap();
            }
            let mut c = [0u8; 16];
            c[..comm.len()].copy_from_slice(comm.as_bytes());
            b.write_bytes((p + l.comm).into(), &c).unwrap();
            b.write_u64((p + l.state.unwrap().0).into(), state).unwrap();
            b.write_u64((p + l.real_parent.unwrap()).into(), virt[parent]).unwrap();
        }
        // children lists: each parent's list of its children, linked through `sibling`.
        if let (Some(ch), Some(sib)) = (l.children, l.sibling) {
            for (pi, _) in tasks.iter().enumerate() {
                let head = virt[pi] + ch;
                let kids: Vec<u64> =
                    (1..tasks.len()).filter(|&k| tasks[k].1 == pi).map(|k| virt[k] + sib).collect();
                let ring: Vec<u64> = std::iter::once(head).chain(kids).collect();
                for (j, &node) in ring.iter().enumerate() {
                    let next = ring[(j + 1) % ring.len()];
                    b.write_u64((node - base).into(), next).unwrap();
                }
            }
        }
        (b, virt)
    }

    fn seed_layout() -> TaskLayout {
        TaskLayout::from_types(&Profile::load("ubuntu-18.04-4.15.0-74-generic").unwrap().types()).unwrap()
    }

    fn run(b: PageTableBuilder, paging: Paging, l: &TaskLayout, init: u64, threads: bool) -> TaskList {
        let cr3 = b.root();
        let mut space = AddressSpace::new(Box::new(b.into_mem("synthetic")), MmuConfig::new(paging));
        let mut view = View::new(&mut space, cr3);
        list(&mut view, l, init, threads)
    }

    const SEED_TASKS: &[(i32, usize, &str, u64)] = &[
        (0, 0, "swapper/0", 0),
        (1, 0, "systemd", 1),
        (2, 0, "kthreadd", 1),
        (57, 1, "timekeeper", 1),
        (60, 2, "kworker/0:1", 0x402),
        (61, 1, "zombie", 0),
    ];

    #[test]
    fn seed_profile_walks_the_process_tree() {
        let l = seed_layout();
        assert_eq!(l.tasks, None);
        for paging in [Paging::Level4, Paging::Level5] {
            let (b, virt) = machine(paging, &l, 9088, SEED_TASKS);
            let got = run(b, paging, &l, virt[0], false);
            assert!(got.problems.is_empty(), "{:?}", got.problems);
            let rows: Vec<(i32, Option<i32>, &str, char)> =
                got.tasks.iter().map(|t| (t.pid, t.ppid, t.comm.as_str(), t.state)).collect();
            assert_eq!(
                rows,
                vec![
                    (0, Some(0), "swapper/0", 'R'),
                    (1, Some(0), "systemd", 'S'),
                    (2, Some(0), "kthreadd", 'S'),
                    (57, Some(1), "timekeeper", 'S'),
                    (60, Some(2), "kworker/0:1", 'I'),
                    (61, Some(1), "zombie", 'R'),
                ]
            );
            // The profile pins no mm: CR3 is unavailable, shown as a dash, and ps says why.
            assert!(got.tasks.iter().all(|t| t.cr3.is_none()));
            let missing = l.unavailable();
            assert!(missing.iter().any(|m| m.contains("CR3 unavailable")), "{missing:?}");
            assert!(!missing.iter().any(|m| m.contains("PPID")), "{missing:?}");
            assert!(crate::linux::render::ps(&got).contains("     57       1  S   timekeeper"));
        }
    }

    #[test]
    fn a_looping_child_list_is_cut() {
        let l = seed_layout();
        let (mut b, virt) = machine(Paging::Level4, &l, 9088, SEED_TASKS);
        // timekeeper's sibling.next points back at systemd's sibling (not the list head).
        let sib = l.sibling.unwrap();
        b.write_u64((virt[3] + sib - DIRECT).into(), virt[1] + sib).unwrap();
        let got = run(b, Paging::Level4, &l, virt[0], false);
        assert!(got.tasks.len() <= SEED_TASKS.len() + 1);
        assert!(
            got.problems.iter().any(|p| p.contains("loops") || p.contains("twice")),
            "{:?}",
            got.problems
        );
    }

    #[test]
    fn pointers_into_nowhere_stop_with_where_and_why() {
        let l = seed_layout();
        let (mut b, virt) = machine(Paging::Level4, &l, 9088, SEED_TASKS);
        // kthreadd's children list points outside the direct map; systemd's comm is garbage.
        b.write_u64((virt[2] + l.children.unwrap() - DIRECT).into(), 0xffff_8880_4000_0000).unwrap();
        b.write_bytes((virt[1] + l.comm - DIRECT).into(), &[0xff, 0x01, b'x', 0, 0]).unwrap();
        let got = run(b, Paging::Level4, &l, virt[0], false);
        assert!(got.tasks.iter().any(|t| t.comm == "??x"));
        let p = got.problems.join("\n");
        assert!(p.contains("children of task") && p.contains("0xffff888040000000"), "{p}");
        assert!(crate::linux::render::ps(&got).lines().last().unwrap().starts_with("ps: "));
    }

    #[test]
    fn a_tasks_list_that_loops_is_bounded() {
        // A BTF-like layout with `tasks`: the ring of three tasks loops into its middle.
        let mut l = seed_layout();
        l.tasks = Some(1000);
        let (mut b, virt) = machine(Paging::Level4, &l, 9088, &SEED_TASKS[..3]);
        for i in 0..3 {
            let next = if i == 2 { virt[1] + 1000 } else { virt[i + 1] + 1000 };
            b.write_u64((virt[i] + 1000 - DIRECT).into(), next).unwrap();
        }
        let got = run(b, Paging::Level4, &l, virt[0], false);
        assert_eq!(got.tasks.len(), 3);
        assert!(got.problems[0].contains("loops back"), "{:?}", got.problems);
    }

    #[test]
    fn state_letters_match_ps() {
        assert_eq!(state_letter(0, 0), 'R');
        assert_eq!(state_letter(1, 0), 'S');
        assert_eq!(state_letter(2, 0), 'D');
        assert_eq!(state_letter(4, 0), 'T');
        assert_eq!(state_letter(8, 0), 't');
        assert_eq!(state_letter(0, 16), 'X');
        assert_eq!(state_letter(0, 32), 'Z');
        assert_eq!(state_letter(64, 0), 'P');
        assert_eq!(state_letter(0x402, 0), 'I');
        assert_eq!(state_letter(0x80, 0), 'R'); // TASK_DEAD alone reports as running, as in the kernel
    }

    #[test]
    fn comm_is_cleaned() {
        assert_eq!(clean_comm(b"init\0garbage"), "init");
        assert_eq!(clean_comm(b"a\x01b\xffc"), "a?b?c");
    }
}

mod thread_groups {
    use super::super::*;
    use crate::VirtAddr;
    use crate::mmu::{AddressSpace, MmuConfig, PageSize, Paging, bits};
    use crate::testing::page_tables::PageTableBuilder;

    const DIRECT: u64 = 0xffff_8880_0000_0000;

    /// A 6.x-like layout: `tasks`, `tgid`, and threads through `signal->thread_head` or
    /// `thread_group`.
    fn layout(via_signal: bool) -> TaskLayout {
        TaskLayout {
            tasks: Some(0x100),
            pid: 0x200,
            tgid: Some(0x204),
            comm: 0x300,
            real_parent: Some(0x210),
            state: Some((0x10, 4)),
            mm: Some(0x220),
            mm_pgd: Some(0x48),
            thread_group: (!via_signal).then_some(0x240),
            signal: via_signal.then_some(0x250),
            signal_thread_head: via_signal.then_some(0x10),
            thread_node: via_signal.then_some(0x260),
            ..Default::default()
        }
    }

    /// Tasks at DIRECT + 1 MiB + i * 4 KiB: init_task (0), a process (1) with two threads (2, 3)
    /// and a single-threaded process (4). Returns the task list.
    fn run(via_signal: bool, threads: bool) -> TaskList {
        run_with(via_signal, threads, crate::linux::Budget::DEFAULT)
    }

    fn run_with(via_signal: bool, threads: bool, budget: crate::linux::Budget) -> TaskList {
        run_along(via_signal, threads, budget, None)
    }

    /// Offset of a pointer each task holds, to 16 bytes of its index (for [`Along`]).
    const POINTER: u64 = 0x280;

    fn run_along(
        via_signal: bool,
        threads: bool,
        budget: crate::linux::Budget,
        along: Option<&mut crate::linux::list::Along>,
    ) -> TaskList {
        let l = layout(via_signal);
        let mut b = PageTableBuilder::new(Paging::Level4, 8 << 20);
        b.set_table_area((6u64 << 20).into(), (8u64 << 20).into()).unwrap();
        for off in (0..(6u64 << 20)).step_by(2 << 20) {
            b.map(VirtAddr(DIRECT + off), off.into(), PageSize::Size2M, bits::WRITABLE).unwrap();
        }
        let phys = |i: u64| (1u64 << 20) + i * 4096;
        let virt = |i: u64| DIRECT + phys(i);
        let tasks: [(i32, i32, &str, bool); 5] = [
            (0, 0, "swapper/0", false),
            (10, 10, "server", true),
            (11, 10, "worker", true),
            (12, 10, "worker", true),
            (20, 20, "single", true),
        ];
        let mm = |i: u64| phys(50 + i);
        for (i, &(pid, tgid, comm, user)) in tasks.iter().enumerate() {
            let p = phys(i as u64);
            b.write_bytes((p + l.pid).into(), &pid.to_le_bytes()).unwrap();
            b.write_bytes((p + l.tgid.unwrap()).into(), &tgid.to_le_bytes()).unwrap();
            let mut c = [0u8; 16];
            c[..comm.len()].copy_from_slice(comm.as_bytes());
            b.write_bytes((p + l.comm).into(), &c).unwrap();
            b.write_u64((p + l.real_parent.unwrap()).into(), virt(0)).unwrap();
            b.write_u64((p + POINTER).into(), virt(70 + i as u64)).unwrap();
            b.write_bytes(phys(70 + i as u64).into(), &[i as u8; 16]).unwrap();
            // Each process's mm points at a page table root of its own (a made-up address).
            let group = if tgid == 10 { 1 } else { i as u64 };
            if user {
                b.write_u64((p + l.mm.unwrap()).into(), DIRECT + mm(group)).unwrap();
                b.write_u64((mm(group) + 0x48).into(), DIRECT + 0x40_0000 + group * 4096).unwrap();
            }
        }
        // The process list: init_task → 1 → 4 (threads are not on it).
        let ring = [0u64, 1, 4];
        for (j, &t) in ring.iter().enumerate() {
            let next = ring[(j + 1) % ring.len()];
            b.write_u64((phys(t) + 0x100).into(), virt(next) + 0x100).unwrap();
        }
        // The thread groups: {1, 2, 3} and {4}.
        for group in [vec![1u64, 2, 3], vec![4]] {
            if via_signal {
                let signal = phys(60 + group[0]);
                let head = DIRECT + signal + 0x10;
                let nodes: Vec<u64> =
                    std::iter::once(head).chain(group.iter().map(|&t| virt(t) + 0x260)).collect();
                for (j, &n) in nodes.iter().enumerate() {
                    b.write_u64((n - DIRECT).into(), nodes[(j + 1) % nodes.len()]).unwrap();
                }
                for &t in &group {
                    b.write_u64((phys(t) + 0x250).into(), DIRECT + signal).unwrap();
                }
            } else {
                for (j, &t) in group.iter().enumerate() {
                    let next = group[(j + 1) % group.len()];
                    b.write_u64((phys(t) + 0x240).into(), virt(next) + 0x240).unwrap();
                }
            }
        }
        let cr3 = b.root();
        let mut space = AddressSpace::new(Box::new(b.into_mem("threads")), MmuConfig::new(Paging::Level4));
        let mut view = View::with_budget(&mut space, cr3, budget);
        list_along(&mut view, &l, virt(0), threads, along)
    }

    #[test]
    fn the_walk_reads_along_each_process_its_words_and_what_they_point_at() {
        use crate::linux::list::{Along, AlongRead};
        let mut along = Along { words: vec![POINTER, l_pid()], follow: Some((0, 16)), ..Along::default() };
        let got = run_along(true, true, crate::linux::Budget::DEFAULT, Some(&mut along));
        assert_eq!(got.tasks.len(), 5, "{:?}", got.problems);
        let virt = |i: u64| DIRECT + (1u64 << 20) + i * 4096;
        // The processes on the list (tasks 0, 1 and 4), not the threads found another way; the
        // last one's follow-up read would need a step after the end, and is left to the caller.
        let pid = |i: u64| [0u64, 10, 11, 12, 20][i as usize];
        let words = |i: u64| vec![Some(virt(70 + i)), Some(pid(i) | (pid(i) << 32))];
        assert_eq!(along.got.len(), 3, "{:?}", along.got);
        assert_eq!(along.got[&virt(0)], AlongRead { words: words(0), follow: Some(vec![0; 16]) });
        assert_eq!(along.got[&virt(1)], AlongRead { words: words(1), follow: Some(vec![1; 16]) });
        assert_eq!(along.got[&virt(4)], AlongRead { words: words(4), follow: None });
    }

    /// The layout's pid offset: its 64-bit word holds pid then tgid.
    fn l_pid() -> u64 {
        layout(true).pid
    }

    #[test]
    fn the_operations_budget_cuts_every_walk_and_says_so() {
        use crate::linux::Budget;
        // Five tasks in all: a budget of four tasks stops in the thread walk of pid 10 (the
        // three processes, then one of its two other threads).
        for via_signal in [true, false] {
            let got = run_with(via_signal, true, Budget { tasks: 4, ..Budget::DEFAULT });
            let pids: Vec<i32> = got.tasks.iter().map(|t| t.pid).collect();
            assert_eq!(pids, [0, 10, 11, 20], "{:?}", got.problems);
            let why = got.truncated.as_deref().expect("marked truncated");
            assert!(why.starts_with("truncated: the budget of 4 tasks and threads"), "{why}");
            assert!(why.contains("threads of pid 10") && why.contains("first 4 tasks"), "{why}");
            assert_eq!(got.problems.last().map(String::as_str), Some(why));
            assert!(crate::linux::render::ps(&got).ends_with(&format!("ps: {why}\n")));
            // Without threads the same budget is enough: nothing is marked.
            let procs = run_with(via_signal, false, Budget { tasks: 4, ..Budget::DEFAULT });
            assert!(procs.truncated.is_none() && procs.problems.is_empty(), "{:?}", procs.problems);
            // A budget of bytes stops the reading of tasks, and says so.
            let got = run_with(via_signal, true, Budget { bytes: 16, ..Budget::DEFAULT });
            let why = got.truncated.as_deref().expect("marked truncated");
            assert!(why.contains("budget of 0 MiB read") && got.tasks.len() < 5, "{why}");
        }
    }

    #[test]
    fn ps_t_adds_the_threads_of_each_process() {
        for via_signal in [true, false] {
            let procs = run(via_signal, false);
            assert!(procs.problems.is_empty(), "{:?}", procs.problems);
            let pids: Vec<i32> = procs.tasks.iter().map(|t| t.pid).collect();
            assert_eq!(pids, [0, 10, 20]);
            let all = run(via_signal, true);
            assert!(all.problems.is_empty(), "{:?}", all.problems);
            let rows: Vec<(i32, i32, &str)> =
                all.tasks.iter().map(|t| (t.pid, t.tgid, t.comm.as_str())).collect();
            assert_eq!(
                rows,
                [
                    (0, 0, "swapper/0"),
                    (10, 10, "server"),
                    (11, 10, "worker"),
                    (12, 10, "worker"),
                    (20, 20, "single")
                ]
            );
            // Threads share their process's address space.
            assert_eq!(all.tasks[2].cr3, all.tasks[1].cr3);
            assert_eq!(all.tasks[1].cr3, Some(0x40_1000));
            assert_ne!(all.tasks[4].cr3, all.tasks[1].cr3);
            assert_eq!(all.tasks[0].cr3, None);
        }
    }
}
