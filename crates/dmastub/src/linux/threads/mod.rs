//! Every task as a thread: which task each CPU runs, which one panicked, and each task's
//! registers, from memory alone.
//!
//! A task that is not running saved its registers when it last switched out: `thread.sp`
//! points at its `struct inactive_task_frame` (the layout comes from BTF or a profile, it
//! differs across versions). A running task's registers are in its CPU, not in memory: they
//! come from the source's NT_PRSTATUS notes (QEMU `dump-guest-memory`, kdump) or from the
//! kernel's own crash notes (written when it panicked into a loaded crash kernel). Failing
//! those, the panicking task's are rebuilt from the panic path on its stack and marked so;
//! any other register is unavailable, never made up.

use super::discover::Kernel;
use super::error::{LinuxError, ThreadLayoutError};
use super::list::Along;
use super::tasks::{self, Task, TaskLayout};
use super::{Memory, Symbols, TypeInfo, View};
use crate::phys::CoreNote;
use std::collections::HashMap;

mod cpus;
mod panic;
mod regs;
mod stopped;
mod user;

use cpus::{Cpus, cpu_stacks, crash_note_registers, note_registers, read_cpus, read_runqueues};
use panic::reconstruct_panic;
pub use regs::{
    IRET_FRAME_WORD, PRSTATUS_SIZE, PT_REGS_WORDS, Reg, Regs, encode_prstatus, parse_prstatus, reg, user_regs,
};
use stopped::reconstruct_stopped;
pub use user::{UserLayout, UserRegs, UserRegsError};

/// `__KERNEL_CS` and `__KERNEL_DS` on x86-64: what a task in the kernel runs with.
const KERNEL_CS: u64 = 0x10;
const KERNEL_DS: u64 = 0x18;
/// x86-64's kernel stack (16 KiB; KASAN builds double it, and then the panic search looks at
/// the first half only).
pub const THREAD_SIZE: u64 = 16 * 1024;
/// Linux's `NR_CPUS` limit on x86-64: more CPUs than this is a corrupt `nr_cpu_ids`.
const MAX_CPUS: u32 = 8192;
/// Above every PID (`PID_MAX_LIMIT`): the idle tasks of CPUs 1.. get thread ids from here.
const IDLE_TID_BASE: u64 = 1 << 22;
/// Bytes at the top of the panicking task's stack searched before the whole of it.
const PANIC_TOP_WINDOW: u64 = 4096;
/// How far above that window's bottom a find must be to stand without the rest of the stack.
const PANIC_WINDOW_MARGIN: u64 = 1024;
/// Functions whose frame on the panicking task's stack anchors a rebuilt register set.
const PANIC_ANCHORS: &[&str] = &["vpanic", "panic"];

/// Where a thread's registers came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegsOrigin {
    /// The switch frame the scheduler saved when the task last stopped running.
    SwitchFrame,
    /// The CPU's registers when the image was taken: an NT_PRSTATUS note of the core, or the
    /// kernel's crash note.
    Cpu {
        /// The CPU.
        cpu: u32,
        /// What kept them.
        from: &'static str,
    },
    /// Rebuilt from a return address on the kernel stack: only rip and rsp are known.
    Reconstructed(String),
    /// None known, and why.
    Unavailable(String),
}

/// A task as gdb sees it: a thread with an id, a context and registers.
#[derive(Clone, Debug)]
pub struct Thread {
    /// gdb's thread id: pid + 1, or for the idle tasks of CPUs 1.. `IDLE_TID_BASE` + cpu.
    pub tid: u64,
    /// The task.
    pub task: Task,
    /// The CPU whose idle task this is.
    pub idle_of: Option<u32>,
    /// The CPU running it when the image was taken.
    pub running_on: Option<u32>,
    /// Whether it is the task that panicked.
    pub panicking: bool,
    /// Its registers, as far as known.
    pub regs: Regs,
    /// Where its registers came from.
    pub origin: RegsOrigin,
    /// The base of its kernel stack (`task->stack`, `THREAD_SIZE` bytes), when known.
    pub stack: Option<u64>,
    /// The page-table root its memory is read through: its process's, or the kernel's.
    pub cr3: u64,
}

impl Thread {
    /// What `info threads` shows after the thread id: `pid 121 crasher R [cpu0, panicking]`.
    pub fn describe(&self) -> String {
        let t = &self.task;
        match self.marks() {
            m if m.is_empty() => format!("pid {} {} {}", t.pid, t.comm, t.state),
            m => format!("pid {} {} {} [{m}]", t.pid, t.comm, t.state),
        }
    }

    /// Its CPU, the panic, and how sure its registers are: `cpu0, panicking`.
    pub fn marks(&self) -> String {
        let mut marks = Vec::new();
        match (self.idle_of, self.running_on) {
            (Some(c), Some(_)) => marks.push(format!("cpu{c} idle, running")),
            (Some(c), None) => marks.push(format!("cpu{c} idle")),
            (None, Some(c)) => marks.push(format!("cpu{c}")),
            (None, None) => {}
        }
        if self.panicking {
            marks.push("panicking".to_string());
        }
        match &self.origin {
            RegsOrigin::Reconstructed(_) => marks.push("registers reconstructed".to_string()),
            RegsOrigin::Unavailable(_) => marks.push("registers unavailable".to_string()),
            RegsOrigin::SwitchFrame | RegsOrigin::Cpu { .. } => {}
        }
        marks.join(", ")
    }

    /// Where the registers came from, one line (for `monitor threads`).
    pub fn origin_text(&self) -> String {
        match &self.origin {
            RegsOrigin::SwitchFrame => "saved switch frame".to_string(),
            RegsOrigin::Cpu { cpu, from } => format!("cpu{cpu} registers from {from}"),
            RegsOrigin::Reconstructed(how) => format!("reconstructed: {how}"),
            RegsOrigin::Unavailable(why) => format!("unavailable: {why}"),
        }
    }
}

/// Thread id of a task: stable for a session, since a pid is.
pub fn thread_id(pid: i32, idle_of: Option<u32>) -> u64 {
    match idle_of {
        Some(cpu) if cpu > 0 => IDLE_TID_BASE + u64::from(cpu),
        _ => u64::from(pid.max(0) as u32) + 1,
    }
}

/// Every task as a thread, the stop thread (the panicking task, when there is one) first.
#[derive(Clone, Debug, Default)]
pub struct ThreadList {
    /// The threads, the stop thread first.
    pub threads: Vec<Thread>,
    /// What could not be read, one line each.
    pub problems: Vec<String>,
    /// Why the list is incomplete when the operation's budget cut the task list (also one of
    /// the problems).
    pub truncated: Option<String>,
    /// How many CPUs the per-CPU data knows (0 when it was not read).
    pub cpus: u32,
    by_tid: HashMap<u64, usize>,
}

impl ThreadList {
    /// The thread with gdb's id `tid`.
    pub fn get(&self, tid: u64) -> Option<&Thread> {
        self.by_tid.get(&tid).map(|&i| &self.threads[i])
    }

    /// The thread of task `pid` (a thread's own id, as the kernel numbers them: a thread of a
    /// multi-threaded process by its tid); for 0, CPU 0's idle task.
    pub fn by_pid(&self, pid: u64) -> Result<&Thread, LinuxError> {
        let found = self.threads.iter().filter(|t| u64::try_from(t.task.pid).ok() == Some(pid));
        found.min_by_key(|t| t.tid).ok_or_else(|| LinuxError::NoSuchPid {
            pid,
            among: format!("among the {} tasks and threads", self.threads.len()),
            why: self.truncated.as_ref().or(self.problems.first()).cloned(),
        })
    }

    fn index(&mut self) {
        self.by_tid = self.threads.iter().enumerate().map(|(i, t)| (t.tid, i)).collect();
    }
}

/// Where the fields this module reads are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadLayout {
    thread_sp: u64,
    stack: Option<u64>,
    frame: SwitchFrame,
    rq_curr: Option<u64>,
    rq_idle: Option<u64>,
    /// `pcpu_hot.hardirq_stack_ptr` (6.2 on; before, `hardirq_stack_ptr` is its own per-CPU
    /// variable).
    pcpu_hot_hardirq: Option<u64>,
    /// `sizeof(struct cea_exception_stacks)`: the NMI, #DF, #DB and #MC stacks with guard pages.
    exception_stacks_size: Option<u64>,
    /// Where the user-mode state in `task->thread` is (see [`user`]).
    user: UserLayout,
}

/// `struct inactive_task_frame`: the callee-saved registers and the return address the
/// scheduler pushed at `thread.sp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchFrame {
    size: u64,
    /// (register index, offset in the frame).
    saved: Vec<(Reg, u64)>,
    ret_addr: u64,
}

impl ThreadLayout {
    /// The layout from a struct layout; says what is missing.
    pub fn from_types(t: &dyn TypeInfo, tasks: &TaskLayout) -> Result<Self, ThreadLayoutError> {
        let origin = t.source();
        let missing = |what: &'static str| ThreadLayoutError::Missing { what, origin: origin.clone() };
        let thread_sp = tasks.thread_sp.ok_or_else(|| missing("task_struct.thread.sp"))?;
        let frame = "inactive_task_frame";
        let size = t.size_of(frame).ok_or_else(|| missing("struct inactive_task_frame"))?;
        let ret_addr = t.member(frame, "ret_addr").ok_or_else(|| missing("inactive_task_frame.ret_addr"))?;
        let mut saved = Vec::new();
        for (name, r) in [
            ("bp", reg::RBP),
            ("bx", reg::RBX),
            ("r12", reg::R12),
            ("r13", reg::R13),
            ("r14", reg::R14),
            ("r15", reg::R15),
        ] {
            if let Some(m) = t.member(frame, name).filter(|m| m.offset + 8 <= size) {
                saved.push((r, m.offset));
            }
        }
        if ret_addr.offset + 8 > size || size > 256 {
            return Err(ThreadLayoutError::Implausible { origin });
        }
        Ok(Self {
            thread_sp,
            stack: tasks.stack,
            frame: SwitchFrame { size, saved, ret_addr: ret_addr.offset },
            rq_curr: t.member("rq", "curr").map(|m| m.offset),
            rq_idle: t.member("rq", "idle").map(|m| m.offset),
            pcpu_hot_hardirq: t.member("pcpu_hot", "hardirq_stack_ptr").map(|m| m.offset),
            exception_stacks_size: t.size_of("cea_exception_stacks"),
            user: UserLayout::from_types(t),
        })
    }
}

/// Every task (threads included) and each CPU's idle task, with registers and contexts.
pub fn list(
    view: &mut View,
    kernel: &Kernel,
    tl: &TaskLayout,
    layout: Result<&ThreadLayout, &ThreadLayoutError>,
    notes: &[CoreNote],
) -> ThreadList {
    let mut out = ThreadList::default();
    let Some(init) = kernel.init_task.as_ref().map(|f| f.value) else {
        out.problems.push("no init_task symbol: no task list".to_string());
        return out;
    };
    let l = match layout {
        Ok(l) => Some(l),
        Err(e) => {
            out.problems.push(e.to_string());
            None
        }
    };
    // Each process's thread.sp and stack base, then its switch frame, read as the walk
    // passes it; and, beside the walk, in lockstep with it, the CPUs: what they ran and their
    // registers. Over DMA the walk's steps hold one request each: what rides along costs
    // (almost) no round trip. A device that does not answer fails both sides' first batch
    // at once, in one timeout.
    let mut along = Along::default();
    if let Some(l) = l {
        along.words = [Some(l.thread_sp), l.stack].into_iter().flatten().collect();
        along.follow = Some((0, l.frame.size as usize));
    }
    let walk_along = l.map(|_| &mut along);
    let (walked, (cpus, side)) = view.in_lockstep(
        |v| tasks::list_along(v, tl, init, true, walk_along),
        move |v| {
            let Some(l) = l else { return (Cpus::default(), CpuSide::default()) };
            let mut problems = Vec::new();
            let mut cpus = match read_cpus(v, kernel, &mut problems) {
                Ok(cpus) => cpus,
                Err(e) => {
                    problems.push(e);
                    return (Cpus::default(), CpuSide { problems, ..CpuSide::default() });
                }
            };
            read_runqueues(v, kernel, l, &mut cpus, &mut problems);
            let mut side = cpu_side(v, kernel, tl, l, &cpus, notes);
            problems.append(&mut side.problems);
            side.problems = problems;
            (cpus, side)
        },
    );
    view.log_traffic("thread list, after walk and CPUs");
    out.cpus = cpus.offsets.len() as u32;
    out.problems.extend(walked.problems);
    out.truncated = walked.truncated;
    if walked.tasks.is_empty() {
        out.problems.extend(side.problems);
        return out;
    }
    let mut all = walked.tasks;
    // Idle tasks of CPUs 1.. are not on the task list.
    let listed: std::collections::HashSet<u64> = all.iter().map(|t| t.addr).collect();
    let idle: std::collections::HashSet<u64> = cpus.idle.iter().flatten().copied().collect();
    for (addr, r) in &side.tasks {
        if !idle.contains(addr) || listed.contains(addr) {
            continue;
        }
        match r {
            Ok(t) => all.push(t.clone()),
            Err(e) => out.problems.push(format!("an idle task: {e}")),
        }
    }
    // The first CPU each task is the idle task of, and runs on.
    let by_addr = |list: &[Option<u64>]| -> HashMap<u64, u32> {
        let mut m = HashMap::new();
        for (c, a) in list.iter().enumerate() {
            if let Some(a) = a {
                m.entry(*a).or_insert(c as u32);
            }
        }
        m
    };
    let (idle_cpu, curr_cpu) = (by_addr(&cpus.idle), by_addr(&cpus.curr));
    let cpu_of = |m: &HashMap<u64, u32>, addr: u64| m.get(&addr).copied();
    let kernel_cr3 = kernel.cr3.value;
    let mut threads: Vec<Thread> = all
        .into_iter()
        .map(|task| {
            let idle_of = cpu_of(&idle_cpu, task.addr);
            let running_on = cpu_of(&curr_cpu, task.addr);
            Thread {
                tid: thread_id(task.pid, idle_of),
                panicking: running_on.is_some() && running_on == cpus.panic_cpu,
                idle_of,
                running_on,
                regs: Regs::default(),
                origin: RegsOrigin::Unavailable("no register layout".to_string()),
                stack: None,
                cr3: task.cr3.unwrap_or(kernel_cr3),
                task,
            }
        })
        .collect();
    // Two tasks cannot share a thread id; a corrupt list could repeat one.
    let mut seen = std::collections::HashSet::new();
    threads.retain(|t| {
        let fresh = seen.insert(t.tid);
        if !fresh {
            out.problems.push(format!("pid {} ({}) appears twice; shown once", t.task.pid, t.task.comm));
        }
        fresh
    });
    if let Some(l) = l {
        fill_registers(view, l, &along, side, &mut threads, &mut out.problems);
    }
    order(&mut threads);
    out.threads = threads;
    out.index();
    out
}

fn fill_registers(
    view: &mut View,
    l: &ThreadLayout,
    along: &Along,
    mut side: CpuSide,
    threads: &mut [Thread],
    problems: &mut Vec<String>,
) {
    // Batches of a bounded size: a long list must not hold every thread's reads at once.
    for batch in threads.chunks_mut(FRAME_BATCH) {
        switch_frames(view, l, along, batch);
    }
    view.log_traffic("thread list, after switch frames");
    for t in threads.iter_mut() {
        if let Some((regs, origin)) = t.running_on.and_then(|cpu| side.regs.remove(&cpu)) {
            t.regs = regs;
            t.origin = origin;
        }
    }
    problems.append(&mut side.problems);
    if threads.iter().any(|t| t.panicking && matches!(t.origin, RegsOrigin::Unavailable(_))) {
        problems.push("the panicking task's registers are unavailable".to_string());
    }
}

/// Threads whose switch frames are read in one batch (a DMA round trip or two each batch).
const FRAME_BATCH: usize = 4096;

/// Every sleeping thread's registers from its switch frame, and every thread's stack base;
/// what the task walk already read ([`Along`]) is not read again.
fn switch_frames(view: &mut View, l: &ThreadLayout, along: &Along, threads: &mut [Thread]) {
    // What the walk did not read: every such task's thread.sp and stack base in one batch,
    // then every switch frame in another.
    let fields: Vec<u64> = [Some(l.thread_sp), l.stack].into_iter().flatten().collect();
    let walked = |t: &Thread| {
        along
            .got
            .get(&t.task.addr)
            .filter(|g| g.words.len() == fields.len() && g.words.iter().all(Option::is_some))
    };
    let unread: Vec<usize> = (0..threads.len()).filter(|&i| walked(&threads[i]).is_none()).collect();
    let addrs: Vec<u64> = unread
        .iter()
        .flat_map(|&i| fields.iter().map(move |off| (i, off)))
        .map(|(i, off)| threads[i].task.addr.wrapping_add(*off))
        .collect();
    let mut words = view.read_u64s(&addrs).into_iter();
    let mut sp = vec![None; threads.len()];
    let mut stack = vec![None; threads.len()];
    for (i, t) in threads.iter_mut().enumerate() {
        if let Some(g) = walked(t) {
            sp[i] = g.words[0];
            stack[i] = g.words.get(1).copied().flatten();
        } else {
            let slots = [Some(&mut sp[i]), l.stack.map(|_| &mut stack[i])];
            for slot in slots.into_iter().flatten() {
                match words.next() {
                    Some(Ok(v)) => *slot = Some(v),
                    Some(Err(e)) => {
                        t.origin = RegsOrigin::Unavailable(format!("task {:#x}: {e}", t.task.addr))
                    }
                    None => {}
                }
            }
        }
        t.stack = stack[i];
    }
    // Sleeping tasks: the frame at thread.sp, when it lies in the task's stack.
    let frame = &l.frame;
    let mut frames: Vec<(usize, u64, Vec<u8>)> = Vec::new();
    let mut known: Vec<(usize, u64, Vec<u8>)> = Vec::new();
    for (i, t) in threads.iter_mut().enumerate() {
        if t.running_on.is_some() {
            continue;
        }
        let Some(sp) = sp[i] else { continue };
        let inside = match stack[i] {
            Some(base) => sp >= base && sp.saturating_add(frame.size) <= base.saturating_add(THREAD_SIZE),
            None => sp >= 0xffff_8000_0000_0000,
        };
        if !inside {
            t.origin = RegsOrigin::Unavailable(format!(
                "its saved stack pointer {sp:#x} is outside its kernel stack{}",
                stack[i].map(|b| format!(" at {b:#x}")).unwrap_or_default()
            ));
            continue;
        }
        let read_along = along
            .got
            .get(&t.task.addr)
            .filter(|g| g.words.first() == Some(&Some(sp)))
            .and_then(|g| g.follow.clone())
            .filter(|b| b.len() as u64 == frame.size);
        match read_along {
            Some(bytes) => known.push((i, sp, bytes)),
            None => frames.push((i, sp, vec![0u8; frame.size as usize])),
        }
    }
    let mut reads: Vec<(u64, &mut [u8])> = frames.iter_mut().map(|(_, sp, b)| (*sp, &mut b[..])).collect();
    let results = view.read_together(&mut reads);
    let read = frames.into_iter().zip(results);
    for ((i, sp, bytes), r) in known.into_iter().map(|f| (f, Ok(()))).chain(read) {
        let t = &mut threads[i];
        if let Err(e) = r {
            t.origin = RegsOrigin::Unavailable(format!("its switch frame at {sp:#x}: {e}"));
            continue;
        }
        let word = |off: u64| {
            bytes
                .get(off as usize..off as usize + 8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        };
        let mut regs = Regs::default();
        for &(r, off) in &frame.saved {
            regs[r] = word(off);
        }
        regs[reg::RIP] = word(frame.ret_addr);
        regs[reg::RSP] = Some(sp.wrapping_add(frame.size));
        regs[reg::CS] = Some(KERNEL_CS);
        regs[reg::SS] = Some(KERNEL_DS);
        t.regs = regs;
        t.origin = RegsOrigin::SwitchFrame;
    }
}

/// What the CPUs ran, read beside the task walk: the tasks each CPU runs and idles in, and
/// the running ones' registers by CPU.
#[derive(Default)]
struct CpuSide {
    /// Each CPU's current and idle task (but `init_task`), by address.
    tasks: Vec<(u64, Result<Task, tasks::TaskError>)>,
    /// Registers and where they came from, by the CPU running the task.
    regs: HashMap<u32, (Regs, RegsOrigin)>,
    problems: Vec<String>,
}

/// The CPUs' tasks, then their registers, if anything kept them: the source's notes, the
/// kernel's crash notes, or rebuilt from the panic's and the stops' frames on their stacks.
fn cpu_side(
    view: &mut View,
    kernel: &Kernel,
    tl: &TaskLayout,
    l: &ThreadLayout,
    cpus: &Cpus,
    notes: &[CoreNote],
) -> CpuSide {
    let mut side = CpuSide::default();
    let init = kernel.init_task.as_ref().map(|f| f.value);
    // Up to 8192 CPUs: each task once, looked up by address, not searched for.
    let mut seen = std::collections::HashSet::new();
    let addrs: Vec<u64> = cpus
        .curr
        .iter()
        .chain(&cpus.idle)
        .flatten()
        .copied()
        .filter(|a| Some(*a) != init && seen.insert(*a))
        .collect();
    let read = tasks::read_tasks(view, tl, &addrs);
    side.tasks = addrs.iter().copied().zip(read).collect();
    // Each running task on the first CPU that runs it (as the thread list places it).
    let mut first_cpu = HashMap::new();
    for (c, a) in cpus.curr.iter().enumerate() {
        if let Some(a) = a {
            first_cpu.entry(*a).or_insert(c as u32);
        }
    }
    let mut running: Vec<(u32, u64)> = first_cpu.iter().map(|(&a, &c)| (c, a)).collect();
    running.sort_unstable();
    if running.is_empty() {
        return side;
    }
    let pid_by_addr: HashMap<u64, Option<i32>> =
        side.tasks.iter().map(|(a, r)| (*a, r.as_ref().ok().map(|t| t.pid))).collect();
    // A running task not read here is init_task (pid 0).
    let pid_of = |addr: u64| pid_by_addr.get(&addr).copied().unwrap_or(Some(0));
    let task_of_cpu: HashMap<u32, u64> = running.iter().copied().collect();
    let pid_of_cpu = |c: u32| task_of_cpu.get(&c).and_then(|&a| pid_of(a));
    let from_notes = note_registers(notes, cpus, &pid_of_cpu);
    let from_crash = if from_notes.is_empty() {
        crash_note_registers(view, kernel.symbols.address("crash_notes"), cpus)
    } else {
        HashMap::new()
    };
    // The running tasks' kernel stacks, in one batch, for the rest.
    let rest: Vec<(u32, u64)> = running
        .iter()
        .copied()
        .filter(|(c, _)| !from_notes.contains_key(c) && !from_crash.contains_key(c))
        .collect();
    let stack_of: HashMap<u32, u64> = match l.stack {
        Some(off) => {
            let words = view.read_u64s(&rest.iter().map(|&(_, a)| a.wrapping_add(off)).collect::<Vec<_>>());
            rest.iter().zip(words).filter_map(|(&(c, _), w)| Some((c, w.ok()?))).collect()
        }
        None => HashMap::new(),
    };
    let mut stopped: Vec<(u32, Option<u64>)> = Vec::new();
    for &(cpu, _) in &running {
        if let Some(regs) = from_notes.get(&cpu) {
            side.regs.insert(cpu, (*regs, RegsOrigin::Cpu { cpu, from: "the core's NT_PRSTATUS note" }));
        } else if let Some(regs) = from_crash.get(&cpu) {
            side.regs.insert(cpu, (*regs, RegsOrigin::Cpu { cpu, from: "the kernel's crash note" }));
        } else if Some(cpu) == cpus.panic_cpu {
            // Its own stack first (a panic in process context, the common case), then its
            // CPU's interrupt and exception stacks together: every stack read is round trips.
            let own: Vec<(u64, u64, &str)> =
                stack_of.get(&cpu).map(|&s| (s, THREAD_SIZE, "its kernel stack")).into_iter().collect();
            let first = match own.first() {
                None => Err("its kernel stack is unknown".to_string()),
                Some(&(base, len, what)) => {
                    // The stack's top first: a panic in process context is seldom deep. What is
                    // found there stands when it lies well above the window's bottom (the
                    // calls below panic's frame, which would win, are then inside it too).
                    // (The base comes from the target: no arithmetic on it may overflow.)
                    let top = base.wrapping_add(len - PANIC_TOP_WINDOW);
                    let floor = top.saturating_add(PANIC_WINDOW_MARGIN);
                    match reconstruct_panic(view, kernel, &[(top, PANIC_TOP_WINDOW, what)]) {
                        Ok(found) if found.0[reg::RSP].is_some_and(|sp| sp >= floor) => Ok(found),
                        _ => reconstruct_panic(view, kernel, &own),
                    }
                }
            };
            let found = first.or_else(|first| {
                let others = cpu_stacks(view, kernel, l, cpus, cpu);
                if others.is_empty() {
                    return Err(first);
                }
                reconstruct_panic(view, kernel, &others).map_err(|why| format!("{first}; {why}"))
            });
            let origin = match found {
                Ok((regs, how)) => (regs, RegsOrigin::Reconstructed(how)),
                Err(why) => (Regs::default(), RegsOrigin::Unavailable(why)),
            };
            side.regs.insert(cpu, origin);
        } else {
            stopped.push((cpu, stack_of.get(&cpu).copied()));
        }
    }
    // The others, if another CPU stopped them: all together, in a few round trips.
    if !stopped.is_empty() {
        for (&(cpu, _), r) in stopped.iter().zip(reconstruct_stopped(view, kernel, l, cpus, &stopped)) {
            let origin = match r {
                Ok((regs, how)) => (regs, RegsOrigin::Reconstructed(how)),
                Err(why) => (
                    Regs::default(),
                    RegsOrigin::Unavailable(format!(
                        "it was running on cpu{cpu}: its registers were in the CPU, and this source did \
                         not keep them; memory shows no stop ({why})"
                    )),
                ),
            };
            side.regs.insert(cpu, origin);
        }
    }
    side
}

/// The panicking task first (gdb selects the first thread at attach), then each CPU's idle
/// task, then the task list's order; a first thread without a pc gives way to one with a pc
/// (gdb cannot attach to a thread whose pc is unavailable).
fn order(threads: &mut [Thread]) {
    let rank = |t: &Thread| {
        if t.panicking && t.regs.pc().is_some() {
            0
        } else if t.idle_of.is_some() {
            1
        } else {
            2
        }
    };
    threads.sort_by_key(|t| (rank(t), t.idle_of.unwrap_or(0)));
    if threads.first().is_some_and(|t| t.regs.pc().is_none())
        && let Some(i) = threads.iter().position(|t| t.regs.pc().is_some())
    {
        threads[..=i].rotate_right(1);
    }
}

#[cfg(test)]
mod tests;
