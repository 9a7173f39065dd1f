//! The task list: every `task_struct` reachable from `init_task.tasks`, and their threads.
//!
//! Memory after a crash can hold anything: a list that loops, a pointer into nowhere, a name
//! full of garbage. Walks are bounded by a set of visited addresses, each thread group by a
//! count, and all the walks of one operation together by the view's [`Budget`](super::Budget)
//! of tasks and bytes; a walk that stops keeps what it read and says where and why it stopped,
//! and a list the budget cut says it is truncated.

use super::error::LayoutError;
use super::{Memory, TypeInfo, View};
use std::collections::HashSet;

/// Most threads walked in one thread group (all groups together are bounded by the budget).
const MAX_THREADS: usize = 1 << 16;
pub const COMM_LEN: usize = 16;

/// Where the fields the commands need sit in `task_struct` (and `mm_struct.pgd`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskLayout {
    /// `tasks`: the list of every process. Profiles without it walk `children`/`sibling`.
    pub tasks: Option<u64>,
    pub children: Option<u64>,
    pub sibling: Option<u64>,
    pub pid: u64,
    pub tgid: Option<u64>,
    pub comm: u64,
    pub real_parent: Option<u64>,
    /// `__state` (5.14+) or `state`, and its size (4, or 8 for the old `long`).
    pub state: Option<(u64, u64)>,
    pub exit_state: Option<u64>,
    pub flags: Option<u64>,
    pub mm: Option<u64>,
    pub active_mm: Option<u64>,
    pub mm_pgd: Option<u64>,
    /// Threads of a group: `thread_group` (before 6.7), or `signal` → `thread_head` with
    /// each task's `thread_node`.
    pub thread_group: Option<u64>,
    pub signal: Option<u64>,
    pub signal_thread_head: Option<u64>,
    pub thread_node: Option<u64>,
    /// `thread.sp`: the saved kernel stack pointer of a task that is not running.
    pub thread_sp: Option<u64>,
    pub stack: Option<u64>,
}

impl TaskLayout {
    /// The byte range of `task_struct` that holds every field `read_task` reads.
    fn span(&self) -> (u64, u64) {
        let fields = [
            Some((self.pid, 4)),
            self.tgid.map(|o| (o, 4)),
            Some((self.comm, COMM_LEN as u64)),
            self.state,
            self.exit_state.map(|o| (o, 4)),
            self.flags.map(|o| (o, 4)),
            self.real_parent.map(|o| (o, 8)),
            self.mm.map(|o| (o, 8)),
        ];
        let lo = fields.iter().flatten().map(|f| f.0).min().unwrap_or(0);
        let hi = fields.iter().flatten().map(|f| f.0.saturating_add(f.1)).max().unwrap_or(0);
        // A layout from a profile could put fields far apart; do not read more than a page or two.
        if hi - lo > 16 * 1024 { (lo, lo) } else { (lo, hi) }
    }

    /// What `ps` cannot show with this layout, one line each (empty when it shows everything).
    pub fn unavailable(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.real_parent.is_none() {
            v.push("PPID unavailable: the layout has no task_struct.real_parent".to_string());
        }
        if self.state.is_none() {
            v.push("state unavailable: the layout has no task_struct.__state or state".to_string());
        }
        if self.mm.is_none() || self.mm_pgd.is_none() {
            v.push("CR3 unavailable: the layout has no task_struct.mm or mm_struct.pgd".to_string());
        }
        if self.tgid.is_none() {
            v.push("threads cannot be told from processes: the layout has no task_struct.tgid".to_string());
        }
        v
    }

    pub fn from_types(t: &dyn TypeInfo) -> Result<Self, LayoutError> {
        let off = |ty: &str, f: &str| t.member(ty, f).map(|m| m.offset);
        let need = |ty: &str, f: &str| {
            off(ty, f).ok_or_else(|| LayoutError::Missing { what: format!("{ty}.{f}"), origin: t.source() })
        };
        let tasks = off("task_struct", "tasks");
        let (children, sibling) = (off("task_struct", "children"), off("task_struct", "sibling"));
        if tasks.is_none() && (children.is_none() || sibling.is_none()) {
            need("task_struct", "tasks")?;
        }
        let state = t.member("task_struct", "__state").or_else(|| t.member("task_struct", "state"));
        Ok(Self {
            tasks,
            children,
            sibling,
            pid: need("task_struct", "pid")?,
            tgid: off("task_struct", "tgid"),
            comm: need("task_struct", "comm")?,
            real_parent: off("task_struct", "real_parent"),
            state: state.map(|m| (m.offset, if m.size == 0 { 8 } else { m.size })),
            exit_state: off("task_struct", "exit_state"),
            flags: off("task_struct", "flags"),
            mm: off("task_struct", "mm"),
            active_mm: off("task_struct", "active_mm"),
            mm_pgd: off("mm_struct", "pgd"),
            thread_group: off("task_struct", "thread_group"),
            signal: off("task_struct", "signal"),
            signal_thread_head: off("signal_struct", "thread_head"),
            thread_node: off("task_struct", "thread_node"),
            thread_sp: off("task_struct", "thread.sp")
                .or_else(|| Some(off("task_struct", "thread")? + off("thread_struct", "sp")?)),
            stack: off("task_struct", "stack"),
        })
    }
}

/// One task as read from memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub addr: u64,
    pub pid: i32,
    pub tgid: i32,
    pub ppid: Option<i32>,
    pub comm: String,
    pub state: char,
    pub flags: Option<u32>,
    /// `mm` (0 for kernel threads).
    pub mm: Option<u64>,
    /// The physical address of `mm->pgd`: the task's CR3.
    pub cr3: Option<u64>,
}

impl Task {
    pub fn is_kernel_thread(&self) -> bool {
        self.mm == Some(0) || self.flags.is_some_and(|f| f & PF_KTHREAD != 0)
    }
}

/// `PF_KTHREAD` in `task_struct.flags`.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// The result of a walk: what was read, and why it stopped early, if it did.
#[derive(Clone, Debug, Default)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    pub problems: Vec<String>,
    /// Why the list is incomplete when the operation's budget cut it (also the last problem).
    pub truncated: Option<String>,
}

impl TaskList {
    /// Marks the list truncated when `view`'s budget stopped a walk.
    fn finish(mut self, view: &View) -> Self {
        if let Some(why) = view.budget_spent() {
            let line = truncation(why, self.tasks.len());
            self.problems.push(line.clone());
            self.truncated = Some(line);
        }
        self
    }
}

/// The line that marks a list the budget cut.
pub fn truncation(why: &str, shown: usize) -> String {
    format!(
        "truncated: {why}; only the first {shown} tasks are shown (more than a real machine runs: \
         the list in memory is corrupt or loops)"
    )
}

/// The state letter `ps` shows, from `__state | exit_state` as `task_state_index()` computes it.
pub fn state_letter(state: u64, exit_state: u64) -> char {
    const TASK_REPORT: u64 = 0x7f;
    const TASK_IDLE: u64 = 0x402; // TASK_UNINTERRUPTIBLE | TASK_NOLOAD
    if state & !0x100 == TASK_IDLE {
        return 'I';
    }
    let bits = (state | exit_state) & TASK_REPORT;
    let index = 64 - bits.leading_zeros() as usize;
    b"RSDTtXZP".get(index).map(|&b| b as char).unwrap_or('?')
}

fn clean_comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    raw[..end].iter().map(|&b| if (0x21..0x7f).contains(&b) || b == b' ' { b as char } else { '?' }).collect()
}

/// Reads one task. The kernel CR3 view is used for `task_struct` and `mm`.
pub fn read_task(view: &mut View, l: &TaskLayout, addr: u64) -> Result<Task, String> {
    read_tasks(view, l, &[addr]).pop().unwrap_or_else(|| Err(format!("task {addr:#x}: not read")))
}

/// Reads tasks in three batches, however many there are: every task's fields, then every
/// parent's tgid and mm's pgd, then (cached) translations. Over DMA that is a few round trips
/// in all instead of a few per task.
/// Stops early, with fewer results than `addrs`, once the operation's budget is spent.
pub fn read_tasks(view: &mut View, l: &TaskLayout, addrs: &[u64]) -> Vec<Result<Task, String>> {
    // Batches of a bounded size: a long list must not hold every task's bytes at once.
    let mut out = Vec::with_capacity(addrs.len());
    for batch in addrs.chunks(256) {
        if view.check_budget("reading of tasks").is_err() {
            break;
        }
        out.extend(read_batch(view, l, batch));
    }
    out
}

fn read_batch(view: &mut View, l: &TaskLayout, addrs: &[u64]) -> Vec<Result<Task, String>> {
    // One read per task for all its fields (a DMA round trip each would cost more than the
    // bytes), all of them asked for together.
    let (lo, hi) = l.span();
    let mut spans: Vec<Vec<u8>> = addrs.iter().map(|_| vec![0u8; (hi - lo) as usize]).collect();
    let mut reads: Vec<(u64, &mut [u8])> =
        addrs.iter().zip(spans.iter_mut()).map(|(a, b)| (a.wrapping_add(lo), &mut b[..])).collect();
    let results = view.read_together(&mut reads);
    let mut pending: Vec<Result<Pending, String>> = Vec::with_capacity(addrs.len());
    for ((&addr, mut bytes), r) in addrs.iter().zip(spans).zip(results) {
        match r {
            Ok(()) => {}
            // The device failing: field by field would only wait out its timeout again.
            Err(e) if e.is_device_failure() => {
                pending.push(Err(format!("task {addr:#x}: {e}")));
                continue;
            }
            Err(_) => bytes.clear(), // Read field by field, to say which one fails.
        }
        pending.push(read_fields(&mut Prefetched { view, base: addr.wrapping_add(lo), bytes }, l, addr));
    }
    // The parents' tgids and the mms' pgds, all known now: one more batch.
    let mut words = vec![[0u8; 8]; pending.len() * 2];
    let mut reads: Vec<(u64, &mut [u8])> = Vec::new();
    let mut slots: Vec<(usize, bool)> = Vec::new();
    for (i, (p, w)) in pending.iter().zip(words.chunks_exact_mut(2)).enumerate() {
        let Ok(p) = p else { continue };
        let (tgid_word, pgd_word) = w.split_at_mut(1);
        if let Some(at) = p.parent_tgid_at {
            reads.push((at, &mut tgid_word[0][..4]));
            slots.push((i, false));
        }
        if let Some(at) = p.pgd_at {
            reads.push((at, &mut pgd_word[0][..]));
            slots.push((i, true));
        }
    }
    let results = view.read_together(&mut reads);
    let mut got = vec![(false, false); pending.len()];
    for (&(i, is_pgd), r) in slots.iter().zip(&results) {
        if r.is_ok() {
            if is_pgd {
                got[i].1 = true;
            } else {
                got[i].0 = true;
            }
        }
    }
    pending
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut t = p?.task;
            let (w_tgid, w_pgd) = (words[2 * i], words[2 * i + 1]);
            if got[i].0 {
                t.ppid = Some(i32::from_le_bytes([w_tgid[0], w_tgid[1], w_tgid[2], w_tgid[3]]));
            }
            if got[i].1 {
                t.cr3 = view.translate(u64::from_le_bytes(w_pgd)).ok();
            }
            Ok(t)
        })
        .collect()
}

/// A task read from its own bytes, with where its parent's tgid and its pgd are.
struct Pending {
    task: Task,
    parent_tgid_at: Option<u64>,
    pgd_at: Option<u64>,
}

fn read_fields(mem: &mut Prefetched, l: &TaskLayout, addr: u64) -> Result<Pending, String> {
    let what = |f: &str, e: crate::mmu::MemError| format!("task {addr:#x}: reading {f}: {e}");
    let pid = mem.read_u32(addr.wrapping_add(l.pid)).map_err(|e| what("pid", e))? as i32;
    let tgid = match l.tgid {
        Some(o) => mem.read_u32(addr.wrapping_add(o)).map_err(|e| what("tgid", e))? as i32,
        None => pid,
    };
    let mut comm = [0u8; COMM_LEN];
    mem.read(addr.wrapping_add(l.comm), &mut comm).map_err(|e| what("comm", e))?;
    let state = match l.state {
        Some((o, size)) => {
            let s = mem.read_uint(addr.wrapping_add(o), size).unwrap_or(u64::MAX);
            let x = l.exit_state.and_then(|o| mem.read_u32(addr.wrapping_add(o)).ok()).unwrap_or(0) as u64;
            if s == u64::MAX { '?' } else { state_letter(s, x) }
        }
        None => '?',
    };
    let flags = l.flags.and_then(|o| mem.read_u32(addr.wrapping_add(o)).ok());
    let parent = l.real_parent.and_then(|o| mem.read_u64(addr.wrapping_add(o)).ok());
    let mm = match l.mm {
        Some(o) => Some(mem.read_u64(addr.wrapping_add(o)).map_err(|e| what("mm", e))?),
        None => None,
    };
    let parent_tgid_at = parent.and_then(|p| p.checked_add(l.tgid.unwrap_or(l.pid)));
    let pgd_at = match (mm, l.mm_pgd) {
        (Some(mm), Some(off)) if mm != 0 => mm.checked_add(off),
        _ => None,
    };
    let task = Task { addr, pid, tgid, ppid: None, comm: clean_comm(&comm), state, flags, mm, cr3: None };
    Ok(Pending { task, parent_tgid_at, pgd_at })
}

/// A task's bytes read at once, and the view for everything else.
struct Prefetched<'a, 'b> {
    view: &'a mut View<'b>,
    base: u64,
    bytes: Vec<u8>,
}

impl Memory for Prefetched<'_, '_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), crate::mmu::MemError> {
        let off = addr.wrapping_sub(self.base) as usize;
        match self.bytes.get(off..off.saturating_add(buf.len())) {
            Some(src) if addr >= self.base => {
                buf.copy_from_slice(src);
                Ok(())
            }
            _ => self.view.read(addr, buf),
        }
    }
}

/// What the head of a walked list is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    /// An element, listed first (init_task.tasks).
    Element,
    /// Not listed: a bare list head (a children list), or an element already counted (a thread
    /// group walked from its leader's thread_group).
    Bare,
    /// A bare list head (signal->thread_head) whose list holds this element, already counted
    /// (the group's leader): left out.
    BareWithout(u64),
}

/// Follows a `list_head` ring from `head` (the address of the list_head inside the first
/// element, or of a standalone head), returning the element addresses (`entry - field`). Each element is counted against the view's budget; the walk
/// stops quietly when that is spent (the list it belongs to is then marked truncated).
fn walk_list(
    mem: &mut View,
    head: u64,
    field: u64,
    kind: Head,
    max: usize,
    what: &str,
    problems: &mut Vec<String>,
) -> Vec<u64> {
    let mut out = Vec::new();
    if kind == Head::Element {
        if mem.spend_task(what).is_err() {
            return out;
        }
        out.push(head.wrapping_sub(field));
    }
    let mut seen = HashSet::new();
    seen.insert(head);
    let mut at = head;
    loop {
        let next = match mem.read_u64(at) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!(
                    "{what}: stopped after {} entries: reading the next pointer at {at:#x}: {e}",
                    out.len()
                ));
                break;
            }
        };
        if next == head {
            break;
        }
        if next < field || !seen.insert(next) {
            problems.push(format!(
                "{what}: stopped after {} entries: the list loops back to {next:#x} instead of its head {head:#x}",
                out.len()
            ));
            break;
        }
        if out.len() >= max {
            problems.push(format!("{what}: stopped after {max} entries (the most believed)"));
            break;
        }
        if kind == Head::BareWithout(next - field) {
            at = next;
            continue;
        }
        if mem.spend_task(what).is_err() {
            break;
        }
        out.push(next - field);
        at = next;
    }
    out
}

/// Every process (thread-group leader) from `init_task`, and with `threads` every thread.
pub fn list(mem: &mut View, l: &TaskLayout, init_task: u64, threads: bool) -> TaskList {
    let mut problems = Vec::new();
    let Some(tasks_off) = l.tasks else {
        return list_by_tree(mem, l, init_task, threads);
    };
    let leaders = walk_list(
        mem,
        init_task.wrapping_add(tasks_off),
        tasks_off,
        Head::Element,
        usize::MAX,
        "task list",
        &mut problems,
    );
    let mut tasks = Vec::with_capacity(leaders.len());
    let read = read_tasks(mem, l, &leaders);
    let leaders = &leaders[..read.len()];
    // Most processes have one thread: known for all of them in a batch or three, so that only
    // the others cost a walk (a round trip per thread over DMA).
    let alone = if threads { single_threaded(mem, l, leaders) } else { Vec::new() };
    for (i, r) in read.into_iter().enumerate() {
        match r {
            Ok(t) => {
                let leader = t.clone();
                tasks.push(t);
                let spent = mem.budget_spent().is_some();
                if threads && !spent && leader.pid != 0 && !alone.get(i).copied().unwrap_or(false) {
                    let members = thread_addrs(mem, l, &leader, &mut problems);
                    for r in read_tasks(mem, l, &members) {
                        match r {
                            Ok(t) => tasks.push(t),
                            Err(e) => problems.push(e),
                        }
                    }
                }
            }
            Err(e) => problems.push(e),
        }
    }
    TaskList { tasks, problems, truncated: None }.finish(mem)
}

/// Without `tasks`: the process tree, depth first from `init_task` through each task's
/// `children` list (whose entries are linked by their `sibling` field). Threads are children
/// too; without `threads` those whose tgid differs from their pid are left out.
fn list_by_tree(mem: &mut View, l: &TaskLayout, init_task: u64, threads: bool) -> TaskList {
    let (Some(children), Some(sibling)) = (l.children, l.sibling) else {
        return TaskList {
            tasks: Vec::new(),
            problems: vec!["the layout has neither tasks nor children/sibling".into()],
            truncated: None,
        };
    };
    let mut problems = Vec::new();
    let mut tasks = Vec::new();
    // Every task queued once, and each counted against the budget: a corrupt tree can neither
    // loop nor grow the queue without bound.
    let mut queued = HashSet::from([init_task]);
    let mut stack = vec![init_task];
    let mut twice = 0usize;
    if mem.spend_task("process tree").is_err() {
        stack.clear();
    }
    while let Some(addr) = stack.pop() {
        match read_task(mem, l, addr) {
            Ok(t) => {
                if threads || t.pid == t.tgid {
                    tasks.push(t);
                }
            }
            Err(e) => {
                problems.push(e);
                continue;
            }
        }
        let what = format!("children of task {addr:#x}");
        let kids = walk_list(
            mem,
            addr.wrapping_add(children),
            sibling,
            Head::Bare,
            usize::MAX,
            &what,
            &mut problems,
        );
        // Reversed so that the first child is listed first.
        for kid in kids.into_iter().rev() {
            if queued.insert(kid) {
                stack.push(kid);
            } else {
                twice += 1;
            }
        }
    }
    if twice > 0 {
        problems.push(format!("process tree: {twice} tasks reached a second time were not followed again"));
    }
    tasks.sort_by_key(|t| t.pid);
    TaskList { tasks, problems, truncated: None }.finish(mem)
}

/// For each leader, whether it is certainly alone in its thread group: its group's list holds
/// nothing but itself. Read for all leaders together, in bounded batches; `false` (walk it)
/// whenever unsure.
fn single_threaded(mem: &mut View, l: &TaskLayout, leaders: &[u64]) -> Vec<bool> {
    leaders.chunks(256).flat_map(|batch| single_threaded_batch(mem, l, batch)).collect()
}

fn single_threaded_batch(mem: &mut View, l: &TaskLayout, leaders: &[u64]) -> Vec<bool> {
    let at = |off: u64| leaders.iter().map(|a| a.wrapping_add(off)).collect::<Vec<u64>>();
    if let Some(tg) = l.thread_group {
        // thread_group.next pointing back at itself: an empty list.
        let heads = at(tg);
        return heads.iter().zip(mem.read_u64s(&heads)).map(|(h, n)| n.is_ok_and(|n| n == *h)).collect();
    }
    let (Some(sig), Some(head), Some(node)) = (l.signal, l.signal_thread_head, l.thread_node) else {
        return vec![false; leaders.len()];
    };
    // signal->thread_head.next is the leader's own thread_node, whose next is the head again.
    // A signal that cannot be read gives head 0, which fails the comparisons below.
    let heads: Vec<u64> =
        mem.read_u64s(&at(sig)).into_iter().map(|s| s.map_or(0, |s| s.wrapping_add(head))).collect();
    let own = at(node);
    let mut both = heads.clone();
    both.extend_from_slice(&own);
    let next = mem.read_u64s(&both);
    let (first, second) = next.split_at(leaders.len());
    (0..leaders.len())
        .map(|i| {
            heads[i] != 0
                && first[i].as_ref().is_ok_and(|&n| n == own[i])
                && second[i].as_ref().is_ok_and(|&n| n == heads[i])
        })
        .collect()
}

/// The other threads of `leader`'s group.
fn thread_addrs(mem: &mut View, l: &TaskLayout, leader: &Task, problems: &mut Vec<String>) -> Vec<u64> {
    let what = format!("threads of pid {}", leader.pid);
    if let Some(tg) = l.thread_group {
        return walk_list(mem, leader.addr.wrapping_add(tg), tg, Head::Bare, MAX_THREADS, &what, problems);
    }
    if let (Some(sig), Some(head), Some(node)) = (l.signal, l.signal_thread_head, l.thread_node) {
        let Ok(signal) = mem.read_u64(leader.addr.wrapping_add(sig)) else {
            problems.push(format!("{what}: cannot read signal at {:#x}", leader.addr.wrapping_add(sig)));
            return Vec::new();
        };
        let kind = Head::BareWithout(leader.addr);
        return walk_list(mem, signal.wrapping_add(head), node, kind, MAX_THREADS, &what, problems);
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
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

#[cfg(test)]
mod thread_tests {
    use super::*;
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
        list(&mut view, &l, virt(0), threads)
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
