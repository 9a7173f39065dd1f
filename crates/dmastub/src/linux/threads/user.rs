//! A task's user-mode registers: the `struct pt_regs` entry code saved at the top of its kernel
//! stack when it last entered the kernel from user space (`task_pt_regs(task)`), with the fs/gs
//! bases and selectors the scheduler saved in `task->thread`.
//!
//! Only user tasks have one: a kernel thread never ran in user mode, and the top of its stack
//! holds nothing of the kind. What is read is checked against what a user entry frame must be
//! (user code and stack selectors, user addresses), and a frame that is not one is refused,
//! never shown as registers.

use super::regs::{PT_REGS_WORDS, user_regs};
use super::{THREAD_SIZE, Thread, ThreadLayout, reg};
use crate::linux::commands::Linux;
use crate::linux::error::LinuxError;
use crate::linux::{Memory, Regs, TypeInfo, View};
use crate::mmu::AddressSpace;

/// `__USER_CS`, `__USER32_CS` and `__USER_DS` on x86-64.
pub const USER_CS: u64 = 0x33;
/// `__USER32_CS`: a 32-bit (compat) task's code selector.
pub const USER32_CS: u64 = 0x23;
/// `__USER_DS`: the user stack selector.
pub const USER_DS: u64 = 0x2b;
/// The first address above user space under 4-level paging (5-level: `1 << 56`).
const USER_TOP_4: u64 = 0x0000_8000_0000_0000;
const USER_TOP_5: u64 = 0x0100_0000_0000_0000;
/// `TOP_OF_KERNEL_STACK_PADDING`: 0 on x86-64 up to 6.8; FRED kernels (6.9 on, `CONFIG_X86_FRED`)
/// leave 16 bytes. Tried in this order; the first that holds a user entry frame is taken.
const PADDINGS: [u64; 2] = [0, 16];

/// Where the user-mode state in `task->thread` is (each may be missing from a layout).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserLayout {
    /// `thread.fsbase`, `thread.gsbase`: the bases saved at the last switch.
    fsbase: Option<u64>,
    gsbase: Option<u64>,
    /// `thread.fsindex`, `thread.gsindex`, `thread.ds`, `thread.es` (`unsigned short`).
    fsindex: Option<u64>,
    gsindex: Option<u64>,
    ds: Option<u64>,
    es: Option<u64>,
    /// `sizeof(struct pt_regs)`: 168 on x86-64.
    pt_regs_size: Option<u64>,
    /// Where the FPU state is: `thread.fpu.fpstate` (a pointer, 5.16 on) with `fpstate.size`
    /// and `fpstate.regs`, or `thread.fpu.state` (inline, before 5.16).
    fpstate_ptr: Option<u64>,
    fpstate_size: Option<u64>,
    fpstate_regs: Option<u64>,
    fpu_inline: Option<u64>,
}

impl UserLayout {
    /// The offsets in `task_struct` from a struct layout.
    pub fn from_types(t: &dyn TypeInfo) -> Self {
        let thread = t.member("task_struct", "thread").map(|m| m.offset);
        let field = |name: &str| {
            t.member("task_struct", &format!("thread.{name}"))
                .map(|m| m.offset)
                .or_else(|| Some(thread? + t.member("thread_struct", name)?.offset))
        };
        Self {
            fsbase: field("fsbase"),
            gsbase: field("gsbase"),
            fsindex: field("fsindex"),
            gsindex: field("gsindex"),
            ds: field("ds"),
            es: field("es"),
            pt_regs_size: t.size_of("pt_regs"),
            fpstate_ptr: field("fpu.fpstate"),
            fpstate_size: t.member("fpstate", "size").map(|m| m.offset),
            fpstate_regs: t.member("fpstate", "regs").map(|m| m.offset),
            fpu_inline: field("fpu.state"),
        }
    }
}

/// A task's user-mode registers and where they were read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRegs {
    /// The registers: the general ones, rip, eflags, cs, ss from `pt_regs`; fs/gs bases and
    /// selectors, ds and es from `task->thread` when the layout has them.
    pub regs: Regs,
    /// The kernel-virtual address of the `pt_regs` read.
    pub frame: u64,
    /// The FPU/SSE state as NT_PRFPREG holds it (`user_i387_struct`: the 512-byte FXSAVE
    /// layout), when it was saved in memory (a task that is not running).
    pub fpregs: Option<Vec<u8>>,
    /// What is less sure than the rest, one line each (a running task's fs base, which
    /// `task->thread` only holds as of its last switch).
    pub notes: Vec<String>,
}

/// A thread of a process and its user-mode registers, or why they are unavailable.
pub type ProcessThread = (Thread, Result<UserRegs, UserRegsError>);

/// Why a task has no user-mode registers.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserRegsError {
    /// A kernel thread never entered the kernel from user mode.
    #[error("pid {pid} ({comm}) is a kernel thread: it has no user-mode registers")]
    KernelThread {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
    },
    /// The base of its kernel stack (`task->stack`) is unknown.
    #[error("pid {pid} ({comm}): the base of its kernel stack is unknown{why}")]
    NoStack {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
        /// Why (the layout has no `task_struct.stack`, or its read failed).
        why: String,
    },
    /// The `pt_regs` could not be read.
    #[error("pid {pid} ({comm}): its user entry frame (pt_regs) at {frame:#x} could not be read: {error}")]
    Read {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
        /// Where.
        frame: u64,
        /// What failed.
        error: String,
    },
    /// What is there is not a user entry frame.
    #[error(
        "pid {pid} ({comm}): the top of its kernel stack at {frame:#x} does not hold a user entry frame: {why}"
    )]
    NotUserFrame {
        /// Its pid.
        pid: i32,
        /// Its name.
        comm: String,
        /// Where the frame was looked for.
        frame: u64,
        /// What is wrong with it.
        why: String,
    },
}

/// Why `regs` (from a `pt_regs`) is not a user entry frame, or `None` when it is one.
pub fn not_user_frame(regs: &Regs, la57: bool) -> Option<String> {
    let top = if la57 { USER_TOP_5 } else { USER_TOP_4 };
    let get = |r| regs.get(r).unwrap_or(u64::MAX);
    let (cs, ss, rip, rsp) = (get(reg::CS), get(reg::SS), get(reg::RIP), get(reg::RSP));
    if cs != USER_CS && cs != USER32_CS {
        return Some(format!("cs {cs:#x} is not a user code selector ({USER_CS:#x} or {USER32_CS:#x})"));
    }
    if ss != USER_DS {
        return Some(format!("ss {ss:#x} is not the user stack selector {USER_DS:#x}"));
    }
    if rip == 0 || rip >= top {
        return Some(format!("rip {rip:#x} is not a user address"));
    }
    if rsp == 0 || rsp >= top {
        return Some(format!("rsp {rsp:#x} is not a user address"));
    }
    if get(reg::EFLAGS) & 0x2 == 0 {
        return Some(format!("eflags {:#x} lacks bit 1, which is always set", get(reg::EFLAGS)));
    }
    None
}

/// The user-mode registers of `thread`, read under `view` (the kernel's page tables).
pub fn read_user_regs(
    view: &mut View,
    l: &ThreadLayout,
    thread: &Thread,
    la57: bool,
) -> Result<UserRegs, UserRegsError> {
    let t = &thread.task;
    let (pid, comm) = (t.pid, t.comm.clone());
    if t.is_kernel_thread() || thread.idle_of.is_some() {
        return Err(UserRegsError::KernelThread { pid, comm });
    }
    let Some(stack) = thread.stack else {
        let why = match l.stack {
            None => ": the struct layout has no task_struct.stack".to_string(),
            Some(_) => " (task->stack could not be read)".to_string(),
        };
        return Err(UserRegsError::NoStack { pid, comm, why });
    };
    let size = l.user.pt_regs_size.unwrap_or(PT_REGS_WORDS as u64 * 8);
    if size != PT_REGS_WORDS as u64 * 8 {
        // Another pt_regs would put the words elsewhere: refuse rather than misread.
        let frame = stack.wrapping_add(THREAD_SIZE).wrapping_sub(size);
        return Err(UserRegsError::NotUserFrame {
            pid,
            comm,
            frame,
            why: format!("struct pt_regs is {size} bytes in this kernel, not x86-64's {}", PT_REGS_WORDS * 8),
        });
    }
    // Both candidate frames in one read: the top 16 + 168 bytes of the stack.
    let span = size + PADDINGS[1];
    let lo = stack.wrapping_add(THREAD_SIZE).wrapping_sub(span);
    let mut top = vec![0u8; span as usize];
    if let Err(e) = view.read(lo, &mut top) {
        let frame = stack.wrapping_add(THREAD_SIZE).wrapping_sub(size);
        return Err(UserRegsError::Read { pid, comm, frame, error: e.to_string() });
    }
    let mut first_why = None;
    let mut found = None;
    for pad in PADDINGS {
        let at = (span - size - pad) as usize;
        let regs = user_regs(&top[at..at + size as usize], 0);
        match not_user_frame(&regs, la57) {
            None => {
                found = Some((regs, lo.wrapping_add(at as u64)));
                break;
            }
            Some(why) => {
                first_why.get_or_insert((why, lo.wrapping_add(at as u64)));
            }
        }
    }
    let Some((mut regs, frame)) = found else {
        let (why, frame) = first_why.unwrap_or_default();
        return Err(UserRegsError::NotUserFrame { pid, comm, frame, why });
    };
    let mut notes = Vec::new();
    // The fs/gs state the scheduler saved in task->thread: read together (one round trip).
    let u = &l.user;
    let fields = [
        (reg::FS_BASE, u.fsbase, 8u64),
        (reg::GS_BASE, u.gsbase, 8),
        (reg::FS, u.fsindex, 2),
        (reg::GS, u.gsindex, 2),
        (reg::DS, u.ds, 2),
        (reg::ES, u.es, 2),
    ];
    let addrs: Vec<(usize, u64)> = fields
        .iter()
        .enumerate()
        .filter_map(|(i, (_, off, _))| Some((i, t.addr.wrapping_add((*off)?))))
        .collect();
    let words = view.read_u64s(&addrs.iter().map(|(_, a)| *a).collect::<Vec<_>>());
    for ((i, addr), w) in addrs.iter().zip(words) {
        let (r, _, size) = fields[*i];
        match w {
            Ok(v) => regs[r] = Some(if size == 8 { v } else { v & 0xffff }),
            Err(e) => notes.push(format!("{r:?} unavailable: task->thread at {addr:#x}: {e}")),
        }
    }
    let mut fpregs = None;
    if thread.running_on.is_some() {
        // task->thread holds fs/gs as of the task's last switch; a running task may have
        // changed them since (arch_prctl, wrfsbase). Its FPU registers were in the CPU.
        notes.push("it was running: its fs/gs bases are those saved when it last switched in".to_string());
        notes.push("it was running: its FPU registers were in the CPU, not in memory".to_string());
    } else {
        match read_fpregs(view, u, t.addr) {
            Ok(fp) => fpregs = Some(fp),
            Err(why) => notes.push(format!("FPU registers unavailable: {why}")),
        }
    }
    Ok(UserRegs { regs, frame, fpregs, notes })
}

/// Size of the FXSAVE area (`user_i387_struct`), and of the XSAVE header after it.
const FXSAVE_SIZE: usize = 512;
const XSAVE_HEADER: usize = 64;
/// `fpstate.size` and the union beyond it are bounded: the largest XSAVE area is a few KiB.
const MAX_FPSTATE: u64 = 64 * 1024;

/// The task's saved FPU state as NT_PRFPREG holds it. With XSAVE, components in their init
/// state (their XSTATE_BV bit clear) may hold stale bytes in memory: they are given their init
/// values, as the kernel's own ptrace and core code does (x87: control word 0x37f, the rest 0;
/// SSE: the XMM registers 0; MXCSR is always saved).
fn read_fpregs(view: &mut View, u: &UserLayout, task: u64) -> Result<Vec<u8>, String> {
    let (area, size) = match (u.fpstate_ptr, u.fpstate_regs, u.fpu_inline) {
        (Some(ptr), Some(regs), _) => {
            let at = task.wrapping_add(ptr);
            let fpstate =
                view.read_u64(at).map_err(|e| format!("task->thread.fpu.fpstate at {at:#x}: {e}"))?;
            let size = match u.fpstate_size {
                Some(off) => u64::from(
                    view.read_u32(fpstate.wrapping_add(off))
                        .map_err(|e| format!("fpstate->size at {:#x}: {e}", fpstate.wrapping_add(off)))?,
                ),
                None => (FXSAVE_SIZE + XSAVE_HEADER) as u64,
            };
            (fpstate.wrapping_add(regs), size)
        }
        (_, _, Some(inline)) => (task.wrapping_add(inline), (FXSAVE_SIZE + XSAVE_HEADER) as u64),
        _ => return Err("the struct layout has no task_struct.thread.fpu.fpstate or .state".to_string()),
    };
    if size < FXSAVE_SIZE as u64 || size > MAX_FPSTATE {
        return Err(format!("fpstate->size {size} is not a plausible FPU state size"));
    }
    let xsave = size >= (FXSAVE_SIZE + XSAVE_HEADER) as u64;
    let mut b = vec![0u8; if xsave { FXSAVE_SIZE + 8 } else { FXSAVE_SIZE }];
    view.read(area, &mut b).map_err(|e| format!("the FPU state at {area:#x}: {e}"))?;
    if xsave {
        let bv = u64::from_le_bytes(b[FXSAVE_SIZE..].try_into().unwrap_or_default());
        if bv & 1 == 0 {
            // x87 in its init state: everything before MXCSR (fcw..fdp) and the ST registers.
            b[..24].fill(0);
            b[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
            b[32..160].fill(0);
        }
        if bv & 2 == 0 {
            b[160..416].fill(0);
        }
        b.truncate(FXSAVE_SIZE);
    }
    Ok(b)
}

impl Linux {
    /// The user-mode registers of `thread`: the `pt_regs` at the top of its kernel stack,
    /// checked to be a user entry frame.
    pub fn user_regs(&self, space: &mut AddressSpace, thread: &Thread) -> Result<UserRegs, LinuxError> {
        let l = self.thread_layout.as_ref().map_err(|e| LinuxError::NoTasks(e.to_string()))?;
        let la57 = space.paging().levels() == 5;
        let mut view = View::new(space, self.kernel.cr3.value);
        read_user_regs(&mut view, l, thread, la57).map_err(LinuxError::from)
    }

    /// The threads of process `pid` (the thread group `pid` belongs to), its leader first, each
    /// with its user-mode registers or why they are unavailable. A kernel thread is refused.
    pub fn process_threads(
        &self,
        space: &mut AddressSpace,
        pid: i32,
    ) -> Result<Vec<ProcessThread>, LinuxError> {
        let list = self.threads(space)?;
        let asked = list.by_pid(u64::try_from(pid).unwrap_or(u64::MAX))?;
        if asked.task.is_kernel_thread() || asked.idle_of.is_some() {
            return Err(LinuxError::KernelThread { pid, comm: asked.task.comm.clone() });
        }
        let tgid = asked.task.tgid;
        let mut group: Vec<Thread> =
            list.threads.iter().filter(|t| t.task.tgid == tgid && t.idle_of.is_none()).cloned().collect();
        // The leader first (gdb's first thread of a core), then by thread id.
        group.sort_by_key(|t| (t.task.pid != tgid, t.task.pid));
        let l = self.thread_layout.as_ref().map_err(|e| LinuxError::NoTasks(e.to_string()))?;
        let la57 = space.paging().levels() == 5;
        let mut view = View::new(space, self.kernel.cr3.value);
        Ok(group
            .into_iter()
            .map(|t| {
                let r = read_user_regs(&mut view, l, &t, la57);
                (t, r)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(cs: u64, ss: u64, rip: u64, rsp: u64) -> Regs {
        let mut r = Regs::default();
        r[reg::CS] = Some(cs);
        r[reg::SS] = Some(ss);
        r[reg::RIP] = Some(rip);
        r[reg::RSP] = Some(rsp);
        r[reg::EFLAGS] = Some(0x246);
        r
    }

    #[test]
    fn user_entry_frames_are_told_from_others() {
        assert_eq!(not_user_frame(&frame(0x33, 0x2b, 0x401000, 0x7ffc_0000_1000), false), None);
        assert_eq!(not_user_frame(&frame(0x23, 0x2b, 0x8048000, 0xffff_d000), false), None);
        let why = not_user_frame(&frame(0x10, 0x18, 0xffff_ffff_8100_0000, 0xffff_c900_0000_0000), false);
        assert!(why.unwrap().contains("cs 0x10 is not a user code selector"));
        let why = not_user_frame(&frame(0x33, 0x0, 0x401000, 0x7ffc_0000_1000), false);
        assert!(why.unwrap().contains("ss 0x0"));
        let why = not_user_frame(&frame(0x33, 0x2b, 0xffff_8000_0000_0000, 0x7ffc_0000_1000), false);
        assert!(why.unwrap().contains("rip"));
        // Above 2^47 is user space only under 5-level paging.
        let high = frame(0x33, 0x2b, 0x401000, 0x00ff_ff00_0000_0000);
        assert!(not_user_frame(&high, false).is_some());
        assert_eq!(not_user_frame(&high, true), None);
        let mut zeros = Regs::default();
        for r in super::super::Reg::ALL {
            zeros[r] = Some(0);
        }
        assert!(not_user_frame(&zeros, false).is_some(), "an untouched stack top is no frame");
    }
}
