//! The walk itself, as `arch/x86/kernel/unwind_orc.c` does it: one ORC entry per frame, the
//! caller's registers from it, entry code's saved registers, and bounded stack switches.

use super::modules::Modules;
use super::orc::{FrameKind, OrcEntry, orc_reg};
use super::*;
use crate::linux::readahead::ReadAhead;
use crate::linux::threads::{IRET_FRAME_WORD, PT_REGS_WORDS, Reg, THREAD_SIZE, user_regs};

/// The words of a backtrace come through a [`ReadAhead`] holding the task's stack, read whole
/// once; anything else falls through to memory.
pub(super) type StackWords<'m> = ReadAhead<'m>;

/// The word at `addr`, naming `what` if it cannot be read.
pub(super) fn word(words: &mut StackWords, addr: u64, what: &str) -> Result<u64, UnwindError> {
    words.read_u64(addr).map_err(|e| UnwindError::read(format!("{what} at {addr:#x}"), addr, e))
}

/// `n` words at `addr`.
pub(super) fn words_at(
    words: &mut StackWords,
    addr: u64,
    n: usize,
    what: &str,
) -> Result<Vec<u8>, UnwindError> {
    let mut buf = vec![0u8; n * 8];
    words.read(addr, &mut buf).map_err(|e| UnwindError::read(format!("{what} at {addr:#x}"), addr, e))?;
    Ok(buf)
}

/// What the walk knows at one frame, as `unwind_orc.c`'s state.
pub(super) struct State {
    pub(super) ip: u64,
    pub(super) sp: u64,
    pub(super) bp: Option<u64>,
    /// The pc is exact, not a return address.
    pub(super) signal: bool,
    /// The registers saved at this frame (pt_regs, or the CPU's), and whether they are whole.
    pub(super) regs: Option<Regs>,
    pub(super) full: bool,
    /// A whole set from the frame before a partial one.
    pub(super) prev_regs: Option<Regs>,
}

impl State {
    pub(super) fn get(&self, r: Reg) -> Option<u64> {
        match (&self.regs, self.full, &self.prev_regs) {
            (Some(regs), true, _) => regs.get(r),
            (Some(_), false, Some(prev)) => prev.get(r),
            _ => None,
        }
    }
}

/// Walks the stack from `start`, reading kernel memory through `view`, naming frames with
/// `symbols`.
pub fn unwind(view: &mut dyn Memory, symbols: &Kallsyms, orc: &Orc, start: &Start) -> Backtrace {
    let mut bt = Backtrace::default();
    let regs = start.regs;
    let (Some(ip), Some(sp)) = (regs.pc(), regs.get(reg::RSP)) else {
        bt.stopped = Some(UnwindError::Stop("no rip and rsp to start from".to_string()));
        return bt;
    };
    if regs.get(reg::CS).is_some_and(|cs| cs & 3 != 0) {
        bt.frames.push(Frame::Entry { ip, sp, user: true });
        bt.stopped = Some(UnwindError::Stop("the CPU was in user mode: no kernel stack to walk".to_string()));
        return bt;
    }
    if sp >> 63 == 0 {
        bt.stopped = Some(UnwindError::Stop(format!("the stack pointer {sp:#x} is not a kernel address")));
        return bt;
    }
    // The whole kernel stack in one read: one round trip over DMA for most backtraces.
    let mut words = ReadAhead::new(view);
    if let Some(base) = start.stack {
        // Unreadable as a whole: every word is then read alone (and fails alone).
        let _ = words.fetch(base, THREAD_SIZE as usize);
    }
    let mut modules = Modules { list: None };
    let mut st = State {
        ip,
        sp,
        bp: regs.get(reg::RBP),
        signal: start.signal,
        regs: start.full.then_some(regs),
        full: start.full,
        prev_regs: None,
    };
    let mut switches = 0;
    for _ in 0..MAX_FRAMES {
        let lookup = if st.signal { st.ip } else { st.ip.wrapping_sub(1) };
        let name = name_of(&mut words, symbols, orc, &mut modules, st.ip, lookup);
        bt.frames.push(Frame::Function { ip: st.ip, sp: st.sp, name });
        let prev_sp = st.sp;
        let stop = match step(&mut words, orc, &mut modules, &mut st, lookup) {
            Ok(Step::Caller) => check_sp(prev_sp, st.sp, start.stack, &mut switches).err(),
            Ok(Step::Entry { user }) => {
                bt.frames.push(Frame::Entry { ip: st.ip, sp: st.sp, user });
                if user {
                    return bt;
                }
                check_sp(prev_sp, st.sp, start.stack, &mut switches).err()
            }
            Ok(Step::End) => return bt,
            Err(why) => Some(why),
        };
        if stop.is_some() {
            bt.stopped = stop;
            return bt;
        }
    }
    bt.stopped = Some(UnwindError::Stop(format!("after {MAX_FRAMES} frames")));
    bt
}

/// The caller of one frame (`ip`, `sp`, `bp`; `exact` when `ip` is where the CPU was, not a
/// return address): its registers, all of them when entry code saved them (pt_regs), and
/// whether it is code that an interrupt or exception entry interrupted. For debuggers that
/// unwind on their own and need the kernel's tables where their own information ends (gdb at
/// interrupt entries and stack switches, which DWARF does not describe).
pub fn unwind_one(
    view: &mut dyn Memory,
    orc: &Orc,
    ip: u64,
    sp: u64,
    bp: Option<u64>,
    exact: bool,
) -> Result<(Regs, bool), UnwindError> {
    let mut words = ReadAhead::new(view);
    let mut modules = Modules { list: None };
    let mut st = State { ip, sp, bp, signal: exact, regs: None, full: false, prev_regs: None };
    let lookup = if exact { ip } else { ip.wrapping_sub(1) };
    let found = step(&mut words, orc, &mut modules, &mut st, lookup)?;
    let mut regs = match (&st.regs, &found) {
        (Some(saved), Step::Entry { .. }) => *saved,
        _ => Regs::default(),
    };
    regs[reg::RIP] = Some(st.ip);
    regs[reg::RSP] = Some(st.sp);
    if regs.get(reg::RBP).is_none() {
        regs[reg::RBP] = st.bp;
    }
    match found {
        Step::Caller => Ok((regs, false)),
        Step::Entry { .. } => Ok((regs, true)),
        Step::End => Err(UnwindError::Stop(format!("{ip:#x} is the last frame of its stack"))),
    }
}

/// What one step found above a frame.
pub(super) enum Step {
    /// The caller.
    Caller,
    /// Registers saved by entry code, and whether they are user mode's (the walk ends there).
    Entry { user: bool },
    /// The end of the stack.
    End,
}

/// The caller's stack pointer may only go up on one stack; it may go down when an interrupt
/// or exception stack returns to the stack it interrupted, a few times, never back from the
/// task's own stack.
pub(super) fn check_sp(
    prev: u64,
    sp: u64,
    stack: Option<u64>,
    switches: &mut u32,
) -> Result<(), UnwindError> {
    let top = |b: u64| b.wrapping_add(THREAD_SIZE);
    let on_task_stack = |sp: u64| stack.is_some_and(|b| sp >= b && sp <= top(b));
    if sp >> 63 == 0 {
        return Err(UnwindError::Stop(format!("stack pointer {sp:#x} is not a kernel address")));
    }
    if on_task_stack(prev) && !on_task_stack(sp) {
        let b = stack.unwrap_or_default();
        return Err(UnwindError::Stop(format!(
            "stack pointer {sp:#x} left the task's stack ({b:#x}..{:#x})",
            top(b)
        )));
    }
    if sp <= prev {
        if on_task_stack(prev) || *switches >= MAX_STACK_SWITCHES {
            return Err(UnwindError::Stop(format!(
                "stack pointer went from {prev:#x} down to {sp:#x}: a loop or bad unwind data"
            )));
        }
        *switches += 1;
    }
    Ok(())
}

/// The ORC entry for `lookup` (the frame's pc, less one for a return address), from vmlinux's
/// table or its module's, and the address it is for.
pub(super) fn entry_for(
    words: &mut StackWords,
    orc: &Orc,
    modules: &mut Modules,
    ip: u64,
    lookup: u64,
) -> Result<(u64, OrcEntry), UnwindError> {
    if orc.in_vmlinux_text(lookup) {
        return orc
            .vmlinux
            .find(&orc.layout, lookup)
            .ok_or_else(|| UnwindError::Stop(format!("no ORC entry for {ip:#x} in vmlinux")));
    }
    if !MODULE_SPACE.contains(&lookup) {
        return Err(UnwindError::Stop(format!("{ip:#x} is not kernel text")));
    }
    let module = match modules.find(&mut *words, orc, lookup) {
        Ok(Some(m)) => m,
        Ok(None) => {
            return Err(UnwindError::Stop(format!("{ip:#x} is in no loaded module's text (nor vmlinux's)")));
        }
        Err(why) => return Err(UnwindError::NoModules { ip, source: Box::new(why) }),
    };
    let name = module.name().to_string();
    let table = module
        .table(&mut *words, &orc.layout)
        .map_err(|why| UnwindError::NoModuleTable { module: name.clone(), source: Box::new(why) })?;
    table
        .find(&orc.layout, lookup)
        .ok_or_else(|| UnwindError::Stop(format!("no ORC entry for {ip:#x} in module {name}")))
}

/// One step of `unwind_next_frame`: the caller's ip, sp and bp from the entry for `lookup`.
pub(super) fn step(
    words: &mut StackWords,
    orc: &Orc,
    modules: &mut Modules,
    st: &mut State,
    lookup: u64,
) -> Result<Step, UnwindError> {
    let (at, e) = entry_for(words, orc, modules, st.ip, lookup)?;
    let here = format!("the ORC entry at {at:#x} for {:#x}", st.ip);
    match e.kind {
        FrameKind::EndOfStack => return Ok(Step::End),
        FrameKind::Undefined => {
            return Err(UnwindError::Stop(format!("{here} says the stack cannot be unwound there")));
        }
        FrameKind::Unknown(k) => {
            return Err(UnwindError::Stop(format!(
                "{here} has type {k}, unknown to struct orc_entry {}",
                orc.layout.describe()
            )));
        }
        FrameKind::Call | FrameKind::Regs | FrameKind::RegsPartial => {}
    }
    let bp = st.bp.ok_or_else(|| UnwindError::Stop(format!("{here} needs rbp, which is unknown")));
    let saved = |r: Reg, name: &str| {
        st.get(r).ok_or_else(|| UnwindError::Stop(format!("{here} needs {name}, which nothing saved")))
    };
    let off = i64::from(e.sp_offset);
    let cfa = match e.sp_reg {
        orc_reg::SP => st.sp.wrapping_add_signed(off),
        orc_reg::BP => bp.clone()?.wrapping_add_signed(off),
        orc_reg::SP_INDIRECT => {
            word(words, st.sp, "the stack pointer a stack switch saved")?.wrapping_add_signed(off)
        }
        orc_reg::BP_INDIRECT => {
            word(words, bp.clone()?.wrapping_add_signed(off), "an indirect stack pointer")?
        }
        orc_reg::R10 => saved(reg::R10, "r10")?,
        orc_reg::R13 => saved(reg::R13, "r13")?,
        orc_reg::DI => saved(reg::RDI, "rdi")?,
        orc_reg::DX => saved(reg::RDX, "rdx")?,
        r => return Err(UnwindError::Stop(format!("{here} has an unknown stack base register {r}"))),
    };
    let found = match e.kind {
        FrameKind::Call => {
            st.ip = word(words, cfa.wrapping_sub(8), "the return address")?;
            st.sp = cfa;
            st.regs = None;
            st.prev_regs = None;
            Step::Caller
        }
        FrameKind::Regs => {
            let raw = words_at(words, cfa, PT_REGS_WORDS, "the registers entry code saved (pt_regs)")?;
            let regs = user_regs(&raw, 0);
            st.regs = Some(regs);
            st.full = true;
            st.prev_regs = None;
            took_regs(st, &regs)
        }
        _ => {
            let raw = words_at(words, cfa, PT_REGS_WORDS - IRET_FRAME_WORD, "the interrupt frame")?;
            let regs = user_regs(&raw, IRET_FRAME_WORD);
            if st.full {
                st.prev_regs = st.regs;
            }
            st.regs = Some(regs);
            st.full = false;
            took_regs(st, &regs)
        }
    };
    st.signal = e.signal;
    if let Step::Entry { user: true } = found {
        return Ok(found);
    }
    let boff = i64::from(e.bp_offset);
    match e.bp_reg {
        orc_reg::UNDEFINED => {
            if let Some(v) = st.get(reg::RBP) {
                st.bp = Some(v);
            }
        }
        orc_reg::PREV_SP => st.bp = Some(word(words, cfa.wrapping_add_signed(boff), "the saved rbp")?),
        orc_reg::BP => st.bp = Some(word(words, bp?.wrapping_add_signed(boff), "the saved rbp")?),
        r => return Err(UnwindError::Stop(format!("{here} has an unknown frame-pointer base register {r}"))),
    }
    Ok(found)
}

/// Moves to the code saved registers interrupted.
pub(super) fn took_regs(st: &mut State, regs: &Regs) -> Step {
    st.ip = regs.pc().unwrap_or(0);
    st.sp = regs.get(reg::RSP).unwrap_or(0);
    Step::Entry { user: regs.get(reg::CS).unwrap_or(0) & 3 != 0 }
}

/// `function+offset/size` for a pc, as the kernel prints `%pB`: a return address is named by
/// the call before it (`lookup` is then `ip - 1`), the offset is the pc's.
pub(super) fn name_of(
    view: &mut dyn Memory,
    symbols: &Kallsyms,
    orc: &Orc,
    modules: &mut Modules,
    ip: u64,
    lookup: u64,
) -> String {
    let adjust = ip.wrapping_sub(lookup);
    if orc.in_vmlinux_text(lookup)
        && let Some((name, off, size)) = symbols.lookup_sized(lookup)
    {
        return match size {
            Some(size) => format!("{name}+{:#x}/{size:#x}", off + adjust),
            None => format!("{name}+{:#x}", off + adjust),
        };
    }
    let layout = orc.modules.as_ref().ok().map(|(_, l)| l);
    if MODULE_SPACE.contains(&lookup)
        && let Ok(Some(m)) = modules.find(view, orc, lookup)
    {
        return match layout.and_then(|l| m.symbol(view, l, lookup)) {
            Some((name, start, size)) if size == 0 || lookup - start < size => {
                format!("{name}+{:#x}/{size:#x} [{}]", lookup - start + adjust, m.name())
            }
            _ => format!("[{}]+{:#x}", m.name(), lookup - m.module.text.0 + adjust),
        };
    }
    "??".to_string()
}
