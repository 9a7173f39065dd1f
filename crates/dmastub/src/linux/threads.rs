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
use super::error::LinuxError;
use super::tasks::{self, Task, TaskLayout};
use super::{Memory, Symbols, TypeInfo, View};
use crate::phys::CoreNote;
use std::collections::HashMap;

/// Registers a task can have, in the order of gdb's x86-64 core registers (which
/// `gdb/arch.rs` serves): rax … gs_base.
pub const REG_COUNT: usize = 26;

/// Indexes into [`Regs`].
pub mod reg {
    pub const RAX: usize = 0;
    pub const RBX: usize = 1;
    pub const RCX: usize = 2;
    pub const RDX: usize = 3;
    pub const RSI: usize = 4;
    pub const RDI: usize = 5;
    pub const RBP: usize = 6;
    pub const RSP: usize = 7;
    pub const R8: usize = 8;
    pub const R9: usize = 9;
    pub const R10: usize = 10;
    pub const R11: usize = 11;
    pub const R12: usize = 12;
    pub const R13: usize = 13;
    pub const R14: usize = 14;
    pub const R15: usize = 15;
    pub const RIP: usize = 16;
    pub const EFLAGS: usize = 17;
    pub const CS: usize = 18;
    pub const SS: usize = 19;
    pub const DS: usize = 20;
    pub const ES: usize = 21;
    pub const FS: usize = 22;
    pub const GS: usize = 23;
    pub const FS_BASE: usize = 24;
    pub const GS_BASE: usize = 25;
}

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
/// Functions whose frame on the panicking task's stack anchors a rebuilt register set.
const PANIC_ANCHORS: &[&str] = &["vpanic", "panic"];

/// One task's registers; `None` is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs(pub [Option<u64>; REG_COUNT]);

impl Regs {
    pub fn get(&self, r: usize) -> Option<u64> {
        self.0.get(r).copied().flatten()
    }

    pub fn pc(&self) -> Option<u64> {
        self.get(reg::RIP)
    }
}

/// Where a thread's registers came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegsOrigin {
    /// The switch frame the scheduler saved when the task last stopped running.
    SwitchFrame,
    /// The CPU's registers when the image was taken: an NT_PRSTATUS note of the core, or the
    /// kernel's crash note.
    Cpu { cpu: u32, from: &'static str },
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
    pub task: Task,
    /// The CPU whose idle task this is.
    pub idle_of: Option<u32>,
    /// The CPU running it when the image was taken.
    pub running_on: Option<u32>,
    pub panicking: bool,
    pub regs: Regs,
    pub origin: RegsOrigin,
    /// The base of its kernel stack (`task->stack`, [`THREAD_SIZE`] bytes), when known.
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
    pub threads: Vec<Thread>,
    /// What could not be read, one line each.
    pub problems: Vec<String>,
    /// Why the list is incomplete when the operation's budget cut the task list (also one of
    /// the problems).
    pub truncated: Option<String>,
    by_tid: HashMap<u64, usize>,
}

impl ThreadList {
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
}

/// `struct inactive_task_frame`: the callee-saved registers and the return address the
/// scheduler pushed at `thread.sp`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchFrame {
    size: u64,
    /// (register index, offset in the frame).
    saved: Vec<(usize, u64)>,
    ret_addr: u64,
}

impl ThreadLayout {
    pub fn from_types(t: &dyn TypeInfo, tasks: &TaskLayout) -> Result<Self, String> {
        let origin = t.source();
        let missing =
            |what: &str| format!("the struct layout ({origin}) has no {what}: task registers unavailable");
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
            return Err(format!("the struct layout ({origin}) gives an implausible inactive_task_frame"));
        }
        Ok(Self {
            thread_sp,
            stack: tasks.stack,
            frame: SwitchFrame { size, saved, ret_addr: ret_addr.offset },
            rq_curr: t.member("rq", "curr").map(|m| m.offset),
            rq_idle: t.member("rq", "idle").map(|m| m.offset),
            pcpu_hot_hardirq: t.member("pcpu_hot", "hardirq_stack_ptr").map(|m| m.offset),
            exception_stacks_size: t.size_of("cea_exception_stacks"),
        })
    }
}

/// What the per-CPU data says: each CPU's per-CPU base, current and idle task, and who panicked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cpus {
    offsets: Vec<u64>,
    curr: Vec<Option<u64>>,
    idle: Vec<Option<u64>>,
    panic_cpu: Option<u32>,
}

/// Fails only when the device fails: nothing more can be read then.
fn read_cpus(
    view: &mut View,
    kernel: &Kernel,
    l: &ThreadLayout,
    problems: &mut Vec<String>,
) -> Result<Cpus, String> {
    let sym = |n: &str| kernel.symbols.address(n);
    let mut cpus = Cpus::default();
    let count = match sym("nr_cpu_ids").map(|a| (a, view.read_u32(a))) {
        Some((_, Ok(n))) if (1..=MAX_CPUS).contains(&n) => n,
        Some((_, Ok(n))) => {
            problems.push(format!("nr_cpu_ids reads {n}: not a CPU count; assuming 1 CPU"));
            1
        }
        Some((at, Err(e))) if e.is_device_failure() => return Err(format!("nr_cpu_ids at {at:#x}: {e}")),
        Some((_, Err(e))) => {
            problems.push(format!("nr_cpu_ids: {e}; assuming 1 CPU"));
            1
        }
        None => 1,
    };
    cpus.offsets = match sym("__per_cpu_offset") {
        Some(at) => {
            let mut raw = vec![0u8; count as usize * 8];
            match view.read(at, &mut raw) {
                Ok(()) => raw
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
                Err(e) => {
                    problems
                        .push(format!("__per_cpu_offset at {at:#x}: {e}: which task runs where is unknown"));
                    Vec::new()
                }
            }
        }
        // A kernel built without SMP keeps its one CPU's data in place.
        None => vec![0],
    };
    let n = cpus.offsets.len();
    cpus.curr = vec![None; n];
    cpus.idle = vec![None; n];
    match (sym("runqueues"), l.rq_curr, l.rq_idle) {
        (Some(rq), Some(curr), Some(idle)) => {
            // Each CPU's rq->curr then rq->idle, all in one batch.
            let addrs: Vec<u64> = cpus
                .offsets
                .iter()
                .flat_map(|off| [curr, idle].map(|f| rq.wrapping_add(*off).wrapping_add(f)))
                .collect();
            for (i, r) in view.read_u64s(&addrs).into_iter().enumerate() {
                let (cpu, is_idle) = (i / 2, i % 2 == 1);
                match r {
                    Ok(0) => {}
                    Ok(v) if is_idle => cpus.idle[cpu] = Some(v),
                    Ok(v) => cpus.curr[cpu] = Some(v),
                    Err(e) => problems.push(format!(
                        "cpu{cpu}'s runqueue ({}): {e}",
                        if is_idle { "rq->idle" } else { "rq->curr" }
                    )),
                }
            }
        }
        _ => problems.push(
            "no runqueues symbol or struct rq layout: which task runs on which CPU is unknown".to_string(),
        ),
    }
    if cpus.idle.first() == Some(&None) {
        cpus.idle[0] = kernel.init_task.as_ref().map(|f| f.value);
    }
    if let Some(at) = sym("panic_cpu") {
        match view.read_u32(at) {
            Ok(c) if (c as usize) < n => cpus.panic_cpu = Some(c),
            Ok(_) => {} // PANIC_CPU_INVALID: nobody panicked.
            Err(e) => problems.push(format!("panic_cpu at {at:#x}: {e}")),
        }
    }
    Ok(cpus)
}

/// `user_regs_struct`'s words, in order, as register indexes (`None`: orig_rax). Its first 21
/// words are `struct pt_regs`, which entry code saves on the kernel stack.
const USER_REGS: [Option<usize>; 27] = [
    Some(reg::R15),
    Some(reg::R14),
    Some(reg::R13),
    Some(reg::R12),
    Some(reg::RBP),
    Some(reg::RBX),
    Some(reg::R11),
    Some(reg::R10),
    Some(reg::R9),
    Some(reg::R8),
    Some(reg::RAX),
    Some(reg::RCX),
    Some(reg::RDX),
    Some(reg::RSI),
    Some(reg::RDI),
    None, // orig_rax
    Some(reg::RIP),
    Some(reg::CS),
    Some(reg::EFLAGS),
    Some(reg::RSP),
    Some(reg::SS),
    Some(reg::FS_BASE),
    Some(reg::GS_BASE),
    Some(reg::DS),
    Some(reg::ES),
    Some(reg::FS),
    Some(reg::GS),
];

/// Words of `struct pt_regs` on x86-64.
pub const PT_REGS_WORDS: usize = 21;
/// The word of `pt_regs` where the frame the CPU pushes on an interrupt starts (ip, cs, flags,
/// sp, ss): what an ORC "partial registers" frame points at.
pub const IRET_FRAME_WORD: usize = 16;

/// Registers from `user_regs_struct` (or `pt_regs`) words, starting at word `first` of it:
/// the registers `raw` covers are known, the others not.
pub fn user_regs(raw: &[u8], first: usize) -> Regs {
    let mut regs = Regs::default();
    for (slot, word) in USER_REGS.iter().skip(first).zip(raw.chunks_exact(8)) {
        if let Some(r) = slot {
            regs.0[*r] = Some(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        }
    }
    regs
}

/// Registers from an `elf_prstatus` (x86-64): its pid and its `user_regs_struct`.
pub fn parse_prstatus(desc: &[u8]) -> Option<(i32, Regs)> {
    const PID: usize = 32;
    const REGS: usize = 112;
    let raw = desc.get(REGS..REGS + USER_REGS.len() * 8)?;
    let pid = i32::from_le_bytes(desc.get(PID..PID + 4)?.try_into().ok()?);
    Some((pid, user_regs(raw, 0)))
}

/// The CPU registers the source carries (NT_PRSTATUS notes), by CPU number. A CPU in the kernel
/// has its per-CPU base in gs_base, which names it; otherwise QEMU writes the notes in CPU
/// order, and kdump names the task that ran (`pr_pid`).
fn note_registers(
    notes: &[CoreNote],
    cpus: &Cpus,
    pid_of_cpu: &dyn Fn(u32) -> Option<i32>,
) -> HashMap<u32, Regs> {
    let qemu = notes.iter().any(|n| n.name == "QEMU");
    let mut out = HashMap::new();
    let prstatus =
        notes.iter().filter(|n| n.name == "CORE" && n.n_type == 1).filter_map(|n| parse_prstatus(&n.desc));
    for (index, (pid, regs)) in prstatus.enumerate() {
        let by_base = regs
            .get(reg::GS_BASE)
            .and_then(|gs| cpus.offsets.iter().position(|&o| o == gs && o != 0))
            .map(|c| c as u32);
        let by_pid = (0..cpus.offsets.len() as u32).find(|&c| pid_of_cpu(c) == Some(pid));
        let cpu = by_base.or(if qemu { Some(index as u32) } else { by_pid });
        if let Some(cpu) = cpu.filter(|&c| (c as usize) < cpus.offsets.len()) {
            out.entry(cpu).or_insert(regs);
        }
    }
    out
}

/// The kernel's own crash notes (`crash_notes`, per CPU), filled when it panicked into a loaded
/// crash kernel; zeros otherwise.
fn crash_note_registers(view: &mut View, crash_notes: Option<u64>, cpus: &Cpus) -> HashMap<u32, Regs> {
    const HEADER: usize = 12 + 8; // Elf64_Nhdr, then "CORE\0" padded to 8.
    const DESC: usize = 336; // sizeof(struct elf_prstatus) on x86-64
    let mut out = HashMap::new();
    let Some(at) = crash_notes else { return out };
    let Ok(percpu) = view.read_u64(at) else { return out };
    if percpu == 0 {
        return out;
    }
    // Every CPU's note in one batch.
    let mut notes = vec![[0u8; HEADER + DESC]; cpus.offsets.len()];
    let mut reads: Vec<(u64, &mut [u8])> = cpus
        .offsets
        .iter()
        .zip(notes.iter_mut())
        .map(|(off, n)| (percpu.wrapping_add(*off), &mut n[..]))
        .collect();
    let results = view.read_together(&mut reads);
    for (cpu, (note, r)) in notes.iter().zip(results).enumerate() {
        if r.is_err() {
            continue;
        }
        let word = |i: usize| u32::from_le_bytes([note[i], note[i + 1], note[i + 2], note[i + 3]]);
        let is_prstatus =
            word(0) == 5 && word(4) as usize >= DESC && word(8) == 1 && &note[12..17] == b"CORE\0";
        if let Some((_, regs)) = is_prstatus.then(|| parse_prstatus(&note[HEADER..])).flatten() {
            out.insert(cpu as u32, regs);
        }
    }
    out
}

/// Rebuilds the panicking task's rip and rsp: the return address into `panic` on the stack it
/// ran on is where panic's frame resumes, and the slot above it is the stack pointer there.
/// `panic` keeps a frame pointer (it is variadic), which unwinders need: its rbp points just
/// below the return address of the call into `panic`, found further up the same stack.
///
/// The stacks are tried in order: the task's own (a panic in process context), then its CPU's
/// hardirq stack (sysrq from a keyboard interrupt) and exception stacks (an NMI: QEMU's
/// `inject-nmi` or a BMC's NMI button with `unknown_nmi_panic`).
fn reconstruct_panic(
    view: &mut View,
    kernel: &Kernel,
    stacks: &[(u64, u64, &str)],
) -> Result<(Regs, String), String> {
    let mut looked = Vec::new();
    for &(base, len, what) in stacks {
        let words = read_stack_words(view, base, len);
        if words.iter().all(|w| *w == 0) {
            looked.push(format!("{what} at {base:#x} (unreadable)"));
            continue;
        }
        if let Some(found) = panic_frame_in(view, kernel, base, &words, what) {
            return Ok(found);
        }
        looked.push(format!("{what} at {base:#x}"));
    }
    Err(format!("no return address into panic on {}", looked.join(", ")))
}

/// The words of a stack; an unreadable page (a guard page between exception stacks) reads as
/// zeros.
fn read_stack_words(view: &mut View, base: u64, len: u64) -> Vec<u64> {
    let len = len.min(MAX_SCANNED_STACK);
    let mut bytes = vec![0u8; len as usize];
    // One read for a whole stack (one DMA batch); page by page only when that fails.
    if view.read(base, &mut bytes).is_err() {
        for (i, page) in bytes.chunks_mut(4096).enumerate() {
            let at = base.wrapping_add(i as u64 * 4096);
            if view.read(at, page).is_err() {
                page.fill(0);
            }
        }
    }
    bytes.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default())).collect()
}

/// Most bytes scanned on one stack (the exception stacks with their guard pages are 40 KiB).
const MAX_SCANNED_STACK: u64 = 64 << 10;

fn panic_frame_in(
    view: &mut View,
    kernel: &Kernel,
    stack: u64,
    words: &[u64],
    what: &str,
) -> Option<(Regs, String)> {
    let text = kernel.text.value;
    // Kernel text is in the top 2 GiB, from _text on.
    let in_text = |v: u64| v >= text && v < text.wrapping_add(1 << 30);
    for (i, &value) in words.iter().enumerate() {
        if !in_text(value) {
            continue;
        }
        let Some((name, offset)) = kernel.symbols.lookup(value - 1) else { continue };
        let Some(anchor) = PANIC_ANCHORS.iter().find(|a| **a == name) else { continue };
        if call_target(view, value).is_none() {
            continue;
        }
        let start = value - 1 - offset;
        let slot = stack + (i as u64) * 8;
        let mut regs = Regs::default();
        regs.0[reg::RIP] = Some(value);
        regs.0[reg::RSP] = Some(slot + 8);
        regs.0[reg::CS] = Some(KERNEL_CS);
        regs.0[reg::SS] = Some(KERNEL_DS);
        let mut how = format!("return address into {anchor} at {what} slot {slot:#x}");
        if keeps_frame_pointer(view, start) {
            // The call into the anchor: the first return address above whose call targets it.
            let caller = words
                .iter()
                .enumerate()
                .skip(i + 1)
                .take(256)
                .find(|&(_, &w)| in_text(w) && call_target(view, w) == Some(start));
            if let Some((j, _)) = caller {
                let rbp = stack + (j as u64) * 8 - 8;
                regs.0[reg::RBP] = Some(rbp);
                how.push_str(&format!(", rbp {rbp:#x} below the return address of the call into {anchor}"));
            }
        }
        return Some((regs, how));
    }
    None
}

/// A CPU's hardirq and exception stacks (base, length, what), as far as memory tells them.
fn cpu_stacks(
    view: &mut View,
    kernel: &Kernel,
    l: &ThreadLayout,
    cpus: &Cpus,
    cpu: u32,
) -> Vec<(u64, u64, &'static str)> {
    let Some(&per_cpu) = cpus.offsets.get(cpu as usize) else { return Vec::new() };
    let sym = |n: &str| kernel.symbols.address(n);
    let mut out = Vec::new();
    let hardirq = match (sym("hardirq_stack_ptr"), sym("pcpu_hot"), l.pcpu_hot_hardirq) {
        (Some(var), _, _) => Some(per_cpu.wrapping_add(var)),
        (None, Some(hot), Some(off)) => Some(per_cpu.wrapping_add(hot).wrapping_add(off)),
        _ => None,
    };
    // The pointer is to the top word of the 16 KiB stack.
    if let Some(top) = hardirq.and_then(|at| view.read_u64(at).ok()).filter(|p| *p >= 1 << 63) {
        out.push((
            top.wrapping_add(8).wrapping_sub(IRQ_STACK_SIZE),
            IRQ_STACK_SIZE,
            "its cpu's hardirq stack",
        ));
    }
    let exceptions = sym("cea_exception_stacks").map(|var| per_cpu.wrapping_add(var));
    if let Some(base) = exceptions.and_then(|at| view.read_u64(at).ok()).filter(|p| *p >= 1 << 63) {
        let len = l.exception_stacks_size.unwrap_or(EXCEPTION_STACKS_SIZE);
        out.push((base, len, "its cpu's exception stacks"));
    }
    out
}

/// IRQ_STACK_SIZE on x86-64 (16 KiB since 5.x without KASAN).
const IRQ_STACK_SIZE: u64 = 16 << 10;
/// `struct cea_exception_stacks` without KASAN when BTF does not say: 5 stacks and 5 guard
/// pages of 4 KiB.
const EXCEPTION_STACKS_SIZE: u64 = 40 << 10;

/// The target of the `call rel32` (`e8`, direct calls and retpolined indirect ones) that
/// `ret` returns from, if that is what precedes it.
fn call_target(view: &mut View, ret: u64) -> Option<u64> {
    let mut call = [0u8; 5];
    view.read(ret.checked_sub(5)?, &mut call).ok()?;
    let rel = i32::from_le_bytes([call[1], call[2], call[3], call[4]]);
    (call[0] == 0xe8).then(|| ret.wrapping_add_signed(i64::from(rel)))
}

/// Whether the function at `start` opens with `push %rbp; mov %rsp,%rbp` (after its ftrace and
/// IBT padding of up to 9 bytes).
fn keeps_frame_pointer(view: &mut View, start: u64) -> bool {
    let mut code = [0u8; 13];
    view.read(start, &mut code).is_ok() && code.windows(4).any(|w| w == [0x55, 0x48, 0x89, 0xe5])
}

/// Every task (threads included) and each CPU's idle task, with registers and contexts.
pub fn list(
    view: &mut View,
    kernel: &Kernel,
    tl: &TaskLayout,
    layout: Result<&ThreadLayout, &str>,
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
    // The CPUs first: a device that does not answer ends the list here, before a walk that
    // would wait out its timeout again (gdb gives up on a reply after 2 s).
    let cpus = match l.map(|l| read_cpus(view, kernel, l, &mut out.problems)) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            out.problems.push(e);
            return out;
        }
        None => Cpus::default(),
    };
    let walked = tasks::list(view, tl, init, true);
    out.problems.extend(walked.problems);
    out.truncated = walked.truncated;
    if walked.tasks.is_empty() {
        return out;
    }
    let mut all = walked.tasks;
    // Idle tasks of CPUs 1.. are not on the task list. (Looked up by address: up to 8192 CPUs
    // against up to the budget's tasks.)
    let listed: std::collections::HashSet<u64> = all.iter().map(|t| t.addr).collect();
    let missing: Vec<u64> = cpus.idle.iter().flatten().copied().filter(|a| !listed.contains(a)).collect();
    drop(listed);
    for r in tasks::read_tasks(view, tl, &missing) {
        match r {
            Ok(t) => all.push(t),
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
        fill_registers(view, kernel, l, &cpus, notes, &mut threads, &mut out.problems);
    }
    order(&mut threads);
    out.threads = threads;
    out.index();
    out
}

fn fill_registers(
    view: &mut View,
    kernel: &Kernel,
    l: &ThreadLayout,
    cpus: &Cpus,
    notes: &[CoreNote],
    threads: &mut [Thread],
    problems: &mut Vec<String>,
) {
    // Batches of a bounded size: a long list must not hold every thread's reads at once.
    for batch in threads.chunks_mut(FRAME_BATCH) {
        switch_frames(view, l, batch);
    }
    running_registers(view, kernel, l, cpus, notes, threads, problems);
}

/// Threads whose switch frames are read in one batch (a DMA round trip or two each batch).
const FRAME_BATCH: usize = 4096;

/// Every sleeping thread's registers from its switch frame, and every thread's stack base.
fn switch_frames(view: &mut View, l: &ThreadLayout, threads: &mut [Thread]) {
    // Every task's thread.sp and stack base in one batch, then every switch frame in another.
    let addrs: Vec<u64> = threads
        .iter()
        .flat_map(|t| {
            [Some(l.thread_sp), l.stack].into_iter().flatten().map(|off| t.task.addr.wrapping_add(off))
        })
        .collect();
    let mut words = view.read_u64s(&addrs).into_iter();
    let mut sp = vec![None; threads.len()];
    let mut stack = vec![None; threads.len()];
    for (i, t) in threads.iter_mut().enumerate() {
        let fields = [Some(&mut sp[i]), l.stack.map(|_| &mut stack[i])];
        for slot in fields.into_iter().flatten() {
            match words.next() {
                Some(Ok(v)) => *slot = Some(v),
                Some(Err(e)) => t.origin = RegsOrigin::Unavailable(format!("task {:#x}: {e}", t.task.addr)),
                None => {}
            }
        }
        t.stack = stack[i];
    }
    // Sleeping tasks: the frame at thread.sp, when it lies in the task's stack.
    let frame = &l.frame;
    let mut frames: Vec<(usize, u64, Vec<u8>)> = Vec::new();
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
        frames.push((i, sp, vec![0u8; frame.size as usize]));
    }
    let mut reads: Vec<(u64, &mut [u8])> = frames.iter_mut().map(|(_, sp, b)| (*sp, &mut b[..])).collect();
    let results = view.read_together(&mut reads);
    for ((i, sp, bytes), r) in frames.iter().zip(results) {
        let t = &mut threads[*i];
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
            regs.0[r] = word(off);
        }
        regs.0[reg::RIP] = word(frame.ret_addr);
        regs.0[reg::RSP] = Some(sp.wrapping_add(frame.size));
        regs.0[reg::CS] = Some(KERNEL_CS);
        regs.0[reg::SS] = Some(KERNEL_DS);
        t.regs = regs;
        t.origin = RegsOrigin::SwitchFrame;
    }
}

/// Running tasks: the CPUs' registers, if anything kept them.
fn running_registers(
    view: &mut View,
    kernel: &Kernel,
    l: &ThreadLayout,
    cpus: &Cpus,
    notes: &[CoreNote],
    threads: &mut [Thread],
    problems: &mut Vec<String>,
) {
    let running: Vec<(usize, u32)> =
        threads.iter().enumerate().filter_map(|(i, t)| Some((i, t.running_on?))).collect();
    if running.is_empty() {
        return;
    }
    let pid_of_cpu = |c: u32| running.iter().find(|(_, cpu)| *cpu == c).map(|(i, _)| threads[*i].task.pid);
    let from_notes = note_registers(notes, cpus, &pid_of_cpu);
    let from_crash = if from_notes.is_empty() {
        crash_note_registers(view, kernel.symbols.address("crash_notes"), cpus)
    } else {
        HashMap::new()
    };
    for (i, cpu) in running {
        let t = &mut threads[i];
        if let Some(regs) = from_notes.get(&cpu) {
            t.regs = *regs;
            t.origin = RegsOrigin::Cpu { cpu, from: "the core's NT_PRSTATUS note" };
        } else if let Some(regs) = from_crash.get(&cpu) {
            t.regs = *regs;
            t.origin = RegsOrigin::Cpu { cpu, from: "the kernel's crash note" };
        } else if t.panicking {
            let mut stacks: Vec<(u64, u64, &str)> =
                t.stack.map(|s| (s, THREAD_SIZE, "its kernel stack")).into_iter().collect();
            stacks.extend(cpu_stacks(view, kernel, l, cpus, cpu));
            t.origin = if stacks.is_empty() {
                RegsOrigin::Unavailable("its kernel stack is unknown".to_string())
            } else {
                match reconstruct_panic(view, kernel, &stacks) {
                    Ok((regs, how)) => {
                        t.regs = regs;
                        RegsOrigin::Reconstructed(how)
                    }
                    Err(why) => RegsOrigin::Unavailable(why),
                }
            };
        } else {
            t.origin = RegsOrigin::Unavailable(format!(
                "it was running on cpu{cpu}: its registers were in the CPU, and this source did not keep them"
            ));
        }
    }
    if threads.iter().any(|t| t.panicking && matches!(t.origin, RegsOrigin::Unavailable(_))) {
        problems.push("the panicking task's registers are unavailable".to_string());
    }
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
mod tests {
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
        regs.0[reg::RIP] = pc;
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
}
