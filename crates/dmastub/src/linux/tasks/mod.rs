//! The task list: every `task_struct` reachable from `init_task.tasks`, and their threads.
//!
//! Memory after a crash can hold anything: a list that loops, a pointer into nowhere, a name
//! full of garbage. Walks are bounded by a set of visited addresses, each thread group by a
//! count, and all the walks of one operation together by the view's [`Budget`](super::Budget)
//! of tasks and bytes; a walk that stops keeps what it read and says where and why it stopped,
//! and a list the budget cut says it is truncated.

mod read;

pub use read::{TaskError, read_task, read_tasks};

use super::error::LayoutError;
use super::list::{Along, Head, walk_list, walk_list_along};
use super::{Memory, TypeInfo, View};
use std::collections::HashSet;

/// Most threads walked in one thread group (all groups together are bounded by the budget).
const MAX_THREADS: usize = 1 << 16;
/// `TASK_COMM_LEN`: bytes of a task's name.
pub const COMM_LEN: usize = 16;

/// Where the fields the commands need sit in `task_struct` (and `mm_struct.pgd`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskLayout {
    /// `tasks`: the list of every process. Profiles without it walk `children`/`sibling`.
    pub tasks: Option<u64>,
    /// `children`: the list of a task's children.
    pub children: Option<u64>,
    /// `sibling`: a child's place in its parent's `children`.
    pub sibling: Option<u64>,
    /// `pid`.
    pub pid: u64,
    /// `tgid`: the thread group (process) id.
    pub tgid: Option<u64>,
    /// `comm`: the name.
    pub comm: u64,
    /// `real_parent`.
    pub real_parent: Option<u64>,
    /// `__state` (5.14+) or `state`, and its size (4, or 8 for the old `long`).
    pub state: Option<(u64, u64)>,
    /// `exit_state`.
    pub exit_state: Option<u64>,
    /// `flags` (`PF_*`).
    pub flags: Option<u64>,
    /// `mm`: the address space (0 for kernel threads).
    pub mm: Option<u64>,
    /// `active_mm`: the address space a kernel thread borrows.
    pub active_mm: Option<u64>,
    /// `mm_struct.pgd`: the page-table root.
    pub mm_pgd: Option<u64>,
    /// Threads of a group: `thread_group` (before 6.7), or `signal` → `thread_head` with
    /// each task's `thread_node`.
    pub thread_group: Option<u64>,
    /// `signal`: the group's `signal_struct`.
    pub signal: Option<u64>,
    /// `signal_struct.thread_head` (6.7 on).
    pub signal_thread_head: Option<u64>,
    /// `thread_node`: a task's place in `thread_head`.
    pub thread_node: Option<u64>,
    /// `thread.sp`: the saved kernel stack pointer of a task that is not running.
    pub thread_sp: Option<u64>,
    /// `stack`: the base of the kernel stack.
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

    /// The layout from a struct layout; fails when a field the list needs is missing.
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
    /// Its `task_struct`'s address.
    pub addr: u64,
    /// Its pid (a thread's own id).
    pub pid: i32,
    /// Its process's id.
    pub tgid: i32,
    /// Its parent's process id, when read.
    pub ppid: Option<i32>,
    /// Its name, unprintable bytes as `?`.
    pub comm: String,
    /// Its state letter, as `ps` shows it (`?` unknown).
    pub state: char,
    /// Its `PF_*` flags, when read.
    pub flags: Option<u32>,
    /// `mm` (0 for kernel threads).
    pub mm: Option<u64>,
    /// The physical address of `mm->pgd`: the task's CR3.
    pub cr3: Option<u64>,
}

impl Task {
    /// Whether it is a kernel thread (no address space of its own).
    pub fn is_kernel_thread(&self) -> bool {
        self.mm == Some(0) || self.flags.is_some_and(|f| f & PF_KTHREAD != 0)
    }
}

/// `PF_KTHREAD` in `task_struct.flags`.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// The result of a walk: what was read, and why it stopped early, if it did.
#[derive(Clone, Debug, Default)]
pub struct TaskList {
    /// The tasks read, in list order.
    pub tasks: Vec<Task>,
    /// What could not be read, one sentence each.
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

pub(crate) fn clean_comm(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    raw[..end].iter().map(|&b| if (0x21..0x7f).contains(&b) || b == b' ' { b as char } else { '?' }).collect()
}

/// Every process (thread-group leader) from `init_task`, and with `threads` every thread.
pub fn list(mem: &mut View, l: &TaskLayout, init_task: u64, threads: bool) -> TaskList {
    list_along(mem, l, init_task, threads, None)
}

/// [`list`], reading `along` for each process as the task list's walk passes it (see
/// [`Along`]; processes found another way, and threads, are not in it).
pub(crate) fn list_along(
    mem: &mut View,
    l: &TaskLayout,
    init_task: u64,
    threads: bool,
    along: Option<&mut Along>,
) -> TaskList {
    let mut problems = Vec::new();
    let Some(tasks_off) = l.tasks else {
        return list_by_tree(mem, l, init_task, threads);
    };
    let leaders = walk_list_along(
        mem,
        init_task.wrapping_add(tasks_off),
        tasks_off,
        Head::Element,
        usize::MAX,
        "task list",
        &mut problems,
        along,
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
                            Err(e) => problems.push(e.to_string()),
                        }
                    }
                }
            }
            Err(e) => problems.push(e.to_string()),
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
                problems.push(e.to_string());
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
mod tests;
